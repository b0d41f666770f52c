#include <blkcopy/event_loop.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
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
  loop->after(20ms, [&] { order.push_back(2); });
  loop->after(1ms, [&] { order.push_back(1); });
  ASSERT_TRUE(loop->run_until([&] { return order.size() == 2; }).ok());
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
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
  for (int i = 0; i < 100; ++i) loop->after(0ns, [&] { ++fired; });
  ASSERT_TRUE(loop->run_until([&] { return fired == 100; }).ok());
}

}  // namespace
}  // namespace blkcopy
