#include "block/split.h"

#include <algorithm>
#include <cassert>

namespace blkcopy {

namespace {
uint64_t align_down(uint64_t v, uint64_t a) { return v - v % a; }
}  // namespace

PieceCaps piece_caps(const QueueLimits& l, uint32_t granule) {
  if (!l.can_offload()) return {0, 0, 0};
  const uint64_t max_bytes = std::min(l.copy_max_bytes, l.copy_max_hw_bytes);
  return {align_down(max_bytes, granule), align_down(l.copy_segment_max_bytes, granule),
          l.copy_max_src_segments};
}

CopyLayout::CopyLayout(std::vector<CopySegment> sources, Device* dst, uint64_t dst_offset,
                       bool backward)
    : sources_(std::move(sources)), dst_(dst), dst_offset_(dst_offset), backward_(backward) {
  assert(!sources_.empty());
  assert(!backward_ || sources_.size() == 1);
  starts_.reserve(sources_.size() + 1);
  uint64_t at = 0;
  for (const CopySegment& s : sources_) {
    starts_.push_back(at);
    at += s.length;
  }
  starts_.push_back(at);
}

size_t CopyLayout::segment_at(uint64_t pos) const {
  auto it = std::upper_bound(starts_.begin(), starts_.end() - 1, pos);
  return static_cast<size_t>(it - starts_.begin()) - 1;
}

CopyDesc CopyLayout::extent(uint64_t pos, uint64_t max_len) const {
  CopyDesc d;
  if (backward_) {
    const uint64_t n = std::min(max_len, length() - pos);
    const uint64_t phys = length() - pos - n;
    d.sources.push_back({sources_[0].dev, sources_[0].offset + phys, n});
    d.dst = {dst_, dst_offset_ + phys, n};
    return d;
  }
  const size_t i = segment_at(pos);
  const uint64_t within = pos - starts_[i];
  const uint64_t n = std::min(max_len, sources_[i].length - within);
  d.sources.push_back({sources_[i].dev, sources_[i].offset + within, n});
  d.dst = {dst_, dst_offset_ + pos, n};
  return d;
}

CopyDesc CopyLayout::piece(uint64_t pos, uint64_t max_len, const QueueLimits& limits,
                           uint32_t granule) const {
  const PieceCaps caps = piece_caps(limits, granule);
  uint64_t budget = align_down(std::min({max_len, caps.max_bytes, length() - pos}), granule);
  CopyDesc d;
  if (budget == 0 || caps.segment_max == 0) return d;
  if (backward_) return extent(pos, std::min(budget, caps.segment_max));

  uint64_t at = pos;
  for (size_t i = segment_at(pos); i < sources_.size() && budget > 0; ++i) {
    if (d.sources.size() == caps.max_segments) break;
    const uint64_t within = at - starts_[i];
    // A segment cut short by the budget or the segment cap ends the piece on a granule.
    uint64_t n = std::min({sources_[i].length - within, caps.segment_max, budget});
    d.sources.push_back({sources_[i].dev, sources_[i].offset + within, n});
    at += n;
    budget -= n;
    if (at < starts_[i + 1]) {
      // The segment cap split this source: the rest starts a new segment if one is allowed.
      --i;
    }
  }
  d.dst = {dst_, dst_offset_ + pos, at - pos};
  return d;
}

std::vector<CopyDesc> split_copy(const CopyLayout& layout, const QueueLimits& limits,
                                 uint32_t granule, uint64_t max_piece) {
  std::vector<CopyDesc> pieces;
  for (uint64_t pos = 0; pos < layout.length();) {
    CopyDesc d = layout.piece(pos, max_piece, limits, granule);
    if (d.sources.empty()) return {};
    pos += d.dst.length;
    pieces.push_back(std::move(d));
  }
  return pieces;
}

}  // namespace blkcopy
