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
#include "tests/scripted_target.h"
#include "tests/test_util.h"

namespace blkcopy::nvme {
namespace {

using test::ScriptedTarget;

// Answers the first command (a read) with one C2HData of `datal` bytes at offset 0 carrying
// `flags`.
ScriptedTarget lying_target(uint32_t datal, uint8_t flags) {
  return ScriptedTarget([datal, flags](int fd, const Sqe& sqe) {
    DataPdu d{};
    d.hdr = {pdu::kC2HData, flags, 24, 24, 24 + datal};
    d.cccid = sqe.cid;
    d.datal = datal;
    std::vector<uint8_t> out(24 + datal, 0xAB);
    std::memcpy(out.data(), &d, sizeof d);
    ScriptedTarget::send(fd, out.data(), out.size());
  });
}

Status read_8k_from(const ScriptedTarget& t) {
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
  auto half = lying_target(4096, pdu::kFlagLast | pdu::kFlagSuccess);
  Status s = read_8k_from(half);
  EXPECT_EQ(s.code(), EPROTO);
  EXPECT_NE(s.message().find("C2HData SUCCESS before all the data"), std::string::npos)
      << s.message();
}

TEST(HostQueuePeer, C2HSuccessWithoutLastPduFailsTheCommand) {
  auto no_last = lying_target(8192, pdu::kFlagSuccess);
  EXPECT_EQ(read_8k_from(no_last).code(), EPROTO);
}

TEST(HostQueuePeer, C2HSuccessWithAllTheDataEndsTheRead) {
  auto honest = lying_target(8192, pdu::kFlagLast | pdu::kFlagSuccess);
  EXPECT_TRUE(read_8k_from(honest).ok());
}

// A target for writes: R2Ts and completions written by the scripts below (MAXH2CDATA 4 KiB).
ScriptedTarget write_target(ScriptedTarget::Script script) {
  return ScriptedTarget(std::move(script), 4096);
}
void r2t(int fd, const Sqe& sqe, uint32_t offset, uint32_t length) {
  R2T t{};
  t.hdr = {pdu::kR2T, 0, 24, 0, 24};
  t.cccid = sqe.cid;
  t.r2to = offset;
  t.r2tl = length;
  ScriptedTarget::send(fd, &t, sizeof t);
}
void success(int fd, const Sqe& sqe) {
  CapsuleResp r{};
  r.hdr = {pdu::kCapsuleResp, 0, 24, 0, 24};
  r.cqe.cid = sqe.cid;
  ScriptedTarget::send(fd, &r, sizeof r);
}

// Writes 64 KiB from a buffer that is overwritten with a secret pattern as soon as the write
// returns (as a caller reusing its memory would), then closes the queue.
Status write_64k_to(ScriptedTarget& t) {
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
  auto t = write_target([](int fd, const Sqe& sqe) {
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
    ScriptedTarget::send(fd, both, sizeof both);
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
    auto t = write_target([first, second](int fd, const Sqe& sqe) {
      r2t(fd, sqe, first, 4096);
      if (first == 0) r2t(fd, sqe, second, 4096);
    });
    const Status s = write_64k_to(t);
    t.join();
    EXPECT_EQ(s.code(), EPROTO) << first << "," << second << ": " << s.message();
  }
}

// A target answering one write with R2T after R2T for the same bytes (the attack grew a host to
// 5 GiB in 10 s): the second one ends it, and the host sent the data once at most.
TEST(HostQueuePeer, EndlessR2TsAreRefusedAfterTheFirst) {
  auto t = write_target([](int fd, const Sqe& sqe) {
    for (int i = 0; i < 10000; ++i) r2t(fd, sqe, 0, 65536);
  });
  const Status s = write_64k_to(t);
  t.join();
  EXPECT_EQ(s.code(), EPROTO) << s.message();
  EXPECT_LE(t.got.size(), 65536u + 16 * 64) << "the data went out more than once";
}

TEST(HostQueuePeer, AnHonestWriteInTwoR2TsSucceeds) {
  auto t = write_target([](int fd, const Sqe& sqe) {
    for (uint32_t at : {0u, 32768u}) {
      r2t(fd, sqe, at, 32768);
      std::vector<uint8_t> data(32768 + 24 * 8);  // eight H2CData PDUs of 4 KiB
      ASSERT_TRUE(test::read_all(fd, data.data(), data.size()));
    }
    success(fd, sqe);
  });
  EXPECT_TRUE(write_64k_to(t).ok());
}

}  // namespace
}  // namespace blkcopy::nvme
