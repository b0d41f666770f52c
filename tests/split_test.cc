// Splitting copies by limits, exhaustively over small layouts and limits (no I/O).
#include "block/split.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

constexpr uint64_t B = 512;

QueueLimits limits(uint64_t max_bytes, uint64_t seg_max, uint32_t segs) {
  QueueLimits l;
  l.capacity = 1u << 30;
  l.copy_max_hw_bytes = max_bytes;
  l.copy_max_bytes = max_bytes;
  l.copy_segment_max_bytes = seg_max;
  l.copy_max_src_segments = segs;
  return l;
}

class SplitTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> loop = test::make_loop();
  std::unique_ptr<Device> a = test::open_dev(*loop, "mem:1M,nodata");
  std::unique_ptr<Device> b = test::open_dev(*loop, "mem:1M,nodata");
  std::unique_ptr<Device> dst = test::open_dev(*loop, "mem:1M,nodata");
};

// Checks that the pieces tile the copy in order, map every logical byte to the right source
// byte, respect the limits, and are as large as the limits allow (greedy).
void check_split(const CopyLayout& layout, const QueueLimits& l, uint64_t dst_off) {
  const PieceCaps caps = piece_caps(l, B);
  auto pieces = split_copy(layout, l, B, UINT64_MAX);
  ASSERT_FALSE(pieces.empty());
  uint64_t pos = 0;
  for (const CopyDesc& p : pieces) {
    ASSERT_EQ(p.dst.offset, dst_off + pos);
    ASSERT_GT(p.dst.length, 0u);
    ASSERT_LE(p.dst.length, caps.max_bytes);
    ASSERT_LE(p.sources.size(), caps.max_segments);
    uint64_t sum = 0;
    for (const CopySegment& s : p.sources) {
      ASSERT_GT(s.length, 0u);
      ASSERT_LE(s.length, caps.segment_max);
      ASSERT_EQ(s.length % B, 0u);
      // The segment's first byte is the source byte of logical position pos + sum.
      CopyDesc one = layout.extent(pos + sum, s.length);
      ASSERT_EQ(one.sources[0].dev, s.dev);
      ASSERT_EQ(one.sources[0].offset, s.offset);
      ASSERT_EQ(one.sources[0].length, s.length) << "segment crosses a source boundary";
      sum += s.length;
    }
    ASSERT_EQ(sum, p.dst.length);
    pos += p.dst.length;
    // Greedy: a piece ends at the end of the copy, at the byte limit, or with all segments used.
    const bool at_end = pos == layout.length();
    const bool full_bytes = p.dst.length + B > caps.max_bytes;
    const bool full_segs = p.sources.size() == caps.max_segments;
    ASSERT_TRUE(at_end || full_bytes || full_segs);
  }
  ASSERT_EQ(pos, layout.length());
}

