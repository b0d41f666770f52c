// The copy engine: copy(src, src_off, dst, dst_off, len) and vectored copy_ranges(), done the
// cheapest way the devices allow.
//
// - Validates first (alignment to every device's logical block size, bounds, zero length, a
//   read-only destination, option values); nothing is written when validation fails.
// - Splits by the destination's copy limits, offloads what the devices accept and emulates the
//   pieces they answer "not supported" with pipelined reads and writes in bounded memory.
// - A single range whose source and destination overlap on one device behaves like memmove.
//   A vectored copy with a source overlapping the destination is rejected.
// - On failure, `bytes` counts what is known copied, in processing order from the start. No byte
//   outside the destination range is written and the source is never written. When a read
//   fails, nothing after the reported progress is written either. When a write or an offloaded
//   copy fails, destination bytes after the progress may hold source data from pieces that
//   were in flight, as after a torn write.
#pragma once

#include <blkcopy/device.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace blkcopy {

enum class Emulation {
  allow,  // offload where possible, emulate the rest
  never,  // offload only: a piece that cannot be offloaded fails the copy with EOPNOTSUPP
  force,  // emulate everything (read into host memory, write back)
};

// Memory for emulation shared by many copies (a target's copy budget): a copy takes a chunk's
// buffer before reading it and gives it back after writing it, so that the copies together
// never hold more than the source allows.
class CopyBuffers {
 public:
  virtual ~CopyBuffers() = default;
  // A page-aligned buffer of `bytes`, or nullptr when there is no room now; then `retry` runs
  // once, later, on the loop, when there may be (the copy asks again).
  virtual std::byte* take(uint64_t bytes, std::function<void()> retry) = 0;
  virtual void give(std::byte* buf, uint64_t bytes) = 0;
};

struct CopyOptions {
  Emulation emulation = Emulation::allow;
  uint64_t buffer_bytes = 64u << 20;  // most host memory emulation may use
  // Where emulation's buffers come from: its own, at most buffer_bytes (nullptr, the default),
  // or this shared source (still at most buffer_bytes for this copy). Must outlive the copy.
  CopyBuffers* buffers = nullptr;
  // Bytes per emulated read and write. 4 MiB matched the disk's largest request here
  // (max_sectors_kb) and beat 1 MiB by ~15% in bench/.
  uint64_t chunk_bytes = 4u << 20;
  unsigned max_copies_in_flight = 8;  // offloaded copy commands at once
  // Fill CopyResult::offloaded_by_device (a list of names, which allocates); callers that keep
  // totals only (the NVMe/TCP target) turn it off.
  bool per_device = true;
  // Say why bytes were emulated (CopyResult::emulated_because). It costs a string, and for a
  // copy emulated from the start a describe(): a target that counts totals only turns it off.
  bool explain_emulation = true;
  // Called on the loop each time the in-order progress advances.
  std::function<void(uint64_t done, uint64_t total)> progress;
  // When it turns true (a signal handler may set it), no more work is issued: the copy ends
  // with ECANCELED once the work in flight is done, and `bytes` is the exact progress. It is
  // looked at whenever a request completes.
  const std::atomic<bool>* cancel = nullptr;
};

struct CopyResult {
  Status status;         // ok, or the first failure in processing order
  bool invalid = false;  // validation failed: nothing was read or written
  uint64_t bytes = 0;    // copied, in processing order from the start
  bool backward = false;  // an overlapping copy walked from the end: `bytes` are the last ones
  // Of `bytes`, how many the devices copied and how many went through host memory: the two
  // add up to `bytes`, also after a failure (work done beyond the progress is not counted).
  uint64_t offloaded_bytes = 0;
  uint64_t emulated_bytes = 0;
  uint64_t host_read_bytes = 0;
  uint64_t host_written_bytes = 0;
  uint64_t commands = 0;  // requests submitted to devices
  double seconds = 0;
  // Offloaded bytes per bottom device (through a stack, the children that did the work).
  std::vector<std::pair<std::string, uint64_t>> offloaded_by_device;
  // Why bytes were emulated (the first reason: a device's refusal, limits that cannot take
  // the copy, a destination that cannot offload); empty when nothing was.
  std::string emulated_because;
};

// Asynchronous copy of the sources, laid end to end, to dst at dst_offset. Either fails at once
// (returns the validation error; `done` never runs) or returns ok and `done` runs exactly once
// on dst's loop. All devices must share that loop.
Status copy_async(std::vector<CopySegment> sources, Device& dst, uint64_t dst_offset,
                  const CopyOptions& options, std::function<void(CopyResult)> done);
// The same without giving up a vector: a copy that is one offloaded piece costs no allocation
// of the engine's. `sources` is read during the call only.
Status copy_async(std::span<const CopySegment> sources, Device& dst, uint64_t dst_offset,
                  const CopyOptions& options, std::function<void(CopyResult)> done);

// Blocking wrappers: run the destination's loop until the copy ends.
CopyResult copy(Device& src, uint64_t src_offset, Device& dst, uint64_t dst_offset,
                uint64_t length, const CopyOptions& options = {});
CopyResult copy_ranges(std::span<const CopySegment> sources, Device& dst, uint64_t dst_offset,
                       const CopyOptions& options = {});

}  // namespace blkcopy
