// The host queue against a scripted peer that lies about C2HData: a SUCCESS flag before all of
// a read's data has come (or without LAST_PDU) fails the command with EPROTO instead of
// handing back a buffer that was never filled.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "nvme/host/queue.h"
#include "nvme/spec.h"
#include "tests/test_util.h"

namespace blkcopy::nvme {
namespace {

bool read_all(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n) {
    const ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Accepts one connection, answers the ICReq, reads one command capsule, and answers it with
// one C2HData of `datal` bytes at offset 0 carrying `flags`.
class LyingTarget {
 public:
  LyingTarget(uint32_t datal, uint8_t flags) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this, datal, flags] {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      ICReq req;
      ICResp resp{};
      resp.hdr = {pdu::kICResp, 0, 128, 0, 128};
      resp.maxh2cdata = 131072;
      uint8_t cmd[72];
      if (read_all(c, &req, sizeof req) && ::write(c, &resp, sizeof resp) == sizeof resp &&
          read_all(c, cmd, sizeof cmd)) {
        Sqe sqe;
        std::memcpy(&sqe, cmd + 8, sizeof sqe);
        DataPdu d{};
        d.hdr = {pdu::kC2HData, flags, 24, 24, 24 + datal};
        d.cccid = sqe.cid;
        d.datal = datal;
        std::vector<uint8_t> out(24 + datal, 0xAB);
        std::memcpy(out.data(), &d, sizeof d);
        (void)!::write(c, out.data(), out.size());
      }
      uint8_t b[256];
      while (::read(c, b, sizeof b) > 0) {}  // until the host hangs up
      ::close(c);
    });
  }
  ~LyingTarget() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

Status read_8k_from(const LyingTarget& t) {
  auto loop = test::make_loop();
  auto q = HostQueue::open(*loop, "127.0.0.1", t.port(), QueueOptions{});
  EXPECT_TRUE(q) << (q ? "" : q.error().message());
  if (!q) return Status::error(EIO, "no queue");
  std::vector<uint8_t> buf(8192);
  Sqe sqe{};
  sqe.opcode = io::kRead;
  auto r = (*q)->run_sync(sqe, nullptr, buf.data(), static_cast<uint32_t>(buf.size()));
  return r ? Status() : r.error();
}

TEST(HostQueuePeer, C2HSuccessBeforeAllTheDataFailsTheCommand) {
  LyingTarget half(4096, pdu::kFlagLast | pdu::kFlagSuccess);
  Status s = read_8k_from(half);
  EXPECT_EQ(s.code(), EPROTO);
  EXPECT_NE(s.message().find("C2HData SUCCESS before all the data"), std::string::npos)
      << s.message();
}

TEST(HostQueuePeer, C2HSuccessWithoutLastPduFailsTheCommand) {
  LyingTarget no_last(8192, pdu::kFlagSuccess);
  EXPECT_EQ(read_8k_from(no_last).code(), EPROTO);
}

TEST(HostQueuePeer, C2HSuccessWithAllTheDataEndsTheRead) {
  LyingTarget honest(8192, pdu::kFlagLast | pdu::kFlagSuccess);
  EXPECT_TRUE(read_8k_from(honest).ok());
}

}  // namespace
}  // namespace blkcopy::nvme