TEST_F(SplitTest, ExhaustiveOverSmallLayoutsAndLimits) {
  Device* devs[] = {a.get(), b.get()};
  int cases = 0;
  // Layouts: 1 to 3 sources of 1 to 4 blocks, alternating devices, with gaps between them.
  for (int nsrc = 1; nsrc <= 3; ++nsrc) {
    for (int mask = 0; mask < (1 << (2 * nsrc)); ++mask) {
      std::vector<CopySegment> srcs;
      uint64_t off = 0;
      for (int i = 0; i < nsrc; ++i) {
        const uint64_t len = (((mask >> (2 * i)) & 3) + 1) * B;
        srcs.push_back({devs[i % 2], off + 7 * B, len});
        off += len + 3 * B;
      }
      for (uint64_t mb = 1; mb <= 9; ++mb) {
        for (uint64_t sm = 1; sm <= 5; ++sm) {
          for (uint32_t segs = 1; segs <= 4; ++segs) {
            CopyLayout layout(srcs, dst.get(), 100 * B);
            SCOPED_TRACE(testing::Message() << "sources " << nsrc << " mask " << mask << " max "
                                            << mb << " seg " << sm << " segs " << segs);
            check_split(layout, limits(mb * B, sm * B, segs), 100 * B);
            if (HasFatalFailure()) return;
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, (4 + 16 + 64) * 9 * 5 * 4);
}

TEST_F(SplitTest, LimitsAreRoundedDownToTheGranule) {
  CopyLayout layout({{a.get(), 0, 64 * B}}, dst.get(), 0);
  const QueueLimits l = limits(8 * B + 100, 3 * B + 1, 4);
  const PieceCaps caps = piece_caps(l, B);
  EXPECT_EQ(caps.max_bytes, 8 * B);
  EXPECT_EQ(caps.segment_max, 3 * B);
  auto pieces = split_copy(layout, l, 4096, UINT64_MAX);  // granule 4096 > segment cap
  EXPECT_TRUE(pieces.empty()) << "a 1.5 KiB segment limit cannot carry 4 KiB blocks";
}

TEST_F(SplitTest, NoOffloadWhenAnyCopyLimitIsZero) {
  CopyLayout layout({{a.get(), 0, 8 * B}}, dst.get(), 0);
  for (QueueLimits l : {limits(0, 8 * B, 4), limits(8 * B, 0, 4), limits(8 * B, 8 * B, 0)}) {
    EXPECT_TRUE(layout.piece(0, UINT64_MAX, l, B).sources.empty());
  }
  QueueLimits user_off = limits(8 * B, 8 * B, 4);
  user_off.copy_max_bytes = 0;  // the writable limit turns offload off
  EXPECT_TRUE(layout.piece(0, UINT64_MAX, user_off, B).sources.empty());
}

TEST_F(SplitTest, MaxLenCapsPiecesForOverlap) {
  CopyLayout layout({{a.get(), 0, 10 * B}}, dst.get(), 3 * B);
  auto pieces = split_copy(layout, limits(64 * B, 64 * B, 4), B, 3 * B);
  ASSERT_EQ(pieces.size(), 4u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(pieces[i].dst.length, 3 * B);
  EXPECT_EQ(pieces[3].dst.length, B);
}

TEST_F(SplitTest, BackwardLayoutWalksFromTheEnd) {
  // memmove of [0, 10) to [3, 13) blocks: pieces of 3 blocks from the end.
  CopyLayout layout({{a.get(), 0, 10 * B}}, a.get(), 3 * B, /*backward=*/true);
  auto pieces = split_copy(layout, limits(64 * B, 64 * B, 4), B, 3 * B);
  ASSERT_EQ(pieces.size(), 4u);
  const uint64_t want_src[] = {7 * B, 4 * B, 1 * B, 0};
  const uint64_t want_len[] = {3 * B, 3 * B, 3 * B, B};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(pieces[i].sources[0].offset, want_src[i]);
    EXPECT_EQ(pieces[i].dst.offset, want_src[i] + 3 * B);
    EXPECT_EQ(pieces[i].dst.length, want_len[i]);
  }
}

TEST_F(SplitTest, ExtentStopsAtSourceBoundaries) {
  CopyLayout layout({{a.get(), 0, 2 * B}, {b.get(), 10 * B, 3 * B}}, dst.get(), 0);
  CopyDesc e = layout.extent(B, 100 * B);
  EXPECT_EQ(e.sources[0].dev, a.get());
  EXPECT_EQ(e.sources[0].offset, B);
  EXPECT_EQ(e.dst.length, B);
  e = layout.extent(2 * B, 2 * B);
  EXPECT_EQ(e.sources[0].dev, b.get());
  EXPECT_EQ(e.sources[0].offset, 10 * B);
  EXPECT_EQ(e.dst.offset, 2 * B);
  EXPECT_EQ(e.dst.length, 2 * B);
}

}  // namespace
}  // namespace blkcopy
