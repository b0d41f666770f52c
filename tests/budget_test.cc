// Memory budgets (core/budget.h): shares, the reserve for small holders, waiting in order,
// wake-ups across loops, cancelling a wait.
#include "core/budget.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

constexpr uint64_t K = 1024, M = 1024 * 1024;

struct Wait final : BudgetWaiter {
  explicit Wait(uint64_t n) { bytes = n; }
  int granted_count = 0;
  void granted() override { ++granted_count; }
};

TEST(Budget, ASmallHolderMayUseTheReserveALargeOneMayNot) {
  Budget b(10 * M, 2 * M, 256 * K);
  EXPECT_TRUE(b.try_take(8 * M, 0));          // up to limit - reserve
  EXPECT_FALSE(b.try_take(1 * M, 1 * M));     // a large holder stops short of the reserve
  EXPECT_TRUE(b.try_take(128 * K, 0));        // a small one does not
  EXPECT_FALSE(b.try_take(512 * K, 0));       // 512K is not small
  EXPECT_EQ(b.used(), 8 * M + 128 * K);
  b.give(8 * M + 128 * K);
  EXPECT_EQ(b.used(), 0u);
  EXPECT_EQ(b.high_water(), 8 * M + 128 * K);
}

TEST(Budget, AnAccountWaitsForItsShareThenIsGrantedInOrder) {
  auto loop = test::make_loop();
  Budget b(64 * M, 0, 0);
  BudgetQueue q(b, *loop);
  Account a(q, 4 * M);
  Wait w1(3 * M), w2(2 * M), w3(1 * M);
  EXPECT_TRUE(a.take(w1));
  EXPECT_FALSE(a.take(w2));  // 3 + 2 > the 4M share
  EXPECT_FALSE(a.take(w3));  // it would fit, but waits behind w2 (first come, first served)
  EXPECT_EQ(a.held(), 3 * M);
  a.give(3 * M);  // w2 and w3 both fit now, in order
  EXPECT_EQ(w2.granted_count, 1);
  EXPECT_EQ(w3.granted_count, 1);
  EXPECT_EQ(a.held(), 3 * M);
  a.give(3 * M);
  EXPECT_EQ(b.used(), 0u);
}

TEST(Budget, CancellingAWaitLetsTheOneBehindItThrough) {
  auto loop = test::make_loop();
  Budget b(64 * M, 0, 0);
  BudgetQueue q(b, *loop);
  Account a(q, 4 * M);
  Wait w0(4 * M), big(4 * M), small(0);
  ASSERT_TRUE(a.take(w0));
  EXPECT_FALSE(a.take(big));
  EXPECT_FALSE(a.take(small));
  EXPECT_TRUE(a.cancel(big));
  EXPECT_EQ(small.granted_count, 1);  // zero bytes fit once nothing waits ahead of it
  EXPECT_FALSE(a.cancel(big));        // not queued any more
  a.give(4 * M);
  EXPECT_EQ(big.granted_count, 0);
}

// Two accounts on two loops: the one blocked on the shared budget is woken on its own loop
// when the other gives back.
TEST(Budget, RoomGivenBackOnOneLoopWakesAWaiterOnAnother) {
  auto home = test::make_loop();
  auto other = test::make_loop();
  Budget b(8 * M, 0, 0);
  BudgetQueue qa(b, *home), qb(b, *other);
  Account a(qa, 8 * M);
  Wait wa(8 * M);
  ASSERT_TRUE(a.take(wa));
  std::thread::id granted_on;
  struct OnLoop final : BudgetWaiter {
    std::thread::id* where;
    bool done = false;
    void granted() override {
      *where = std::this_thread::get_id();
      done = true;
    }
  } wb;
  wb.bytes = 1 * M;
  wb.where = &granted_on;
  // Loops that wait only for work from another thread keep a timer in flight (run_until
  // otherwise reports a wait that nothing on the loop could end).
  Timer keep_home = home->after(std::chrono::seconds(60), [] {});
  std::thread t([&] {
    Timer keep_other = other->after(std::chrono::seconds(60), [] {});
    Account bacc(qb, 8 * M);
    EXPECT_FALSE(bacc.take(wb));
    home->post_remote([&] { a.give(8 * M); });
    EXPECT_TRUE(other->run_until([&] { return wb.done; }).ok());
    EXPECT_EQ(granted_on, std::this_thread::get_id());
    bacc.give(1 * M);
  });
  ASSERT_TRUE(home->run_until([&] { return a.held() == 0; }).ok());
  t.join();
  EXPECT_EQ(b.used(), 0u);
}

// A host that re-fills every byte it gives back (eight hosts at their share, in the attack) must
// not starve one that asked first: room goes to the oldest wait.
TEST(Budget, RoomGivenBackGoesToTheOldestWaitNotBackToTheGiver) {
  auto loop = test::make_loop();
  Budget b(8 * M, 0, 0);
  BudgetQueue q(b, *loop);
  Account greedy(q, 8 * M), late(q, 8 * M);
  // Wake-ups come through the loop's eventfd, which alone does not keep run_until() waiting.
  Timer guard = loop->after(std::chrono::seconds(20), [] {});
  std::vector<Wait> held(8, Wait(1 * M));
  for (auto& w : held) ASSERT_TRUE(greedy.take(w));
  Wait asked_first(1 * M), refill(1 * M);
  EXPECT_FALSE(late.take(asked_first));
  EXPECT_FALSE(greedy.take(refill));  // room or not, it waits behind `late`
  greedy.give(1 * M);
  EXPECT_EQ(refill.granted_count, 0);  // not taken back on the spot by the giver
  ASSERT_TRUE(loop->run_until([&] { return asked_first.granted_count == 1; }).ok());
  EXPECT_EQ(refill.granted_count, 0);
  EXPECT_EQ(late.held(), 1 * M);
  greedy.give(1 * M);
  ASSERT_TRUE(loop->run_until([&] { return refill.granted_count == 1; }).ok());
  greedy.give(7 * M);
  late.give(1 * M);
  EXPECT_EQ(b.used(), 0u);
}

TEST(Budget, ForcedBytesCountAboveTheLimit) {
  auto loop = test::make_loop();
  Budget b(1 * M, 0, 0);
  BudgetQueue q(b, *loop);
  Account a(q, 1 * M);
  a.force(2 * M);
  EXPECT_EQ(b.used(), 2 * M);
  Wait w(4 * K);
  EXPECT_FALSE(a.take(w));
  a.give(2 * M);
  EXPECT_EQ(w.granted_count, 1);
  a.give(4 * K);
}

}  // namespace
}  // namespace blkcopy
