// The controller without a transport (nvme/target/loopback.h): the opcode table behind the
// Commands Supported and Effects log, Write Zeroes on every namespace, one error channel
// (unsupported commands with DNR, a Copy the device calls malformed fails instead of being
// emulated), and what the budgets do to commands that do not fit.
#include <gtest/gtest.h>

#include <cstring>

#include "nvme/codec.h"
#include "nvme/target/loopback.h"
#include "nvme/target/request.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;

const std::string kSub = "nqn.2024-01.io.blkcopy.test:ctrl";
const std::string kHost = "nqn.2024-01.io.blkcopy.test:host";

struct Answer {
  Cqe cqe{};
  std::vector<uint8_t> data;
  bool done = false;
  uint16_t code() const { return (cqe.status >> 1) & 0x7FF; }
  bool dnr() const { return cqe.status & status::kDnr; }
};

class ControllerTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> devices, TargetLimits limits = {}) {
    TargetConfig cfg;
    cfg.discovery_port = 0;
    SubsystemConfig s{kSub, true, {}, {}};
    for (size_t i = 0; i < devices.size(); ++i) {
      s.namespaces.push_back({static_cast<uint32_t>(i + 1), devices[i], "", true});
    }
    cfg.subsystems.push_back(s);
    cfg.limits = limits;
    auto t = Target::create(*loop, cfg);
    ASSERT_TRUE(t) << t.error().message();
    target = std::move(*t);
    admin = std::make_unique<LoopbackQueue>(*target);
    io = std::make_unique<LoopbackQueue>(*target);
    Answer a = run(*admin, connect_command(0, 31, 0), connect_data(0xFFFF, kSub, kHost));
    ASSERT_EQ(a.cqe.status, 0);
    Answer b = run(*io, connect_command(1, 127, 0), connect_data(a.cqe.dw0 & 0xFFFF, kSub, kHost));
    ASSERT_EQ(b.cqe.status, 0);
  }
  void TearDown() override {
    if (!io) return;
    io->close();
    admin->close();
    ASSERT_TRUE(loop->run_until([&] { return io->idle() && admin->idle(); }).ok());
  }
  // Submits without waiting; the answer lands in *out.
  void submit(LoopbackQueue& q, const Sqe& sqe, std::span<const uint8_t> out, uint32_t in_len,
              Answer* a) {
    ASSERT_TRUE(q.submit(sqe, out, in_len, [a](const Cqe& c, std::span<const uint8_t> d) {
      a->cqe = c;
      a->data.assign(d.begin(), d.end());
      a->done = true;
    }));
  }
  Answer run(LoopbackQueue& q, const Sqe& sqe, std::span<const uint8_t> out = {}, uint32_t in_len = 0) {
    Answer a;
    submit(q, sqe, out, in_len, &a);
    EXPECT_TRUE(loop->run_until([&] { return a.done; }).ok());
    return a;
  }
  Sqe io_cmd(uint8_t opcode, uint32_t nsid, uint64_t slba, uint32_t blocks) {
    Sqe s{};
    s.opcode = opcode;
    s.nsid = nsid;
    s.cdw10 = static_cast<uint32_t>(slba);
    s.cdw11 = static_cast<uint32_t>(slba >> 32);
    s.cdw12 = blocks - 1;
    return s;
  }
  std::vector<uint8_t> read(uint32_t nsid, uint64_t slba, uint32_t blocks) {
    Answer a = run(*io, io_cmd(io::kRead, nsid, slba, blocks), {}, blocks * 512);
    EXPECT_EQ(a.cqe.status, 0);
    return a.data;
  }

  std::unique_ptr<EventLoop> loop = test::make_loop();
  std::unique_ptr<Target> target;
  std::unique_ptr<LoopbackQueue> admin, io;
};

