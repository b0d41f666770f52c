// Splitting copies by queue limits: pure functions of the copy and the limits, no I/O.
#pragma once

#include <blkcopy/device.h>

#include <cstdint>
#include <vector>

namespace blkcopy {

// The logical view of one copy: its sources laid end to end map onto [0, length()) of the
// destination. A backward layout (memmove with the destination after the source on one device)
// is walked from the end: logical [p, p + n) is physical [length - p - n, length - p).
class CopyLayout {
 public:
  // REQUIRES: sources non-empty with non-zero lengths; backward only with one source.
  CopyLayout(std::vector<CopySegment> sources, Device* dst, uint64_t dst_offset,
             bool backward = false);

  uint64_t length() const { return starts_.back(); }
  bool backward() const { return backward_; }
  const std::vector<CopySegment>& sources() const { return sources_; }

  // The copy of logical [pos, pos + n) where n is the largest length <= max_len that fits the
  // limits (copy_max_bytes, copy_segment_max_bytes, copy_max_src_segments) with every cut a
  // multiple of `granule`. An empty `sources` means no such piece exists (limits too small).
  CopyDesc piece(uint64_t pos, uint64_t max_len, const QueueLimits& limits,
                 uint32_t granule) const;

  // The part of logical [pos, pos + max_len) that lies in one source segment, as a copy with a
  // single source (used to emulate: one read, one write).
  CopyDesc extent(uint64_t pos, uint64_t max_len) const;

 private:
  size_t segment_at(uint64_t pos) const;  // index of the source holding logical byte pos

  std::vector<CopySegment> sources_;
  std::vector<uint64_t> starts_;  // starts_[i] = logical start of sources_[i]; back() = length
  Device* dst_;
  uint64_t dst_offset_;
  bool backward_;
};

// Every piece of a whole copy, in processing order (for tests and stacking drivers).
std::vector<CopyDesc> split_copy(const CopyLayout& layout, const QueueLimits& limits,
                                 uint32_t granule, uint64_t max_piece);

// The limits of a copy piece in bytes, rounded down to the granule.
struct PieceCaps {
  uint64_t max_bytes;
  uint64_t segment_max;
  uint32_t max_segments;
};
PieceCaps piece_caps(const QueueLimits& limits, uint32_t granule);

}  // namespace blkcopy
