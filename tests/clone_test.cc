// The clone target: reads through to the source until hydrated, writes to the destination,
// hydration in the background with concurrent I/O checked against a model, and resuming after
// the device or the whole process is dropped mid-hydration.
#include "stack/clone.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>

#include "stack/dm_device.h"
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::Bytes;
constexpr uint64_t K = 1024, M = 1024 * 1024;

class CloneTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> loop = test::make_loop();
  test::TempDir dir;

  std::string table(const std::string& text) {
    const std::string p = (dir.path() / ("t" + std::to_string(n_++) + ".table")).string();
    std::ofstream(p) << text;
    return "dm:" + p;
  }
  static CloneDevice& clone_of(Device& d) { return *static_cast<DmDevice&>(d).clones()[0]; }

 private:
  int n_ = 0;
};

TEST_F(CloneTest, BadCloneEntriesAreNamed) {
  const std::pair<std::string, std::string> cases[] = {
      {"0 2048 clone mem:1M,seed=1 mem:1M 128\n", "is too small: 1048576 bytes, the target "
                                                  "needs 1048576 for data and 512 for its "
                                                  "metadata"},
      {"0 2048 clone mem:512k mem:2M 128\n", "clone source mem:512k is too small"},
      {"0 2048 clone mem:1M mem:2M 0\n", "region size 0 must be a non-zero multiple"},
      {"0 2048 clone mem:1M mem:2M,block=4k 1\n", "must be a non-zero multiple of the block "
                                                  "size 4096"},
      {"0 2048 clone mem:1M mem:2M 128 sometimes\n", "unknown clone option 'sometimes'"},
      {"0 2048 clone mem:1M mem:2M\n", "clone takes SOURCE DEST REGION_SIZE"},
  };
  for (const auto& [text, msg] : cases) {
    auto d = open_device(*loop, table(text));
    ASSERT_FALSE(d) << text;
    EXPECT_NE(d.error().message().find(msg), std::string::npos) << text << d.error().message();
  }
  // Opening a clone writes nothing until it has hydrated something: not when a later line of
  // the table is refused, not for a look at its status.
  const std::string dst = dir.file("dst", 2 * M, 7);
  const Bytes before = test::read_file(dst, 0, 2 * M);
  auto refused = open_device(*loop, table("0 2048 clone mem:1M,seed=1 " + dst + " 128\n"
                                          "2048 1 linear mem:1M,block=4k 0\n"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("not aligned"), std::string::npos) << refused.error().message();
  { auto d = open_device(*loop, table("0 2048 clone mem:1M,seed=1 " + dst + " 128\n")).value(); }
  EXPECT_EQ(test::read_file(dst, 0, 2 * M), before) << "a clone that hydrated nothing wrote";
  // Metadata written for one region size is not taken for another.
  {
    auto d = open_device(*loop, table("0 2048 clone mem:1M,seed=1 " + dst + " 128\n")).value();
    Bytes region(64 * K, std::byte{9});
    ASSERT_TRUE(write_sync(*d, 0, region).ok());  // a whole region: hydrated, committed on close
  }
  auto again = open_device(*loop, table("0 2048 clone mem:1M,seed=1 " + dst + " 256\n"));
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("in regions of 65536, the table says 1048576 in "
                                         "regions of 131072"),
            std::string::npos)
      << again.error().message();
}

TEST_F(CloneTest, ReadsThroughWritesHydrateTheirRegionFirst) {
  auto d = open_device(*loop, table("0 2048 clone mem:1M,seed=3 mem:2M 128\n")).value();
  CloneDevice& c = clone_of(*d);
  const Bytes source = test::pattern(0, M, 3);
  EXPECT_EQ(test::read_bytes(*d, 0, M), source) << "nothing hydrated: the source shows through";
  Bytes data(4 * K, std::byte{0x5a});
  test::write_bytes(*d, 64 * K + 8 * K, data);  // part of region 1
  EXPECT_EQ(c.status().copied, 1u) << "a partial write copies its region first";
  Bytes whole = test::pattern(0, 64 * K, 77);
  test::write_bytes(*d, 5 * 64 * K, whole);  // all of region 5: no copy needed
  EXPECT_EQ(c.status().copied, 1u);
  EXPECT_EQ(c.status().hydrated, 2u);
  Bytes want = source;
  std::memcpy(want.data() + 72 * K, data.data(), data.size());
  std::memcpy(want.data() + 320 * K, whole.data(), whole.size());
  EXPECT_EQ(test::read_bytes(*d, 0, M), want);
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::flush}).ok());
  EXPECT_EQ(c.status().durable, 2u) << "a flush commits the metadata";
}

