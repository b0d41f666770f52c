// What a hostile host may cost the target over real sockets: a host that stops reading its
// answers holds no more than its share of the data budget and is closed when they do not
// drain, while another host keeps reading; Copies the target emulates share the copy budget.
// And with two loops, requests reach their devices through each loop's channels (no hop).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "nvme/codec.h"
#include "tests/served_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;
using test::capsule;
using test::Host;
using test::Served;
using Clock = std::chrono::steady_clock;

const std::string kSub = "nqn.2024-01.io.blkcopy.test:budget";
const std::string kAttacker = "nqn.2024-01.io.blkcopy.test:attacker";
const std::string kVictim = "nqn.2024-01.io.blkcopy.test:victim";
constexpr uint64_t M = 1u << 20;

TargetConfig config(std::vector<std::string> devices) {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}});
  SubsystemConfig s{kSub, true, {}, {}};
  for (size_t i = 0; i < devices.size(); ++i) {
    s.namespaces.push_back({static_cast<uint32_t>(i + 1), devices[i], "", true});
  }
  cfg.subsystems.push_back(s);
  return cfg;
}

using test::eventually;

std::vector<uint8_t> u8(const test::Bytes& b) {
  std::vector<uint8_t> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

TEST(TargetBudget, AHostThatStopsReadingHoldsOnlyItsShareAndIsClosedWhenItsAnswersDoNotDrain) {
  TargetConfig cfg = config({"mem:64M,seed=31"});
  cfg.limits.data_budget = 16 * M;  // a connection's share: 2 MiB
  cfg.limits.drain_ms = 1000;
  Served t(cfg);
  Host attacker, victim;
  ASSERT_TRUE(attacker.connect(t.port(), kSub, kAttacker));
  ASSERT_TRUE(victim.connect(t.port(), kSub, kVictim));
  // A queue's worth of 1 MiB reads (32 MiB), never a byte read back: once the socket buffers
  // are full the answers stay, and further reads wait for room in the budget.
  Sqe sqe{};
  sqe.opcode = io::kRead;
  sqe.nsid = 1;
  sqe.cdw12 = 2047;
  sqe.dptr.length = 1 << 20;
  sqe.dptr.type = kSglTransport;
  std::vector<uint8_t> burst;
  for (uint16_t cid = 1; cid <= 32; ++cid) {
    sqe.cid = cid;
    sqe.cdw10 = (cid - 1u) * 2048;
    auto p = capsule(sqe, {});
    burst.insert(burst.end(), p.begin(), p.end());
  }
  ASSERT_TRUE(attacker.io.send_raw(burst));
  ASSERT_TRUE(eventually([&] { return t.stats().budget_waits > 0; }))
      << "the attacker's reads never waited for room";
  // The other host reads on, its data right, while the attacker holds its share.
  const auto original = u8(test::pattern(0, 64 * M, 31));
  for (int i = 0; i < 20; ++i) {
    std::vector<uint8_t> got;
    ASSERT_EQ(victim.io.read(1, i * 8, 8, 512, got).status, 0) << "read " << i;
    ASSERT_TRUE(std::equal(got.begin(), got.end(), original.begin() + i * 4096)) << "read " << i;
  }
  ASSERT_TRUE(eventually([&] { return t.stats().undrained_connections == 1; }))
      << "the connection whose answers did not drain was not closed";
  EXPECT_TRUE(attacker.io.closed_by_peer(5000));
  const TargetStats s = t.stats();
  EXPECT_LE(s.data_budget_high, 2 * M + 64 * 1024) << "more than a share was held";
  ASSERT_TRUE(eventually([&] { return t.stats().data_budget_used == 0; }))
      << "the closed connection's buffers were not given back";
  std::vector<uint8_t> got;
  EXPECT_EQ(victim.io.read(1, 0, 8, 512, got).status, 0) << "the other host lost its queue";
}

// Copies that must be emulated, many at once from one host: the target's emulation buffers come
// from the copy budget (no 64 MiB each), every copy completes with the right data.
// A Copy capsule for namespace 1 (format 0, ranges in the capsule): `blocks` blocks from each
// SLBA to consecutive places from `sdlba` on.
std::vector<uint8_t> copy_capsule(uint16_t cid, uint64_t sdlba, const std::vector<uint64_t>& slbas,
                                  uint16_t blocks) {
  std::vector<uint8_t> ranges;
  for (uint64_t slba : slbas) {
    CopyRange0 c{};
    c.slba = slba;
    c.nlb = static_cast<uint16_t>(blocks - 1);
    const auto* b = reinterpret_cast<const uint8_t*>(&c);
    ranges.insert(ranges.end(), b, b + sizeof c);
  }
  Sqe sqe{};
  sqe.opcode = io::kCopy;
  sqe.nsid = 1;
  sqe.cid = cid;
  sqe.cdw10 = static_cast<uint32_t>(sdlba);
  sqe.cdw11 = static_cast<uint32_t>(sdlba >> 32);
  sqe.cdw12 = static_cast<uint32_t>(slbas.size() - 1);
  sqe.dptr.length = static_cast<uint32_t>(ranges.size());
  sqe.dptr.type = kSglInCapsule;
  return capsule(sqe, ranges);
}

TEST(TargetBudget, EmulatedCopiesFromOneHostStayWithinItsShareOfTheCopyBudget) {
  TargetConfig cfg = config({"mem:256M,seed=32,nocopy"});
  cfg.limits.copy_budget = 16 * M;
  Served t(cfg);
  Host h;
  ASSERT_TRUE(h.connect(t.port(), kSub, kAttacker));
  // 32 copies of 4 MiB (four 1 MiB source ranges each), all sent before any answer is read.
  std::vector<uint8_t> burst;
  for (uint16_t cid = 1; cid <= 32; ++cid) {
    std::vector<uint64_t> slbas;
    for (uint64_t r = 0; r < 4; ++r) slbas.push_back((uint64_t(cid - 1) * 4 + r) * 2048);
    // Four 1 MiB ranges to 128 MiB on.
    auto p = copy_capsule(cid, 262144 + uint64_t(cid - 1) * 8192, slbas, 2048);
    burst.insert(burst.end(), p.begin(), p.end());
  }
  ASSERT_TRUE(h.io.send_raw(burst));
  for (int i = 0; i < 32; ++i) {
    auto pdu = h.io.recv_pdu(20000);
    ASSERT_TRUE(pdu) << "copy answer " << i;
    ASSERT_EQ((*pdu)[0], pdu::kCapsuleResp);
    EXPECT_EQ(test::completion_of(*pdu).status, 0);
  }
  const TargetStats s = t.stats();
  EXPECT_EQ(s.copy_emulated_bytes, 32 * 4 * M);
  EXPECT_LE(s.copy_budget_high, 2 * M) << "one host held more than its eighth";
  EXPECT_EQ(s.copy_budget_used, 0u);
  // A Copy's range list goes back once decoded: 32 waiting Copies held no data buffers.
  EXPECT_LT(s.data_budget_high, 32u * 4096) << "waiting Copies kept their capsules' buffers";
  const auto original = u8(test::pattern(0, 128 * M, 32));
  for (int cid : {1, 17, 32}) {
    std::vector<uint8_t> got;
    const uint64_t at = 262144 + uint64_t(cid - 1) * 8192;
    ASSERT_EQ(h.io.read(1, at + 2048, 2048, 512, got).status, 0);  // its second range
    EXPECT_TRUE(std::equal(got.begin(), got.end(), original.begin() + ((cid - 1) * 4 + 1) * M))
        << "copy " << cid;
  }
}

// A host that goes away stops the Copies the target emulates for it: they end at their next
// chunk instead of running on for nobody.
TEST(TargetBudget, AHostThatDisconnectsStopsItsEmulatedCopies) {
  Served t(config({"mem:128M,nocopy,latency=100ms"}));
  Host h;
  ASSERT_TRUE(h.connect(t.port(), kSub, kAttacker));
  // 4 x 16 MiB from the first 64 MiB to the second.
  ASSERT_TRUE(h.io.send_raw(copy_capsule(1, 131072, {0, 32768, 65536, 98304}, 32768)));
  // 64 chunks of 1 MiB, eight at a time, 200 ms each: more than a second and a half in all.
  ASSERT_TRUE(eventually([&] { return t.stats().copy_budget_used > 0; })) << "the copy began";
  h.io.close();
  h.admin.close();
  ASSERT_TRUE(eventually([&] { return t.stats().copies == 1; })) << "the copy ended";
  EXPECT_LT(t.stats().copy_emulated_bytes, 64 * M) << "it ran on after the host left";
  EXPECT_EQ(t.stats().copy_budget_used, 0u);
}

// Copies waiting for emulation buffers when their host resets: a chunk's write that gives a
// buffer back grants the same copy's next take, and the copy (cancelled meanwhile) must not end
// and free itself inside that give (an attack review crashed the target so, 2 runs of 2).
TEST(TargetBudget, CopiesWaitingForBuffersEndCleanlyWhenTheirHostResets) {
  TargetConfig cfg = config({"mem:256M,nocopy,latency=10ms"});
  cfg.limits.copy_budget = 16 * M;  // a share of 2 MiB: the 8 MiB Copies wait for buffers
  Served t(cfg);
  for (int round = 0; round < 3; ++round) {
    Host h;
    h.io.queue_size = 64;
    ASSERT_TRUE(h.connect(t.port(), kSub, kAttacker));
    std::vector<uint8_t> burst;
    for (uint16_t cid = 1; cid <= 32; ++cid) {
      std::vector<uint64_t> slbas;  // 4 x 2 MiB from the first 64 MiB
      for (uint64_t r = 0; r < 4; ++r) slbas.push_back(((cid % 8) * 4 + r) * 4096);
      auto p = copy_capsule(cid, 262144 + uint64_t(cid % 8) * 16384, slbas, 4096);
      burst.insert(burst.end(), p.begin(), p.end());
    }
    ASSERT_TRUE(h.io.send_raw(burst));
    ASSERT_TRUE(eventually([&] { return t.stats().copy_budget_used >= 2 * M; })) << "copies began";
    h.io.abort();
    h.admin.abort();
  }
  ASSERT_TRUE(eventually([&] { return t.stats().copy_budget_used == 0; }))
      << "buffers came back: " << t.stats().copy_budget_used << " bytes still held, "
      << t.stats().copies << " copies ended";
  Host ok;
  ASSERT_TRUE(ok.connect(t.port(), kSub, kVictim));
  std::vector<uint8_t> got;
  ASSERT_EQ(ok.io.read(1, 0, 8, 512, got).status, 0);
}

// Two loops: I/O queues on the second loop reach a RAM namespace through their loop's channel
// (no request handed between threads); a namespace without channels (a clone stack) is reached
// by a hop to the first loop, and still answers right.
TEST(TargetChannels, RequestsUseTheirLoopsChannelAndHopOnlyWhereThereIsNone) {
  test::TempDir dir;
  const std::string table = (dir.path() / "clone.table").string();
  std::ofstream(table) << "0 2048 clone mem:1M,seed=34 mem:2M 128\n";
  TargetConfig cfg = config({"mem:16M,seed=33", "dm:" + table});
  cfg.cores = 2;
  Served t(cfg);
  Host h;  // its admin queue lands on loop 0, its I/O queue on loop 1
  ASSERT_TRUE(h.connect(t.port(), kSub, kVictim));
  const auto original = u8(test::pattern(0, 16 * M, 33));
  std::vector<uint8_t> got;
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(h.io.read(1, i * 64, 8, 512, got).status, 0);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), original.begin() + i * 64 * 512));
  }
  std::vector<uint8_t> data(4096, 0x5c);
  ASSERT_EQ(h.io.write(1, 4096, data, 512).status, 0);
  ASSERT_EQ(h.io.copy(1, 8192, {{4096, 8}}).status, 0);
  ASSERT_EQ(h.io.read(1, 8192, 8, 512, got).status, 0);
  EXPECT_EQ(got, data);
  EXPECT_EQ(t.stats().hops, 0u) << "a request was handed to another loop";
  ASSERT_EQ(h.io.read(2, 128, 8, 512, got).status, 0);
  EXPECT_EQ(got, u8(test::pattern(128 * 512, 4096, 34)));
  EXPECT_GE(t.stats().hops, 1u);
}

}  // namespace
}  // namespace blkcopy
