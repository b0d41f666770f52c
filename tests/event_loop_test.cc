#include <blkcopy/event_loop.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <thread>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace std::chrono_literals;

TEST(EventLoop, WritesAndReadsAFile) {
  auto loop = test::make_loop();
  test::TempDir dir;
  const std::string path = dir.file("f", 8192);
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char out[4096], in[4096] = {};
  std::memset(out, 'x', sizeof out);
  int wres = -1, rres = -1;
  loop->write(fd, out, sizeof out, 4096, [&](int r) {
    wres = r;
    loop->read(fd, in, sizeof in, 4096, [&](int r2) { rres = r2; });
  });
  ASSERT_TRUE(loop->run_until([&] { return rres >= 0; }).ok());
  EXPECT_EQ(wres, 4096);
  EXPECT_EQ(rres, 4096);
  EXPECT_EQ(std::memcmp(in, out, sizeof in), 0);
  close(fd);
}

TEST(EventLoop, ReportsErrorsAsNegativeErrno) {
  auto loop = test::make_loop();
  int res = 0;
  char buf[16];
  loop->read(-1, buf, sizeof buf, 0, [&](int r) { res = r; });
  ASSERT_TRUE(loop->run_until([&] { return res != 0; }).ok());
  EXPECT_EQ(res, -EBADF);
}

