// Device stacking: bad tables, limits, routing, copies through stacks, faults mid-copy.
#include "stack/dm_device.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::Bytes;
constexpr uint64_t K = 1024;

class DmTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> loop = test::make_loop();
  test::TempDir dir;

  std::string table(const std::string& name, const std::string& text) {
    const std::string p = (dir.path() / name).string();
    std::ofstream(p) << text;
    return p;
  }
  Result<std::unique_ptr<Device>> open(const std::string& name, const std::string& text) {
    return open_device(*loop, "dm:" + table(name, text));
  }
};

TEST_F(DmTest, BadTablesAreRejectedWithTheirMessage) {
  table("a.table", "0 8 linear dm:b.table 0\n");
  table("b.table", "0 8 linear dm:a.table 0\n");
  const std::pair<std::string, std::string> cases[] = {
      {"0 8 linear mem:1M 0\n16 8 linear mem:1M 16\n", "a gap of 8 sectors"},
      {"0 16 linear mem:1M 0\n8 8 linear mem:1M 16\n", "entries overlap"},
      {"0 4096 linear mem:1M 0\n", "mem:1M is too small"},
      {"0 8 linear mem:1M 2047\n", "mem:1M is too small"},
      {"0 64 striped 2 0 mem:1M 0 mem:1M,seed=1 0\n", "bad chunk size 0"},
      {"0 100 striped 2 8 mem:1M 0 mem:1M,seed=1 0\n", "bad chunk size 8"},
      {"0 64 striped 2 8 mem:1M 0\n", "needs 2 DEV OFFSET pairs"},
      {"0 8 mirror mem:1M 0\n", "unknown target 'mirror'"},
      {"0 8 linear dm:a.table 0\n", "table loop"},
      {"0 8 linear mem:1M\n", "linear takes DEV OFFSET"},
      {"0 8 error extra\n", "error takes no arguments"},
      {"0 x linear mem:1M 0\n", "length 'x' is not a number"},
      {"0 0 linear mem:1M 0\n", "length is 0"},
      {"# nothing\n\n", "the table has no entries"},
      {"0 8\n", "expected START LENGTH TARGET"},
      {"0 8 linear mem:1M,block=4k 1\n", "not aligned to the logical block size 4096"},
      {"0 8 flakey mem:1M 0 explode=read:1\n", "expected fail=... or delay=..."},
      {"0 8 flakey mem:1M 0 fail=frob:1\n", "unknown request type 'frob'"},
      {"0 8 linear nosuch:thing 0\n", "unknown device type 'nosuch'"},
  };
  int i = 0;
  for (const auto& [text, msg] : cases) {
    auto d = open("bad" + std::to_string(i++) + ".table", text);
    ASSERT_FALSE(d) << text;
    EXPECT_NE(d.error().message().find(msg), std::string::npos)
        << text << "-> " << d.error().message();
  }
  auto missing = open_device(*loop, "dm:" + (dir.path() / "none.table").string());
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("cannot read table"), std::string::npos);
}

TEST_F(DmTest, LimitsAreTheMinimumOfTheChildren) {
  auto d = open("t", "0 2048 linear mem:1M,copy_max=256k,segment_max=64k,max_segments=8 0\n"
                     "2048 2048 linear mem:2M,block=4k,copy_max=128k,max_segments=16 0\n")
               .value();
  const QueueLimits& l = d->limits();
  EXPECT_EQ(l.capacity, 2u << 20);
  EXPECT_EQ(l.logical_block_size, 4096u);
  EXPECT_EQ(l.copy_max_hw_bytes, 128 * K);
  EXPECT_EQ(l.copy_segment_max_bytes, 64 * K);
  EXPECT_EQ(l.copy_max_src_segments, 8u);
  auto n = open("n", "0 2048 linear mem:1M 0\n2048 2048 linear mem:1M,nocopy 0\n").value();
  EXPECT_EQ(n->limits().copy_max_hw_bytes, 0u) << "a child without copy turns offload off";
  EXPECT_NE(n->describe().copy_method.find("none"), std::string::npos);
  auto s = open("s", "0 4096 striped 4 16 mem:1M 0 mem:1M,seed=1 0 mem:1M,seed=2 0 "
                     "mem:1M,seed=3 0\n")
               .value();
  EXPECT_EQ(s->limits().copy_max_hw_bytes, 8 * K) << "the chunk bounds a piece";
  EXPECT_EQ(s->limits().copy_segment_max_bytes, 8 * K);
  auto ro = open("r", "0 8 linear mem:1M,ro 0\n").value();
  EXPECT_TRUE(ro->limits().read_only);
}

TEST_F(DmTest, StripedMappingFollowsDmStriped) {
  auto d = open("s", "0 64 striped 2 8 mem:1M 0 mem:1M,seed=1 16\n").value();
  auto& dm = static_cast<DmDevice&>(*d);
  const auto& legs = dm.targets()[0].legs;
  // Chunks of 4 KiB alternate between the stripes: chunk 3 is the second chunk of stripe 2.
  Mapped m = dm.map(3 * 4 * K + 100 * 512 % (4 * K), 64 * K);
  EXPECT_EQ(m.dev, legs[1].dev);
  EXPECT_EQ(m.offset, 16 * 512 + 4 * K + 100 * 512 % (4 * K));
  EXPECT_EQ(m.length, 4 * K - 100 * 512 % (4 * K)) << "stops at the chunk's end";
  m = dm.map(4 * 4 * K, 64 * K);
  EXPECT_EQ(m.dev, legs[0].dev);
  EXPECT_EQ(m.offset, 2 * 4 * K);
}

