// The NVMe/TCP send queue over a real socket pair: waiting PDUs leave gathered in one sendmsg,
// in order, and an urgent PDU (a command capsule, an R2T) overtakes those only waiting but
// never one already being sent.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "nvme/tcp/send_queue.h"
#include "tests/test_util.h"

namespace blkcopy::nvme {
namespace {

struct Pair {
  int fd[2] = {-1, -1};
  Pair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0); }
  ~Pair() {
    close(fd[0]);
    close(fd[1]);
  }
  std::string drain(size_t n) {
    std::string s(n, '\0');
    size_t got = 0;
    while (got < n) {
      const ssize_t r = read(fd[1], s.data() + got, n - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    s.resize(got);
    return s;
  }
};

using Queue = SendQueue<int>;
Queue::Pdu pdu(const std::string& head, int owner = 0) {
  return Queue::Pdu{tcp::Header(head.data(), head.size()), nullptr, 0, 0, false, owner};
}

TEST(SendQueue, UrgentPdusOvertakeWaitingOnesAndAllLeaveInOneSend) {
  auto loop = test::make_loop();
  Pair p;
  Stream stream(*loop, p.fd[0]);
  Queue q;
  q.push(pdu("AAAA", 1));
  q.push(pdu("BBBB", 2));
  q.push(pdu("c", 3), true);
  q.push(pdu("d", 4), true);  // behind the urgent one before it
  std::vector<int> left;
  int calls = 0;
  bool done = false;
  q.start(stream, [&](int res, auto& gone) {
    EXPECT_EQ(res, 10);
    ++calls;
    for (int g : gone) left.push_back(g);
    done = true;
  });
  ASSERT_TRUE(loop->run_until([&] { return done; }).ok());
  EXPECT_EQ(calls, 1) << "every waiting PDU in one sendmsg";
  EXPECT_EQ(left, (std::vector<int>{3, 4, 1, 2}));
  EXPECT_EQ(p.drain(10), "cdAAAABBBB");
  EXPECT_TRUE(q.empty());
}

TEST(SendQueue, AnUrgentPduWaitsForTheSendInFlight) {
  auto loop = test::make_loop();
  Pair p;
  Stream stream(*loop, p.fd[0]);
  Queue q;
  const std::vector<uint8_t> data(1000, 'x');
  q.push(Queue::Pdu{tcp::Header("H", 1), data.data(), 1000, 0, true, 1});  // with a data digest
  bool done = false;
  q.start(stream, [&](int, auto&) { done = true; });
  q.push(pdu("u", 2), true);  // the first PDU is in flight: it stays first
  ASSERT_TRUE(loop->run_until([&] { return done; }).ok());
  done = false;
  q.start(stream, [&](int, auto&) { done = true; });
  ASSERT_TRUE(loop->run_until([&] { return done; }).ok());
  const std::string wire = p.drain(1 + 1000 + 4 + 1);
  ASSERT_EQ(wire.size(), 1006u);
  EXPECT_EQ(wire[0], 'H');
  EXPECT_EQ(wire.substr(1, 1000), std::string(1000, 'x'));
  EXPECT_EQ(wire.back(), 'u');
}

}  // namespace
}  // namespace blkcopy::nvme
