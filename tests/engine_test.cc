// The copy engine: validation, offload, emulation, memmove order, vectored copies, faults.
// Every check compares with the ORIGINAL contents kept aside before the copy.
#include <blkcopy/copy.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "drivers/mem/mem_device.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::Bytes;
constexpr uint64_t K = 1024;
constexpr uint64_t M = 1024 * 1024;

class EngineTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> loop = test::make_loop();
  std::unique_ptr<Device> open(const std::string& spec) { return test::open_dev(*loop, spec); }
  static Bytes all(Device& d) { return test::read_bytes(d, 0, d.limits().capacity); }
  static CopyOptions small_chunks(Emulation e = Emulation::allow) {
    CopyOptions o;
    o.emulation = e;
    o.chunk_bytes = 64 * K;
    o.buffer_bytes = 256 * K;
    return o;
  }
};

// Expects `got` to equal `before` with [dst, dst + src.size()) replaced by src.
void expect_copied(const Bytes& got, const Bytes& before, uint64_t dst, const Bytes& src) {
  Bytes want = before;
  std::memcpy(want.data() + dst, src.data(), src.size());
  ASSERT_EQ(got.size(), want.size());
  for (uint64_t i = 0; i < got.size(); i += 512) {
    ASSERT_EQ(std::memcmp(got.data() + i, want.data() + i, 512), 0) << "first difference in the "
                                                                       "block at byte "
                                                                    << i;
  }
}

TEST_F(EngineTest, OffloadsWithinAMemDevice) {
  auto d = open("mem:8M,seed=1,copy_max=1M");
  const Bytes before = all(*d);
  CopyResult r = copy(*d, 0, *d, 4 * M, 3 * M + 512);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.bytes, 3 * M + 512);
  EXPECT_EQ(r.offloaded_bytes, 3 * M + 512);
  EXPECT_EQ(r.emulated_bytes, 0u);
  EXPECT_EQ(r.host_read_bytes + r.host_written_bytes, 0u);
  EXPECT_EQ(r.commands, 4u) << "split by copy_max_bytes";
  expect_copied(all(*d), before, 4 * M, Bytes(before.begin(), before.begin() + 3 * M + 512));
}

TEST_F(EngineTest, EmulatesBetweenDevicesInBoundedChunks) {
  auto a = open("mem:4M,seed=1");
  auto b = open("mem:4M,seed=2");
  const Bytes src = all(*a), dst_before = all(*b);
  CopyResult r = copy(*a, 512 * K, *b, 1 * M, 2 * M, small_chunks());
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 0u);
  EXPECT_EQ(r.emulated_bytes, 2 * M);
  EXPECT_EQ(r.host_read_bytes, 2 * M);
  EXPECT_EQ(r.host_written_bytes, 2 * M);
  expect_copied(all(*b), dst_before, 1 * M, Bytes(src.begin() + 512 * K, src.begin() + 2560 * K));
  EXPECT_EQ(all(*a), src) << "the source is never written";
}

TEST_F(EngineTest, ForceEmulationEvenWhereOffloadWorks) {
  auto d = open("mem:4M,seed=3");
  const Bytes before = all(*d);
  CopyResult r = copy(*d, 0, *d, 2 * M, M, small_chunks(Emulation::force));
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.offloaded_bytes, 0u);
  EXPECT_EQ(r.emulated_bytes, M);
  EXPECT_EQ(r.commands, 2 * M / (64 * K)) << "one read and one write per 64 KiB chunk";
  expect_copied(all(*d), before, 2 * M, Bytes(before.begin(), before.begin() + M));
}

