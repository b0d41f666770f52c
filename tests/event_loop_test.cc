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
  loop->after(5ms, [&] { timer = 1; });
  loop->offload([] { return 7; }, [&](int r) { helper = r; });
  std::thread peer([&] {
    std::this_thread::sleep_for(2ms);
    ASSERT_EQ(write(sv[1], "polled", 6), 6);
    loop->post_remote([&] { remote = 1; });
  });
  ASSERT_TRUE(loop->run_until([&] { return got && timer && remote && helper; }).ok());
  peer.join();
  EXPECT_EQ(got, 6);
  EXPECT_STREQ(buf, "polled");
  EXPECT_EQ(helper, 7);
  // Idle: a 100 ms timer costs far less than 100 ms of CPU (the loop sleeps after 200 us).
  timespec t0{}, t1{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  bool late = false;
  loop->after(100ms, [&] { late = true; });
  ASSERT_TRUE(loop->run_until([&] { return late; }).ok());
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  const double cpu_ms = double(t1.tv_sec - t0.tv_sec) * 1e3 + double(t1.tv_nsec - t0.tv_nsec) / 1e6;
  EXPECT_LT(cpu_ms, 50) << "the loop kept spinning while idle";
  close(sv[0]);
  close(sv[1]);
}

}  // namespace
}  // namespace blkcopy