std::vector<uint8_t> u8(const test::Bytes& b) {
  std::vector<uint8_t> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// The effects log comes from the opcode table: every served command CSUPP, and every command
// that writes the namespace (Write, Write Zeroes, Dataset Management, Copy) LBCC.
TEST_F(ControllerTest, TheEffectsLogComesFromTheOpcodeTable) {
  start({"mem:1M"});
  Sqe glp{};
  glp.opcode = admin::kGetLogPage;
  glp.cdw10 = kLogCmdEffects | (1023u << 16);
  Answer a = run(*admin, glp, {}, 4096);
  ASSERT_EQ(a.cqe.status, 0);
  ASSERT_EQ(a.data.size(), 4096u);
  auto io_effects = [&](uint8_t op) { return get<uint32_t>(a.data, 1024 + op * 4u); };
  auto admin_effects = [&](uint8_t op) { return get<uint32_t>(a.data, op * 4u); };
  EXPECT_EQ(io_effects(io::kRead), 0x1u);
  EXPECT_EQ(io_effects(io::kFlush), 0x1u);
  for (uint8_t op : {io::kWrite, io::kWriteZeroes, io::kDsm, io::kCopy}) {
    EXPECT_EQ(io_effects(op), 0x3u) << "opcode " << int(op);
  }
  EXPECT_EQ(io_effects(0x7E), 0u);
  EXPECT_EQ(admin_effects(admin::kIdentify), 0x1u);
  EXPECT_EQ(admin_effects(admin::kKeepAlive), 0x1u);
  EXPECT_EQ(admin_effects(0x10), 0u);  // Firmware Commit: not served
}

// Unknown opcodes, and commands the device does not do, are answered with DNR: a host must not
// retry them.
TEST_F(ControllerTest, UnsupportedCommandsAreAnsweredWithDoNotRetry) {
  start({"mem:1M"});
  Answer a = run(*io, io_cmd(0x7E, 1, 0, 1));
  EXPECT_EQ(a.code(), status::kInvalidOpcode);
  EXPECT_TRUE(a.dnr());
  Sqe fw{};
  fw.opcode = 0x10;
  Answer b = run(*admin, fw);
  EXPECT_EQ(b.code(), status::kInvalidOpcode);
  EXPECT_TRUE(b.dnr());
}

// Write Zeroes works on a namespace whose device cannot zero (the target writes zeroes), and
// only inside the range; Identify Controller announces it.
TEST_F(ControllerTest, WriteZeroesIsServedWhereTheDeviceCannotZero) {
  start({"mem:2M,seed=5,nozeroes", "mem:2M,seed=6"});
  const auto before1 = u8(test::pattern(0, 2 << 20, 5));
  for (uint32_t nsid : {1u, 2u}) {
    Answer a = run(*io, io_cmd(io::kWriteZeroes, nsid, 8, 2056));  // more than one 1 MiB write
    ASSERT_EQ(a.cqe.status, 0) << "namespace " << nsid;
    const auto after = read(nsid, 0, 2048);
    const auto seed = u8(test::pattern(0, 4096, nsid == 1 ? 5 : 6));
    EXPECT_TRUE(std::equal(after.begin(), after.begin() + 4096, seed.begin()));
    EXPECT_TRUE(std::all_of(after.begin() + 4096, after.end(), [](uint8_t b) { return b == 0; }));
  }
  const auto tail = read(1, 2064, 8);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), before1.begin() + 2064 * 512))
      << "a byte past the range changed";
  Sqe id{};
  id.opcode = admin::kIdentify;
  id.cdw10 = kCnsController;
  Answer c = run(*admin, id, {}, 4096);
  ASSERT_EQ(c.cqe.status, 0);
  EXPECT_TRUE(get<uint16_t>(c.data, idctrl::kOncs) & idctrl::kOncsWriteZeroes);
  EXPECT_EQ(run(*io, io_cmd(io::kWriteZeroes, 1, 4095, 2)).code(), status::kLbaOutOfRange);
}

// A Copy the device refuses as malformed fails with its status and is not emulated; one it
// cannot offload is emulated.
TEST_F(ControllerTest, AMalformedCopyFailsAndAnUnoffloadableOneIsEmulated) {
  start({"mem:1M,seed=7,fail=copy:1:EINVAL", "mem:1M,seed=8,fail=copy:1:EOPNOTSUPP:every"});
  CopyRange0 r{};
  r.slba = 0;
  r.nlb = 7;
  std::vector<uint8_t> range(sizeof r);
  std::memcpy(range.data(), &r, sizeof r);
  Sqe c = io_cmd(io::kCopy, 1, 1024, 1);
  c.cdw12 = 0;  // one range, format 0
  Answer bad = run(*io, c, range);
  EXPECT_EQ(bad.code(), status::kInvalidField);
  EXPECT_TRUE(bad.dnr());
  const auto dst1 = read(1, 1024, 8);
  EXPECT_EQ(dst1, std::vector<uint8_t>(u8(test::pattern(1024 * 512, 4096, 7))))
      << "the malformed copy was emulated";
  c.nsid = 2;
  Answer ok = run(*io, c, range);
  EXPECT_EQ(ok.cqe.status, 0);
  EXPECT_EQ(read(2, 1024, 8), u8(test::pattern(0, 4096, 8)));
  const TargetStats s = target->stats();
  EXPECT_EQ(s.copy_emulated_bytes, 4096u);
}