TEST_F(EngineTest, NoEmulationFailsWithNotSupportedAndWritesNothing) {
  auto a = open("mem:1M,seed=1");
  auto b = open("mem:1M,seed=2");
  const Bytes before = all(*b);
  CopyResult r = copy(*a, 0, *b, 0, 64 * K, small_chunks(Emulation::never));
  EXPECT_EQ(r.status.code(), EOPNOTSUPP);
  EXPECT_FALSE(r.invalid);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_EQ(all(*b), before);
  auto n = open("mem:1M,seed=3,nocopy");
  r = copy(*n, 0, *n, 512 * K, 64 * K, small_chunks(Emulation::never));
  EXPECT_EQ(r.status.code(), EOPNOTSUPP);
  EXPECT_NE(r.status.message().find("emulation is off"), std::string::npos);
}

// A copy that fits one offload piece goes to the device as one request; when the device answers
// "not supported" the full engine takes the copy from the start and emulates it.
TEST_F(EngineTest, OnePieceCopyIsOneRequestAndFallsBackWhenRefused) {
  auto d = open("mem:2M,seed=6");
  const Bytes before = all(*d);
  CopyResult r = copy(*d, 0, *d, M, 64 * K);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.commands, 1u);
  EXPECT_EQ(r.offloaded_bytes, 64 * K);
  ASSERT_EQ(r.offloaded_by_device.size(), 1u);
  EXPECT_EQ(r.offloaded_by_device[0].second, 64 * K);
  expect_copied(all(*d), before, M, Bytes(before.begin(), before.begin() + 64 * K));

  auto f = open("mem:2M,seed=7,fail=copy:1:EOPNOTSUPP");
  const Bytes fb = all(*f);
  r = copy(*f, 0, *f, M, 64 * K, small_chunks());
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes + r.emulated_bytes, 64 * K);
  EXPECT_GE(r.commands, 2u) << "the refused request, then the engine's own";
  expect_copied(all(*f), fb, M, Bytes(fb.begin(), fb.begin() + 64 * K));
}

// A copy of one source that fits one chunk, emulated: one read, then one write (the engine's
// short way), with exact counts, and after a fault nothing more.
TEST_F(EngineTest, ACopyOfOneChunkIsOneReadAndOneWriteAndStopsAtAFault) {
  auto d = open("mem:2M,seed=9,nocopy");
  const Bytes before = all(*d);
  CopyResult r = copy(*d, 4 * K, *d, M, 64 * K);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.commands, 2u);
  EXPECT_EQ(r.bytes, 64 * K);
  EXPECT_EQ(r.emulated_bytes, 64 * K);
  EXPECT_EQ(r.host_read_bytes, 64 * K);
  EXPECT_EQ(r.host_written_bytes, 64 * K);
  expect_copied(all(*d), before, M, Bytes(before.begin() + 4 * K, before.begin() + 68 * K));

  for (const char* fault : {"read:1", "write:1"}) {
    auto f = open(std::string("mem:2M,seed=10,nocopy,fail=") + fault);
    // Straight from memory: a read through the device would meet the fault.
    auto memory = [&] {
      const std::byte* p = static_cast<MemDevice&>(*f).data();
      return Bytes(p, p + f->limits().capacity);
    };
    const Bytes fb = memory();
    r = copy(*f, 0, *f, M, 64 * K);
    EXPECT_NE(r.status.message().find("injected fault"), std::string::npos) << r.status.message();
    EXPECT_EQ(r.bytes, 0u) << fault;
    EXPECT_EQ(r.emulated_bytes, 0u) << fault;
    EXPECT_EQ(r.host_written_bytes, 0u) << fault;
    EXPECT_EQ(r.commands, fault[0] == 'r' ? 1u : 2u) << fault;
    if (fault[0] == 'r') {
      EXPECT_EQ(memory(), fb) << "written after a failed read";
    }
  }
}