TEST_F(CloneTest, AReadDuringAWholeRegionWriteNeverSeesTheDestinationsOldBytes) {
  // DEST holds other data (seed 4) and is slow, so the read overtakes the write.
  auto d = open_device(*loop, table("0 2048 clone mem:1M,seed=3 mem:2M,seed=4,latency=5ms 128\n"))
               .value();
  Bytes whole = test::pattern(0, 64 * K, 99);
  bool written = false;
  d->submit(Request{Op::write, 128 * K, 64 * K, whole.data()}, [&](Status s) {
    EXPECT_TRUE(s.ok());
    written = true;
  });
  const Bytes during = test::read_bytes(*d, 128 * K, 64 * K);
  EXPECT_TRUE(during == test::pattern(128 * K, 64 * K, 3) || during == whole)
      << "old (source) or new data, nothing else";
  ASSERT_TRUE(loop->run_until([&] { return written; }).ok());
  EXPECT_EQ(test::read_bytes(*d, 128 * K, 64 * K), whole);
  EXPECT_EQ(clone_of(*d).status().copied, 0u);
}

// Hydration runs in the background while random reads and writes go on; every read is checked
// against the model (the original source plus the writes done so far).
TEST_F(CloneTest, HydrationWithConcurrentIoMatchesTheModel) {
  auto d = open_device(*loop, table("0 4096 clone mem:2M,seed=5,latency=200us mem:3M,jitter=100us "
                                    "64 inflight=3\n"))
               .value();
  CloneDevice& c = clone_of(*d);
  Bytes model = test::pattern(0, 2 * M, 5);
  c.start_hydration();
  std::mt19937_64 rng(42);
  auto pick = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); };
  int reads_during_hydration = 0;
  for (int i = 0; i < 200; ++i) {
    const uint64_t len = 512 * pick(1, 200);
    const uint64_t off = 512 * pick(0, (2 * M - len) / 512);
    if (pick(0, 2) == 0) {
      Bytes data = test::pattern(off, len, 1000 + i);
      test::write_bytes(*d, off, data);
      std::memcpy(model.data() + off, data.data(), len);
    } else {
      reads_during_hydration += c.status().hydrated < c.status().regions;
      Bytes got = test::read_bytes(*d, off, len);
      ASSERT_EQ(0, std::memcmp(got.data(), model.data() + off, len)) << "read " << i;
    }
  }
  EXPECT_GT(reads_during_hydration, 10) << "the test should overlap hydration";
  ASSERT_TRUE(c.hydrate_all().ok());
  EXPECT_EQ(c.status().hydrated, c.status().regions);
  EXPECT_EQ(test::read_bytes(*d, 0, 2 * M), model);
  // Two different mem devices share no copy domain: hydration was emulated.
  EXPECT_EQ(c.status().offloaded_bytes, 0u);
  EXPECT_GT(c.status().emulated_bytes, 0u);
}

TEST_F(CloneTest, HydrationIsOffloadedWhenSourceAndDestinationShareACopyDomain) {
  const std::string src = dir.file("src", 4 * M, 9), dst = dir.file("dst", 5 * M);
  auto d = open_device(*loop, table("0 8192 clone file:" + src + ",kernelcopy file:" + dst +
                                    ",kernelcopy 512\n"))
               .value();
  CloneDevice& c = clone_of(*d);
  ASSERT_TRUE(c.hydrate_all().ok());
  EXPECT_EQ(c.status().offloaded_bytes, 4 * M) << "copy_file_range between the two files";
  EXPECT_EQ(c.status().emulated_bytes, 0u);
  EXPECT_EQ(test::read_file(dst, 0, 4 * M), test::pattern(0, 4 * M, 9));
  EXPECT_EQ(test::read_file(src, 0, 4 * M), test::pattern(0, 4 * M, 9)) << "source unchanged";
}

