// The host queue against scripted peers that lie: about C2HData (a SUCCESS flag before all of a
// read's data has come, or without LAST_PDU, fails the command with EPROTO instead of handing
// back a buffer that was never filled), and about writes (a completion before the data it asked
// for has left, R2Ts repeated or out of order): the command and the queue fail, and the caller's
// buffer is never read by the socket after the write has returned.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
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

// Accepts one connection, answers the ICReq, reads one write capsule (no in-capsule data) and
// runs `script` on the socket; then keeps every byte the host sends until it hangs up.
class WriteTarget {
 public:
  using Script = std::function<void(int fd, const Sqe& sqe)>;
  explicit WriteTarget(Script script) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this, script] {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      ICReq req;
      ICResp resp{};
      resp.hdr = {pdu::kICResp, 0, 128, 0, 128};
      resp.maxh2cdata = 4096;
      uint8_t cmd[72];
      if (read_all(c, &req, sizeof req) && ::write(c, &resp, sizeof resp) == sizeof resp &&
          read_all(c, cmd, sizeof cmd)) {
        Sqe sqe;
        std::memcpy(&sqe, cmd + 8, sizeof sqe);
        script(c, sqe);
      }
      uint8_t b[4096];
      for (ssize_t n; (n = ::read(c, b, sizeof b)) > 0;) got.insert(got.end(), b, b + n);
      ::close(c);
    });
  }
  ~WriteTarget() { join(); }
  void join() {
    if (!thread_.joinable()) return;
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::vector<uint8_t> got;  // what the host sent after the script (read once joined)

  static void r2t(int fd, const Sqe& sqe, uint32_t offset, uint32_t length) {
    R2T t{};
    t.hdr = {pdu::kR2T, 0, 24, 0, 24};
    t.cccid = sqe.cid;
    t.r2to = offset;
    t.r2tl = length;
    (void)!::send(fd, &t, sizeof t, MSG_NOSIGNAL);  // the host may have hung up
  }
  static void success(int fd, const Sqe& sqe) {
    CapsuleResp r{};
    r.hdr = {pdu::kCapsuleResp, 0, 24, 0, 24};
    r.cqe.cid = sqe.cid;
    (void)!::send(fd, &r, sizeof r, MSG_NOSIGNAL);
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// Writes 64 KiB from a buffer that is overwritten with a secret pattern as soon as the write
// returns (as a caller reusing its memory would), then closes the queue.
Status write_64k_to(WriteTarget& t) {
  auto loop = test::make_loop();
  auto q = HostQueue::open(*loop, "127.0.0.1", t.port(), QueueOptions{});
  EXPECT_TRUE(q) << (q ? "" : q.error().message());
  if (!q) return Status::error(EIO, "no queue");
  std::vector<uint8_t> buf(65536, 0x11);
  Sqe sqe{};
  sqe.opcode = io::kWrite;
  auto r = (*q)->run_sync(sqe, buf.data(), nullptr, static_cast<uint32_t>(buf.size()));
  std::fill(buf.begin(), buf.end(), 0x5E);
  q->reset();
  return r ? Status() : r.error();
}

bool holds_secret(const std::vector<uint8_t>& got) {
  return std::search_n(got.begin(), got.end(), 64, uint8_t{0x5E}) != got.end();
}

// The attack: R2T and "done" in one segment, the data read only later. The host handles both
// PDUs of one receive before its H2CData can leave: the write fails, and what the socket sends
// afterwards is never the buffer's new contents.
TEST(HostQueuePeer, ACompletionBeforeTheWritesDataHasLeftFailsAndNothingLeaksAfter) {
  WriteTarget t([](int fd, const Sqe& sqe) {
    R2T r2t{};
    r2t.hdr = {pdu::kR2T, 0, 24, 0, 24};
    r2t.cccid = sqe.cid;
    r2t.r2tl = 65536;
    CapsuleResp done{};
    done.hdr = {pdu::kCapsuleResp, 0, 24, 0, 24};
    done.cqe.cid = sqe.cid;
    uint8_t both[48];
    std::memcpy(both, &r2t, 24);
    std::memcpy(both + 24, &done, 24);
    (void)!::send(fd, both, sizeof both, MSG_NOSIGNAL);
  });
  const Status s = write_64k_to(t);
  t.join();
  EXPECT_EQ(s.code(), EPROTO) << s.message();
  EXPECT_NE(s.message().find("data has not been sent yet"), std::string::npos) << s.message();
  EXPECT_FALSE(holds_secret(t.got)) << "the host sent memory it no longer owned";
}

TEST(HostQueuePeer, RepeatedOrOutOfOrderR2TsFailTheQueue) {
  // (first R2T's offset, second's): a repeat, an overlap, and a first one not at offset 0.
  for (auto [first, second] : {std::pair<uint32_t, uint32_t>{0, 0}, {0, 2048}, {8192, 0}}) {
    WriteTarget t([first, second](int fd, const Sqe& sqe) {
      WriteTarget::r2t(fd, sqe, first, 4096);
      if (first == 0) WriteTarget::r2t(fd, sqe, second, 4096);
    });
    const Status s = write_64k_to(t);
    t.join();
    EXPECT_EQ(s.code(), EPROTO) << first << "," << second << ": " << s.message();
  }
}

// A target answering one write with R2T after R2T for the same bytes (the attack grew a host to
// 5 GiB in 10 s): the second one ends it, and the host sent the data once at most.
TEST(HostQueuePeer, EndlessR2TsAreRefusedAfterTheFirst) {
  WriteTarget t([](int fd, const Sqe& sqe) {
    for (int i = 0; i < 10000; ++i) WriteTarget::r2t(fd, sqe, 0, 65536);
  });
  const Status s = write_64k_to(t);
  t.join();
  EXPECT_EQ(s.code(), EPROTO) << s.message();
  EXPECT_LE(t.got.size(), 65536u + 16 * 64) << "the data went out more than once";
}

TEST(HostQueuePeer, AnHonestWriteInTwoR2TsSucceeds) {
  WriteTarget t([](int fd, const Sqe& sqe) {
    for (uint32_t at : {0u, 32768u}) {
      WriteTarget::r2t(fd, sqe, at, 32768);
      std::vector<uint8_t> data(32768 + 24 * 8);  // eight H2CData PDUs of 4 KiB
      ASSERT_TRUE(read_all(fd, data.data(), data.size()));
    }
    WriteTarget::success(fd, sqe);
  });
  EXPECT_TRUE(write_64k_to(t).ok());
}

}  // namespace
}  // namespace blkcopy::nvme