// A copy the device fails (here: calls malformed) is a failure, never emulated instead: only a
// report's not_supported ranges are.
TEST_F(EngineTest, ACopyTheDeviceFailsIsNotEmulated) {
  auto f = open("mem:2M,seed=8,fail=copy:1:EINVAL");
  const Bytes before = all(*f);
  CopyResult r = copy(*f, 0, *f, M, 64 * K, small_chunks());
  EXPECT_EQ(r.status.code(), EINVAL) << r.status.message();
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_EQ(r.emulated_bytes, 0u);
  EXPECT_EQ(r.host_written_bytes, 0u);
  EXPECT_EQ(all(*f), before) << "nothing written";
}

TEST_F(EngineTest, UserCopyLimitZeroMeansEmulate) {
  auto d = open("mem:2M,seed=4");
  ASSERT_TRUE(d->set_copy_max_bytes(0).ok());
  const Bytes before = all(*d);
  CopyResult r = copy(*d, 0, *d, M, 256 * K, small_chunks());
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.offloaded_bytes, 0u);
  EXPECT_EQ(r.emulated_bytes, 256 * K);
  expect_copied(all(*d), before, M, Bytes(before.begin(), before.begin() + 256 * K));
}

TEST_F(EngineTest, VectoredCopySplitsBySegmentLimits) {
  auto d = open("mem:4M,seed=5,copy_max=256k,segment_max=64k,max_segments=3");
  const Bytes before = all(*d);
  std::vector<CopySegment> srcs{{d.get(), 0, 100 * K}, {d.get(), 512 * K, 4 * K},
                                {d.get(), 256 * K, 200 * K}, {d.get(), 1 * M, 8 * K}};
  CopyResult r = copy_ranges(srcs, *d, 2 * M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 312 * K);
  Bytes want;
  for (auto& s : srcs) want.insert(want.end(), before.begin() + s.offset, before.begin() + s.offset + s.length);
  expect_copied(all(*d), before, 2 * M, want);
  // Segments 64+36 | 4+60 ... : more commands than the 2 the byte limit alone would need.
  EXPECT_GT(r.commands, 2u);
}

TEST_F(EngineTest, VectoredCopyMixesDevicesAndEmulatesTheForeignPieces) {
  auto a = open("mem:2M,seed=6");
  auto b = open("mem:2M,seed=7,copy_max=64k");
  const Bytes src_a = all(*a), before = all(*b);
  std::vector<CopySegment> srcs{{b.get(), 0, 64 * K}, {a.get(), 64 * K, 64 * K},
                                {b.get(), 128 * K, 64 * K}};
  CopyResult r = copy_ranges(srcs, *b, M, small_chunks());
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 128 * K);
  EXPECT_EQ(r.emulated_bytes, 64 * K);
  Bytes want(before.begin(), before.begin() + 64 * K);
  want.insert(want.end(), src_a.begin() + 64 * K, src_a.begin() + 128 * K);
  want.insert(want.end(), before.begin() + 128 * K, before.begin() + 192 * K);
  expect_copied(all(*b), before, M, want);
  EXPECT_EQ(all(*a), src_a);
}

struct OverlapCase {
  uint64_t src, dst, len;
  Emulation mode;
};

void PrintTo(const OverlapCase& c, std::ostream* os) {
  *os << c.src << "->" << c.dst << " len " << c.len << (c.mode == Emulation::force ? " emulated" : "");
}

class OverlapTest : public EngineTest, public ::testing::WithParamInterface<OverlapCase> {};

TEST_P(OverlapTest, BehavesLikeMemmove) {
  const OverlapCase c = GetParam();
  auto d = open("mem:2M,seed=8,copy_max=32k,jitter=300us");
  Bytes want = all(*d);
  std::memmove(want.data() + c.dst, want.data() + c.src, c.len);
  CopyOptions o = small_chunks(c.mode);
  o.chunk_bytes = 16 * K;
  CopyResult r = copy(*d, c.src, *d, c.dst, c.len, o);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.bytes, c.len);
  EXPECT_EQ(r.backward, c.dst > c.src);
  EXPECT_EQ(all(*d), want);
}