TEST_F(CloneTest, ResumesAfterTheDeviceIsDroppedWithoutCopyingAgain) {
  const std::string src = dir.file("src", 4 * M, 11), dst = dir.file("dst", 5 * M);
  const std::string t = table("0 8192 clone " + src + " " + dst + " 128 inflight=2\n");
  uint64_t first = 0;
  {
    auto d = open_device(*loop, t).value();
    CloneDevice& c = clone_of(*d);
    c.start_hydration();
    ASSERT_TRUE(loop->run_until([&] { return c.status().copied >= 10; }).ok());
  }  // dropped mid-hydration: copies in flight finish and are committed
  auto d = open_device(*loop, t).value();
  CloneDevice& c = clone_of(*d);
  first = c.status().durable;
  EXPECT_GE(first, 10u);
  EXPECT_LT(first, c.status().regions);
  ASSERT_TRUE(c.hydrate_all().ok());
  EXPECT_EQ(c.status().copied, c.status().regions - first) << "no region copied twice";
  EXPECT_EQ(test::read_bytes(*d, 0, 4 * M), test::pattern(0, 4 * M, 11));
}

TEST_F(CloneTest, ResumesAfterTheProcessIsKilled) {
  const std::string src = dir.file("src", 4 * M, 13), dst = dir.file("dst", 5 * M);
  const unsigned in_flight = 2;
  const std::string t =
      table("0 8192 clone " + src + " " + dst + " 128 inflight=2 rate=4M\n");  // ~60 ms a region
  int progress[2], go_on[2];
  ASSERT_EQ(pipe(progress), 0);
  ASSERT_EQ(pipe(go_on), 0);
  const pid_t pid = fork();
  if (pid == 0) {  // the process that will be killed mid-hydration
    auto l = EventLoop::create().value();
    auto d = open_device(*l, t).value();
    (void)clone_of(*d).hydrate_all([&](uint64_t n, uint64_t) {
      if (write(progress[1], &n, sizeof n) != sizeof n) _exit(1);
      if (n >= 12) {  // stop here, holding the loop, until the parent kills us
        char c;
        (void)!read(go_on[0], &c, 1);
      }
    });
    _exit(0);
  }
  uint64_t seen = 0;
  while (seen < 12 && read(progress[0], &seen, sizeof seen) == sizeof seen) {
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_GE(seen, 12u);

  auto d = open_device(*loop, t).value();
  CloneDevice& c = clone_of(*d);
  const uint64_t durable = c.status().durable;
  EXPECT_LE(durable, seen);
  // Only the regions in flight (and those waiting for their metadata commit) are copied again.
  EXPECT_GE(durable + 2 * in_flight, seen);
  ASSERT_TRUE(c.hydrate_all().ok());
  EXPECT_EQ(c.status().copied, c.status().regions - durable);
  EXPECT_EQ(test::read_bytes(*d, 0, 4 * M), test::pattern(0, 4 * M, 13));
  EXPECT_EQ(test::read_file(src, 0, 4 * M), test::pattern(0, 4 * M, 13)) << "source unchanged";
}

TEST_F(CloneTest, CliShowsStatusAndHydrates) {
  const std::string src = dir.file("src", 4 * M, 15), dst = dir.file("dst", 5 * M);
  const std::string t =
      table("0 8192 clone file:" + src + ",kernelcopy file:" + dst + ",kernelcopy 256\n");
  auto r = test::run_cli({"clone", "status", t});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("0 of 32 regions hydrated (0.0%)"), std::string::npos) << r.out;
  r = test::run_cli({"clone", "hydrate", t, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0]["hydrated"], 32);
  EXPECT_EQ(j[0]["durable"], 32);
  EXPECT_EQ(j[0]["offloaded_bytes"], 4 * M);
  EXPECT_EQ(test::read_file(dst, 0, 4 * M), test::pattern(0, 4 * M, 15));
  r = test::run_cli({"clone", "status", "mem:1M"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("has no clone target"), std::string::npos);
}

// Issue 19, item 9: two clones hydrating one destination overwrote each other's bitmap.
TEST_F(CloneTest, ADestinationHasOneCloneAtATime) {
  const std::string src = dir.file("src", 1 * M, 17), dst = dir.file("dst", 2 * M);
  const std::string a = table("0 2048 clone " + src + " " + dst + " 128\n");
  auto first = open_device(*loop, a);
  ASSERT_TRUE(first) << first.error().message();
  // The same destination again, under another table, the same table, or inside a dm stack.
  const std::string inner = table("0 4096 linear " + dst + " 0\n");
  for (const std::string& t : {table("0 2048 clone mem:1M " + dst + " 128\n"), a,
                               table("0 2048 clone " + src + " " + inner + " 128\n")}) {
    auto again = open_device(*loop, t);
    ASSERT_FALSE(again) << t;
    EXPECT_EQ(again.error().code(), EBUSY);
    EXPECT_NE(again.error().message().find("clone destination " + dst + " is in use by this "
                                           "process (the same storage under another device "
                                           "string or table): a destination takes one clone"),
              std::string::npos)
        << again.error().message();
  }
  const std::string shared = dir.file("shared", 4 * M);  // one table, two clones onto one file
  auto twice = open_device(*loop, table("0 2048 clone mem:1M " + shared + " 128\n"
                                        "2048 2048 clone mem:1M " + shared + " 128\n"));
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message().find("is in use by clone(line 1)"), std::string::npos)
      << twice.error().message();
  // A source is only read: two clones may share it.
  const std::string other = dir.file("other", 2 * M);
  auto sharing = open_device(*loop, table("0 2048 clone " + src + " " + other + " 128\n"));
  EXPECT_TRUE(sharing) << sharing.error().message();
  // Closed, the destination is free again; nothing was hydrated by the refused opens.
  first->reset();
  auto reopened = open_device(*loop, a);
  ASSERT_TRUE(reopened) << reopened.error().message();
  EXPECT_EQ(clone_of(**reopened).status().hydrated, 0u);
  EXPECT_EQ(test::read_file(dst, 0, 1 * M), Bytes(1 * M));
}

}  // namespace
}  // namespace blkcopy

