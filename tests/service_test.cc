// The copy service: priorities, the bound on jobs in flight, the rate limit, drain.
#include <blkcopy/service.h>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

constexpr uint64_t K = 1024;
using P = CopyService::Priority;

TEST(CopyService, RunsHigherPrioritiesFirstWithinTheBound) {
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, "mem:1M,seed=1,latency=1ms");
  CopyService svc(*loop, {.max_in_flight = 1});
  std::vector<char> order;
  unsigned most = 0;
  auto job = [&](char name, P p, uint64_t at) {
    svc.submit({{d.get(), 0, 4 * K}}, *d, at, p, [&, name](CopyResult r) {
      EXPECT_TRUE(r.status.ok()) << r.status.message();
      order.push_back(name);
    });
    most = std::max(most, svc.in_flight());
  };
  job('A', P::low, 64 * K);  // starts at once
  job('B', P::low, 128 * K);
  job('C', P::high, 192 * K);
  job('D', P::normal, 256 * K);
  EXPECT_EQ(svc.queued(), 3u);
  ASSERT_TRUE(loop->run_until([&] { return svc.idle(); }).ok());
  EXPECT_EQ(order, (std::vector<char>{'A', 'C', 'D', 'B'}));
  EXPECT_EQ(most, 1u);
  EXPECT_EQ(test::read_bytes(*d, 256 * K, 4 * K), test::pattern(0, 4 * K, 1));
}

TEST(CopyService, RateLimitHoldsJobsBack) {
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, "mem:1M,seed=2");
  CopyService svc(*loop, {.max_in_flight = 8, .rate_bytes_per_s = 1 << 20});  // 64 KiB: 62 ms
  size_t queued_when_first_done = 0;
  int done = 0;
  for (int i = 0; i < 3; ++i) {
    svc.submit({{d.get(), 0, 64 * K}}, *d, (i + 1) * 128 * K, P::normal, [&](CopyResult r) {
      EXPECT_TRUE(r.status.ok());
      if (done++ == 0) queued_when_first_done = svc.queued();
    });
  }
  EXPECT_EQ(svc.in_flight(), 1u) << "the rest wait for the budget, not for a slot";
  ASSERT_TRUE(loop->run_until([&] { return svc.idle(); }).ok());
  EXPECT_EQ(done, 3);
  EXPECT_EQ(queued_when_first_done, 2u);
}

TEST(CopyService, DrainDropsQueuedJobsAndFinishesRunningOnes) {
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, "mem:1M,seed=3,latency=2ms");
  CopyService svc(*loop, {.max_in_flight = 2});
  int done = 0;
  for (int i = 0; i < 6; ++i) {
    svc.submit({{d.get(), 0, 4 * K}}, *d, (i + 1) * 64 * K, P::low, [&](CopyResult) { ++done; });
  }
  ASSERT_TRUE(svc.drain().ok());
  EXPECT_EQ(done, 2);
  EXPECT_TRUE(svc.idle());
}

TEST(CopyService, AnInvalidJobCompletesWithItsError) {
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, "mem:1M");
  CopyService svc(*loop, {});
  CopyResult got;
  bool done = false;
  svc.submit({{d.get(), 0, 4 * K}}, *d, 2 << 20, P::normal, [&](CopyResult r) {
    got = r;
    done = true;
  });
  ASSERT_TRUE(loop->run_until([&] { return done; }).ok());
  EXPECT_TRUE(got.invalid);
  EXPECT_EQ(got.status.code(), ERANGE);
}

}  // namespace
}  // namespace blkcopy