INSTANTIATE_TEST_SUITE_P(
    Engine, OverlapTest,
    ::testing::Values(OverlapCase{0, 4 * K, 200 * K, Emulation::allow},     // forward, offload
                      OverlapCase{4 * K, 0, 200 * K, Emulation::allow},     // backward, offload
                      OverlapCase{0, 512, 100 * K, Emulation::allow},       // one block apart
                      OverlapCase{0, 40 * K, 200 * K, Emulation::force},    // gap > chunk
                      OverlapCase{40 * K, 0, 200 * K, Emulation::force},
                      OverlapCase{0, 3 * K, 300 * K, Emulation::force},     // gap < chunk
                      OverlapCase{3 * K, 0, 300 * K, Emulation::force},
                      OverlapCase{64 * K, 64 * K, 64 * K, Emulation::allow}));  // onto itself

TEST_F(EngineTest, ValidationErrorsNameTheProblemAndWriteNothing) {
  auto d = open("mem:1M,seed=9,block=4k");
  auto ro = open("mem:1M,ro");
  auto small = open("mem:64k");
  const Bytes before = all(*d);
  struct Case {
    std::vector<CopySegment> srcs;
    Device* dst;
    uint64_t dst_off;
    int code;
    const char* msg;
  };
  const Case cases[] = {
      {{{d.get(), 0, 0}}, d.get(), 0, EINVAL, "zero length"},
      {{{d.get(), 512, 4 * K}}, d.get(), 64 * K, EINVAL, "offset 512 is not a multiple of the "
                                                         "logical block size 4096"},
      {{{d.get(), 0, 4 * K}}, d.get(), 1000, EINVAL, "offset 1000 is not a multiple"},
      {{{d.get(), 0, 6 * K}}, d.get(), 64 * K, EINVAL, "length 6144 is not a multiple"},
      {{{d.get(), M - 4 * K, 8 * K}}, d.get(), 0, ERANGE, "beyond the end"},
      {{{d.get(), 0, 8 * K}}, d.get(), M - 4 * K, ERANGE, "destination range"},
      {{{d.get(), UINT64_MAX - 4095, 4 * K}}, d.get(), 0, ERANGE, "beyond the end"},
      {{{d.get(), 0, 4 * K}}, ro.get(), 0, EROFS, "read-only"},
      {{{d.get(), 0, 4 * K}, {d.get(), 60 * K, 8 * K}}, d.get(), 64 * K, EINVAL,
       "source range 2 [61440, 69632) overlaps the destination"},
      {{{d.get(), 0, 4 * K}, {d.get(), 2 * M, 4 * K}}, d.get(), 64 * K, ERANGE,
       "source range 2 [2097152, 2101248) is beyond the end"},
      {{{d.get(), 0, 128 * K}}, small.get(), 0, ERANGE, "beyond the end of mem:64k"},
      {{}, d.get(), 0, EINVAL, "no source ranges"},
  };
  for (const Case& c : cases) {
    bool called = false;
    Status s = copy_async(c.srcs, *c.dst, c.dst_off, {}, [&](CopyResult) { called = true; });
    EXPECT_EQ(s.code(), c.code) << c.msg << " -> " << s.message();
    EXPECT_NE(s.message().find(c.msg), std::string::npos) << s.message();
    EXPECT_FALSE(called);
  }
  auto other_loop = test::make_loop();
  auto elsewhere = test::open_dev(*other_loop, "mem:1M");
  std::vector<CopySegment> many(65537, CopySegment{d.get(), 0, 4 * K});
  const Case more[] = {
      {{{nullptr, 0, 4 * K}}, d.get(), 0, EINVAL, "source range without a device"},
      {{{elsewhere.get(), 0, 4 * K}}, d.get(), 0, EINVAL, "different event loops"},
      {many, d.get(), 0, EINVAL, "65537 source ranges: at most 65536"},
  };
  for (const Case& c : more) {
    Status s = copy_async(c.srcs, *c.dst, c.dst_off, {}, [](CopyResult) {});
    EXPECT_EQ(s.code(), c.code) << s.message();
    EXPECT_NE(s.message().find(c.msg), std::string::npos) << s.message();
  }
  CopyOptions none_in_flight;
  none_in_flight.max_copies_in_flight = 0;
  EXPECT_NE(copy(*d, 0, *d, 64 * K, 4 * K, none_in_flight).status.message().find("at least 1"),
            std::string::npos);
  CopyOptions tiny;
  tiny.buffer_bytes = 512;
  CopyResult r = copy(*d, 0, *d, 64 * K, 4 * K, tiny);
  EXPECT_TRUE(r.invalid);
  EXPECT_NE(r.status.message().find("at least one block"), std::string::npos);
  EXPECT_EQ(all(*d), before);
}