TEST(EventLoop, PostRunsLaterNotInline) {
  auto loop = test::make_loop();
  std::vector<int> order;
  loop->post([&] {
    order.push_back(1);
    loop->post([&] { order.push_back(3); });
    order.push_back(2);
  });
  EXPECT_TRUE(order.empty());
  ASSERT_TRUE(loop->run_until([&] { return order.size() == 3; }).ok());
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(EventLoop, TimersFireInDeadlineOrder) {
  auto loop = test::make_loop();
  std::vector<int> order;
  Timer late = loop->after(20ms, [&] { order.push_back(2); });
  Timer early = loop->after(1ms, [&] { order.push_back(1); });
  ASSERT_TRUE(loop->run_until([&] { return order.size() == 2; }).ok());
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_FALSE(late.armed());
  EXPECT_FALSE(early.armed());
}

// A cancelled timer's task never runs and its captures are released at once; the loop does not
// wait for its deadline (nothing is left in flight).
TEST(EventLoop, ACancelledTimerNeverRunsAndLeavesNothingInFlight) {
  auto loop = test::make_loop();
  auto held = std::make_shared<int>(0);
  bool ran = false;
  Timer t = loop->after(1h, [&ran, held] { ran = true; });
  EXPECT_TRUE(t.armed());
  EXPECT_EQ(held.use_count(), 2);
  t.cancel();
  EXPECT_FALSE(t.armed());
  EXPECT_EQ(held.use_count(), 1) << "the task's captures outlived the cancel";
  bool other = false;
  Timer u = loop->after(1ms, [&] { other = true; });
  ASSERT_TRUE(loop->run_until([&] { return other; }).ok());
  // The hour-long timer is gone from the ring: with nothing else in flight, waiting is refused
  // at once instead of sleeping for an hour.
  EXPECT_EQ(loop->run_until([] { return false; }).code(), EDEADLK);
  EXPECT_FALSE(ran);
}

// Destroying the handle cancels; moving it hands the timer over (the moved-from handle no
// longer owns it).
TEST(EventLoop, ATimerHandleOwnsItsTimer) {
  auto loop = test::make_loop();
  int fired = 0;
  {
    Timer gone = loop->after(1ms, [&] { fired += 100; });
  }
  Timer kept;
  {
    Timer first = loop->after(2ms, [&] { fired += 1; });
    kept = std::move(first);
    EXPECT_FALSE(first.armed());  // NOLINT(bugprone-use-after-move): the point of the test
  }
  EXPECT_TRUE(kept.armed());
  ASSERT_TRUE(loop->run_until([&] { return fired != 0; }).ok());
  Timer settle = loop->after(5ms, [] {});
  ASSERT_TRUE(loop->run_until([&] { return !settle.armed(); }).ok());
  EXPECT_EQ(fired, 1);
}

// A stale handle (its timer ran, its op reused for another timer) cancels nothing.
TEST(EventLoop, AStaleTimerHandleCancelsNothing) {
  auto loop = test::make_loop();
  bool first = false, second = false;
  Timer a = loop->after(0ns, [&] { first = true; });
  ASSERT_TRUE(loop->run_until([&] { return first; }).ok());
  Timer b = loop->after(1ms, [&] { second = true; });  // likely the same pooled op as a
  a.cancel();
  ASSERT_TRUE(loop->run_until([&] { return second; }).ok());
}

// Cancelling an operation ends it early: its callback runs once, with -ECANCELED.
TEST(EventLoop, ACancelledReceiveCompletesWithECANCELED) {
  auto loop = test::make_loop();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  char buf[8];
  int res = 1, calls = 0;
  OpId op = loop->recv(sv[0], buf, sizeof buf, [&](int r) {
    res = r;
    ++calls;
  });
  loop->cancel(op);
  ASSERT_TRUE(loop->run_until([&] { return calls > 0; }).ok());
  EXPECT_EQ(res, -ECANCELED);
  loop->cancel(op);  // stale now: nothing happens
  Timer settle = loop->after(2ms, [] {});
  ASSERT_TRUE(loop->run_until([&] { return !settle.armed(); }).ok());
  EXPECT_EQ(calls, 1);
  close(sv[0]);
  close(sv[1]);
}

TEST(EventLoop, OffloadRunsOnAHelperAndCompletesOnTheLoop) {
  auto loop = test::make_loop();
  const auto me = std::this_thread::get_id();
  std::thread::id worker;
  std::thread::id completed_on;
  int res = 0;
  loop->offload(
      [&] {
        worker = std::this_thread::get_id();
        return 42;
      },
      [&](int r) {
        completed_on = std::this_thread::get_id();
        res = r;
      });
  ASSERT_TRUE(loop->run_until([&] { return res != 0; }).ok());
  EXPECT_EQ(res, 42);
  EXPECT_NE(worker, me);
  EXPECT_EQ(completed_on, me);
}

TEST(EventLoop, RunUntilReportsAWaitThatCannotEnd) {
  auto loop = test::make_loop();
  Status s = loop->run_until([] { return false; });
  EXPECT_EQ(s.code(), EDEADLK);
}

TEST(EventLoop, SurvivesMoreOperationsThanItsQueueDepth) {
  auto loop = EventLoop::create(8).value();
  int fired = 0;
  std::vector<Timer> timers;
  for (int i = 0; i < 100; ++i) timers.push_back(loop->after(0ns, [&] { ++fired; }));
  ASSERT_TRUE(loop->run_until([&] { return fired == 100; }).ok());
}

// A busy-polling loop still delivers every kind of completion: socket data written by another
// thread, a timer, a task posted from another thread and a helper's result; and it sleeps once
// the spin is over (an idle loop does not keep its core).
TEST(EventLoop, BusyPollingDeliversEveryCompletionAndThenSleeps) {
  auto loop = test::make_loop();
  loop->set_busy_poll(200us);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  char buf[8] = {};
  int got = 0, timer = 0, remote = 0, helper = 0;
  loop->recv(sv[0], buf, sizeof buf, [&](int r) { got = r; });
  Timer t5 = loop->after(5ms, [&] { timer = 1; });
  loop->offload([] { return 7; }, [&](int r) { helper = r; });
  std::thread peer([&] {
    std::this_thread::sleep_for(2ms);
    ASSERT_EQ(write(sv[1], "polled", 6), 6);
    loop->post_remote([&] { remote = 1; });
  });
  // A remote post alone does not keep run_until() waiting (it would call the loop idle once
  // the rest is done, if the peer thread is late, as on a loaded CI machine): a guard does.
  Timer guard = loop->after(20s, [] {});
  ASSERT_TRUE(loop->run_until([&] { return got && timer && remote && helper; }).ok());
  guard.cancel();
  peer.join();
  EXPECT_EQ(got, 6);
  EXPECT_STREQ(buf, "polled");
  EXPECT_EQ(helper, 7);
  // Idle: a 100 ms timer costs far less than 100 ms of CPU (the loop sleeps after 200 us).
  timespec t0{}, t1{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  bool late = false;
  Timer t100 = loop->after(100ms, [&] { late = true; });
  ASSERT_TRUE(loop->run_until([&] { return late; }).ok());
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  const double cpu_ms = double(t1.tv_sec - t0.tv_sec) * 1e3 + double(t1.tv_nsec - t0.tv_nsec) / 1e6;
  EXPECT_LT(cpu_ms, 50) << "the loop kept spinning while idle";
  close(sv[0]);
  close(sv[1]);
}

}  // namespace
}  // namespace blkcopy