// Emulated Copies draw 1 MiB buffers from the copy budget; with the smallest budget (16 MiB, a
// 2 MiB share per queue) many large copies in flight wait for room and all finish right.
TEST_F(ControllerTest, EmulatedCopiesShareTheCopyBudget) {
  TargetLimits l;
  l.copy_budget = 16u << 20;
  start({"mem:64M,seed=9,nocopy"}, l);
  const auto original = u8(test::pattern(0, 64u << 20, 9));
  constexpr int kCopies = 16;
  std::vector<Answer> answers(kCopies);
  std::vector<std::vector<uint8_t>> ranges(kCopies);
  for (int i = 0; i < kCopies; ++i) {
    CopyRange0 r{};
    r.slba = uint64_t(i) * 4096;  // 2 MiB each from the first 32 MiB
    r.nlb = 4095;
    ranges[i].resize(sizeof r);
    std::memcpy(ranges[i].data(), &r, sizeof r);
    Sqe c = io_cmd(io::kCopy, 1, 65536 + uint64_t(i) * 4096, 1);
    c.cdw12 = 0;
    submit(*io, c, ranges[i], 0, &answers[i]);
  }
  ASSERT_TRUE(loop->run_until([&] {
    return std::all_of(answers.begin(), answers.end(), [](const Answer& a) { return a.done; });
  }).ok());
  for (const Answer& a : answers) EXPECT_EQ(a.cqe.status, 0);
  const TargetStats s = target->stats();
  EXPECT_LE(s.copy_budget_high, 2u << 20) << "one queue holds at most an eighth";
  EXPECT_GT(s.copy_budget_high, 0u);
  EXPECT_EQ(s.copy_budget_used, 0u);
  EXPECT_EQ(s.copy_emulated_bytes, uint64_t(kCopies) * (2u << 20));
  for (int i = 0; i < kCopies; i += 5) {
    const auto got = read(1, 65536 + uint64_t(i) * 4096, 64);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), original.begin() + uint64_t(i) * (2u << 20)))
        << "copy " << i;
  }
}

// A queue's data buffers count in the data budget: a command beyond the queue's share waits
// for room (it does not fail), and runs once the one ahead of it has given its buffer back.
TEST_F(ControllerTest, ACommandBeyondTheDataShareWaitsAndThenRuns) {
  TargetLimits l;
  l.data_budget = 16u << 20;  // 2 MiB per queue: one 1 MiB read (a 1 MiB buffer) at a time
  start({"mem:8M,seed=3"}, l);
  std::vector<Answer> reads(6);
  for (size_t i = 0; i < reads.size(); ++i) {
    submit(*io, io_cmd(io::kRead, 1, i * 2048, 2048), {}, 1 << 20, &reads[i]);
  }
  EXPECT_GT(target->stats().budget_waits, 0u);
  ASSERT_TRUE(loop->run_until([&] {
    return std::all_of(reads.begin(), reads.end(), [](const Answer& a) { return a.done; });
  }).ok());
  const auto all = u8(test::pattern(0, 8u << 20, 3));
  for (size_t i = 0; i < reads.size(); ++i) {
    ASSERT_EQ(reads[i].cqe.status, 0);
    EXPECT_TRUE(std::equal(reads[i].data.begin(), reads[i].data.end(), all.begin() + i * (1 << 20)));
  }
  EXPECT_LE(target->stats().data_budget_high, 2u << 20);
  EXPECT_EQ(target->stats().data_budget_used, 0u);
}

TEST(TargetConfigTest, BudgetsAreSetInTheJsonAndCheckedForTheirLeast) {
  auto cfg = parse_nvmetcli_json(R"({"blkcopy": {"data_budget": "64M", "copy_budget": 33554432,
                                                  "drain_ms": 2500, "max_connections": 7}})");
  ASSERT_TRUE(cfg) << cfg.error().message();
  EXPECT_EQ(cfg->limits.data_budget, 64u << 20);
  EXPECT_EQ(cfg->limits.copy_budget, 32u << 20);
  EXPECT_EQ(cfg->limits.drain_ms, 2500u);
  EXPECT_EQ(cfg->limits.max_connections, 7u);
  auto small = parse_nvmetcli_json(R"({"blkcopy": {"copy_budget": "1M"}})");
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().message().find("blkcopy.copy_budget"), std::string::npos)
      << small.error().message();
  auto typo = parse_nvmetcli_json(R"({"blkcopy": {"data_budgets": "1G"}})");
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().message().find("blkcopy.data_budgets: unknown key"), std::string::npos)
      << typo.error().message();
  auto bad = parse_nvmetcli_json(R"({"blkcopy": {"data_budget": "lots"}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("expected a size"), std::string::npos);
}

// A pooled request keeps what a short Copy needs, not what the longest Copy a host sent did:
// otherwise every request of every queue could hold 256 ranges' worth of memory no budget counts.
TEST(TargetRequestPool, ALongCopysVectorsAreFreedWhenTheRequestGoesBack) {
  TargetRequest r;
  auto fill = [&r](size_t n) {
    r.ranges.resize(n);
    r.range_ns.resize(n);
    r.range_bytes.resize(n);
    r.copy.sources.resize(n);
    r.report.not_supported.resize(n);
  };
  fill(256);
  r.reset();
  EXPECT_TRUE(r.ranges.empty());
  EXPECT_LE(r.ranges.capacity(), TargetRequest::kKeptRanges);
  EXPECT_LE(r.range_ns.capacity(), TargetRequest::kKeptRanges);
  EXPECT_LE(r.range_bytes.capacity(), TargetRequest::kKeptRanges);
  EXPECT_LE(r.copy.sources.capacity(), TargetRequest::kKeptRanges);
  EXPECT_LE(r.report.not_supported.capacity(), TargetRequest::kKeptRanges);
  fill(4);  // a short Copy's room stays: no allocation for it next time
  const auto* kept = r.ranges.data();
  r.reset();
  r.ranges.resize(4);
  EXPECT_EQ(r.ranges.data(), kept);
}

}  // namespace
}  // namespace blkcopy