TEST_F(EngineTest, GranuleIsTheLargestBlockSizeInTheCopy) {
  auto a = open("mem:1M,seed=1,block=512");
  auto b = open("mem:1M,block=4k");
  CopyResult r = copy(*a, 512, *b, 0, 4 * K);
  EXPECT_TRUE(r.invalid);
  EXPECT_NE(r.status.message().find("4096 (of mem:1M,seed=1,block=512 and the other devices"),
            std::string::npos)
      << r.status.message();
}

// Fault injection: the nth request fails. Progress is exact; the source and everything outside
// the destination are untouched; after a read fault, nothing beyond the progress is written.
struct FaultCase {
  std::string fault;  // on the device that sees it
  bool on_source;     // else on the destination
  Emulation mode;
  uint64_t unit;      // bytes per request of the failing type
  uint64_t nth;
  bool beyond_untouched;
};

void PrintTo(const FaultCase& c, std::ostream* os) { *os << "fail=" << c.fault; }

class FaultTest : public EngineTest, public ::testing::WithParamInterface<FaultCase> {
 protected:
  // Straight from the device's memory: reading through the device would count as a request.
  static Bytes snapshot(Device& d) {
    auto* p = static_cast<MemDevice&>(d).data();
    return Bytes(p, p + d.limits().capacity);
  }
};

// Shared emulation buffers (as the target's copy budget lends them) that count what is out.
struct CountedBuffers final : CopyBuffers {
  std::byte* take(uint64_t bytes, std::function<void()>) override {
    ++out;
    return static_cast<std::byte*>(std::aligned_alloc(4096, bytes));
  }
  void give(std::byte* buf, uint64_t) override {
    --out;
    std::free(buf);
  }
  int out = 0;
};