TEST_F(DmTest, IoIsRoutedAcrossTargetsErrorAndZero) {
  auto d = open("t", "0 16 linear mem:1M,seed=1 0\n16 16 zero\n32 16 linear mem:1M,seed=2 64\n"
                     "48 16 error\n")
               .value();
  Bytes want = test::pattern(0, 8 * K, 1);
  Bytes zero(8 * K);
  want.insert(want.end(), zero.begin(), zero.end());
  Bytes second = test::pattern(32 * K, 8 * K, 2);
  want.insert(want.end(), second.begin(), second.end());
  EXPECT_EQ(test::read_bytes(*d, 0, 24 * K), want);
  Bytes buf(32 * K);
  Status s = read_sync(*d, 0, buf);
  EXPECT_EQ(s.code(), EIO);
  EXPECT_NE(s.message().find("error target on line 4"), std::string::npos) << s.message();
  Bytes data = test::pattern(0, 20 * K, 9);
  test::write_bytes(*d, 2 * K, data);  // spans linear, zero and linear
  Bytes got = test::read_bytes(*d, 0, 24 * K);
  EXPECT_EQ(0, std::memcmp(got.data() + 2 * K, data.data(), 6 * K));
  EXPECT_EQ(Bytes(got.begin() + 8 * K, got.begin() + 16 * K), zero) << "zero target writes vanish";
  EXPECT_EQ(0, std::memcmp(got.data() + 16 * K, data.data() + 14 * K, 6 * K));
  EXPECT_TRUE(submit_and_wait(*d, Request{Op::flush}).ok());
  EXPECT_TRUE(submit_and_wait(*d, Request{Op::write_zeroes, 0, 4 * K}).ok());
  EXPECT_EQ(test::read_bytes(*d, 0, 4 * K), Bytes(4 * K));
}

TEST_F(DmTest, CopyAcrossATargetBoundaryIsSplitNotFailed) {
  // The kernel patches failed this with an I/O error; here each side is offloaded on its child.
  const std::string m = "mem:1M,seed=5";
  auto d = open("t", "0 256 linear " + m + " 0\n256 256 linear " + m + " 1024\n").value();
  const Bytes before = test::read_bytes(*d, 0, 256 * K);
  CopyResult r = copy(*d, 64 * K, *d, 160 * K, 96 * K);  // destination crosses the boundary
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 96 * K) << "both targets lie on one mem device";
  EXPECT_EQ(r.emulated_bytes, 0u);
  Bytes want = before;
  std::memcpy(want.data() + 160 * K, before.data() + 64 * K, 96 * K);
  EXPECT_EQ(test::read_bytes(*d, 0, 256 * K), want);
}

TEST_F(DmTest, StripedCopyOffloadsWithinStripesAndEmulatesAcross) {
  auto d = open("s", "0 2048 striped 4 16 mem:1M,seed=1 0 mem:1M,seed=2 0 mem:1M,seed=3 0 "
                     "mem:1M,seed=4 0\n")
               .value();
  const Bytes before = test::read_bytes(*d, 0, 1024 * K);
  // Shift by 4 chunks: every chunk lands on its own stripe again, one row down.
  CopyResult r = copy(*d, 0, *d, 4 * 8 * K, 256 * K);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 256 * K);
  EXPECT_EQ(r.offloaded_by_device.size(), 4u);
  // Shift by one chunk: every chunk moves to the next stripe, so nothing can be offloaded.
  CopyResult e = copy(*d, 512 * K, *d, 512 * K + 8 * K, 128 * K);
  ASSERT_TRUE(e.status.ok());
  EXPECT_EQ(e.offloaded_bytes, 0u);
  EXPECT_EQ(e.emulated_bytes, 128 * K);
  Bytes want = before;
  std::memmove(want.data() + 32 * K, before.data(), 256 * K);
  std::memmove(want.data() + 520 * K, want.data() + 512 * K, 128 * K);
  EXPECT_EQ(test::read_bytes(*d, 0, 1024 * K), want);
}

TEST_F(DmTest, FlakeyTargetFailsMidCopyWithExactProgress) {
  auto d = open("f", "0 2048 flakey mem:1M,seed=7,copy_max=64k 0 fail=copy:3\n").value();
  const Bytes before = test::pattern(0, 1024 * K, 7);  // what mem:1M,seed=7 holds
  CopyOptions one_at_a_time;
  one_at_a_time.max_copies_in_flight = 1;
  CopyResult r = copy(*d, 0, *d, 512 * K, 320 * K, one_at_a_time);
  EXPECT_EQ(r.status.code(), EIO);
  EXPECT_NE(r.status.message().find("flakey target (line 1) failed copy #3"), std::string::npos)
      << r.status.message();
  EXPECT_EQ(r.bytes, 128 * K);
  Bytes want = before;
  std::memcpy(want.data() + 512 * K, before.data(), 128 * K);
  EXPECT_EQ(test::read_bytes(*d, 0, 1024 * K), want) << "nothing after the progress, nothing "
                                                        "outside the destination";
}

TEST_F(DmTest, FlakeyDelayOnlySlowsDown) {
  auto d = open("f", "0 2048 flakey mem:1M,seed=8 0 delay=read:1:2ms:every\n").value();
  EXPECT_EQ(test::read_bytes(*d, 4 * K, 8 * K), test::pattern(4 * K, 8 * K, 8));
}

TEST_F(DmTest, InfoShowsTheTreeOfChildren) {
  table("inner.table", "0 2048 linear mem:1M,seed=1 0\n");
  const std::string outer = table("outer.table", "0 2048 linear dm:inner.table 0\n2048 8 error\n");
  auto r = test::run_cli({"info", "dm:" + outer});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("- sectors 0+2048 linear at 0: dm:" + (dir.path() / "inner.table").string()),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("    - sectors 0+2048 linear at 0: mem:1M,seed=1"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("- sectors 2048+8 error"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace blkcopy