namespace blkcopy {
namespace {

// The case: `clone hydrate` while another process (here, this test; there, `serve`)
// has the clone open is refused with the holder named, and hydrates nothing.
TEST(CloneCli, ASecondProcessIsRefusedWithTheHolderNamed) {
  test::TempDir dir;
  const std::string src = dir.file("src", 1 << 20, 18), dst = dir.file("dst", 2 << 20);
  const std::string t = (dir.path() / "clone.table").string();
  std::ofstream(t) << "0 2048 clone " << src << " " << dst << " 128\n";
  auto loop = test::make_loop();
  auto held = open_device(*loop, "dm:" + t);
  ASSERT_TRUE(held) << held.error().message();
  auto r = test::run_cli({"clone", "hydrate", "dm:" + t});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(dst + " is in use by pid " + std::to_string(getpid()) + " ("),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("blkcopy_tests"), std::string::npos) << r.err;
  EXPECT_EQ(static_cast<DmDevice&>(**held).clones()[0]->status().hydrated, 0u);
  EXPECT_EQ(test::read_file(dst, 0, 1 << 20), test::Bytes(1 << 20)) << "nothing hydrated";
  held->reset();
  r = test::run_cli({"clone", "hydrate", "dm:" + t});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(dst, 0, 1 << 20), test::pattern(0, 1 << 20, 18));
}

TEST(CloneCli, HydrationStoppedBySignalKeepsWhatItCopied) {
  test::TempDir dir;
  const std::string src = dir.file("src", 4 << 20, 16), dst = dir.file("dst", 5 << 20);
  // Every request to DEST takes 150 ms: the 32 regions need over a second.
  const std::string slow = (dir.path() / "slow.table").string();
  std::ofstream(slow) << "0 10240 flakey " << dst << " 0 delay=any:1:150ms:every\n";
  const std::string t = (dir.path() / "clone.table").string();
  std::ofstream(t) << "0 8192 clone " << src << " dm:" << slow << " 256\n";
  const std::string dev = "dm:" + t;
  auto r = test::run_cli({"clone", "hydrate", dev, "--json"}, SIGINT, 100, [&] {
    return test::read_file(dst, 0, 4096) != test::Bytes(4096);  // the first region landed
  });
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << r.err;
  EXPECT_NE(r.err.find("hydration interrupted with"), std::string::npos) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0]["interrupted"], true);
  const uint64_t durable = j[0]["durable"];
  EXPECT_GT(durable, 0u);
  EXPECT_LT(durable, 32u);
  // Hydrating again finishes the job; the data is the source's.
  r = test::run_cli({"clone", "hydrate", dev, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)[0]["hydrated"], 32);
  EXPECT_EQ(test::read_file(dst, 0, 4 << 20), test::pattern(0, 4 << 20, 16));
}

}  // namespace
}  // namespace blkcopy