TEST_P(FaultTest, ReportsExactProgress) {
  const FaultCase c = GetParam();
  const bool same_dev = c.mode == Emulation::allow;
  // Jitter makes completions come back out of order, as on real devices.
  const std::string common = ",jitter=300us";
  auto a = open("mem:2M,seed=11,copy_max=64k" + common +
                (c.on_source || same_dev ? ",fail=" + c.fault : ""));
  auto b_owned =
      same_dev ? nullptr : open("mem:2M,seed=12" + common + (c.on_source ? "" : ",fail=" + c.fault));
  Device& dst = same_dev ? *a : *b_owned;
  const uint64_t src_off = 0, dst_off = same_dev ? M : 256 * K, len = 640 * K;
  const Bytes src_before = snapshot(*a), dst_before = snapshot(dst);

  std::vector<uint64_t> progress;
  CopyOptions o = small_chunks(c.mode);
  o.progress = [&](uint64_t done, uint64_t) { progress.push_back(done); };
  CountedBuffers buffers;
  o.buffers = &buffers;
  CopyResult r = copy(*a, src_off, dst, dst_off, len, o);
  EXPECT_EQ(buffers.out, 0) << "buffers of chunks read beyond the failure were not given back";
  ASSERT_FALSE(r.status.ok());
  EXPECT_FALSE(r.invalid);
  EXPECT_NE(r.status.message().find("injected fault"), std::string::npos) << r.status.message();
  EXPECT_EQ(r.bytes, (c.nth - 1) * c.unit);
  // Pieces in flight may finish after the failure; they are not counted as copied.
  EXPECT_EQ(r.offloaded_bytes + r.emulated_bytes, r.bytes);
  if (!progress.empty()) {
    EXPECT_EQ(progress.back(), r.bytes);
  }
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));

  const Bytes src_after = snapshot(*a), dst_after = snapshot(dst);
  if (!same_dev) {
    EXPECT_EQ(src_after, src_before) << "source written";
  }
  const Bytes src(src_before.begin() + src_off, src_before.begin() + src_off + len);
  for (uint64_t i = 0; i < dst_after.size(); i += 512) {
    const std::byte* got = dst_after.data() + i;
    const bool inside = i >= dst_off && i < dst_off + len;
    if (!inside) {
      ASSERT_EQ(std::memcmp(got, dst_before.data() + i, 512), 0) << "outside, byte " << i;
    } else if (i - dst_off < r.bytes) {
      ASSERT_EQ(std::memcmp(got, src.data() + (i - dst_off), 512), 0) << "copied, byte " << i;
    } else if (c.beyond_untouched) {
      ASSERT_EQ(std::memcmp(got, dst_before.data() + i, 512), 0) << "beyond progress, " << i;
    } else {  // old data or source data: never anything else
      ASSERT_TRUE(std::memcmp(got, dst_before.data() + i, 512) == 0 ||
                  std::memcmp(got, src.data() + (i - dst_off), 512) == 0)
          << "beyond progress, byte " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Engine, FaultTest,
    ::testing::Values(FaultCase{"read:1", true, Emulation::force, 64 * K, 1, true},
                      FaultCase{"read:4", true, Emulation::force, 64 * K, 4, true},
                      FaultCase{"read:9:ENOSPC", true, Emulation::force, 64 * K, 9, true},
                      FaultCase{"write:1", false, Emulation::force, 64 * K, 1, false},
                      FaultCase{"write:6", false, Emulation::force, 64 * K, 6, false},
                      FaultCase{"copy:1", false, Emulation::allow, 64 * K, 1, false},
                      FaultCase{"copy:7", false, Emulation::allow, 64 * K, 7, false}));

TEST_F(EngineTest, FileToFileOffloadAndFileToMemEmulation) {
  test::TempDir dir;
  auto f = test::open_dev(*loop, "file:" + dir.file("a", 4 * M, 21) + ",kernelcopy");
  auto g = test::open_dev(*loop, "file:" + dir.file("b", 4 * M, 22) + ",kernelcopy");
  auto m = open("mem:4M,seed=23");
  const Bytes fa = all(*f), gb = all(*g), mm = all(*m);
  CopyResult r = copy(*f, M, *g, 2 * M, M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, M);
  expect_copied(all(*g), gb, 2 * M, Bytes(fa.begin() + M, fa.begin() + 2 * M));
  r = copy(*f, 0, *m, 512 * K, 3 * M, small_chunks());
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.emulated_bytes, 3 * M);
  expect_copied(all(*m), mm, 512 * K, Bytes(fa.begin(), fa.begin() + 3 * M));
  EXPECT_EQ(all(*f), fa);
}

TEST_F(EngineTest, OverlapOnTheSameFileOpenedTwice) {
  test::TempDir dir;
  const std::string p = dir.file("a", 2 * M, 31);
  auto a = test::open_dev(*loop, p);
  auto b = test::open_dev(*loop, "file:" + p);
  Bytes want = all(*a);
  std::memmove(want.data() + 4 * K, want.data(), M);
  CopyResult r = copy(*a, 0, *b, 4 * K, M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_TRUE(r.backward);
  EXPECT_EQ(all(*a), want);
}

}  // namespace
}  // namespace blkcopy
