// The engine's short ways for a copy that is one request or one chunk, without CopyRun's
// bookkeeping (its ordered sets and per-unit objects cost more than a small copy itself). Their
// state is pooled per thread: such a copy allocates nothing once warm.
#pragma once

#include <blkcopy/copy.h>

#include <functional>
#include <span>

namespace blkcopy::engine {

// What copy_async worked out for a copy it has validated.
struct Plan {
  Device* dst = nullptr;
  uint64_t dst_offset = 0;
  uint64_t total = 0;
  uint32_t granule = 0;
  uint64_t chunk = 0;     // bytes per emulated read and write
  bool backward = false;  // memmove order (an overlapping copy)
  uint64_t piece_cap = UINT64_MAX;  // longest offloaded piece (the overlap distance)
};

// The general walk (engine.cc): every case, at the cost of its bookkeeping.
void run_general(std::span<const CopySegment> sources, const Plan& p, const CopyOptions& opt,
                 std::function<void(CopyResult)> done);

// Whether the whole copy fits one offloaded piece of the destination (its limits).
bool one_piece(std::span<const CopySegment> sources, const Plan& p);
// One copy request. What the device does not take in full ("not supported", or a stack's
// report of parts it could not take) is emulated afterwards: the ranges do not overlap, so
// copying the offloaded part again changes nothing. REQUIRES: one_piece(), no overlap.
void run_one_piece(std::span<const CopySegment> sources, const Plan& p, const CopyOptions& opt,
                   std::function<void(CopyResult)> done);

// Whether the copy may be emulated as one read and one write: one source, no overlap, within
// one chunk, emulation allowed and not cancelled.
bool one_chunk(std::span<const CopySegment> sources, const Plan& p, const CopyOptions& opt);
// One read into a buffer (its own, or one from opt.buffers, waiting for room), then one write.
// `commands` counts requests already made for this copy. REQUIRES: one_chunk().
void run_one_chunk(const CopySegment& src, const Plan& p, const CopyOptions& opt,
                   uint64_t commands, std::function<void(CopyResult)> done);

}  // namespace blkcopy::engine
