// Devices, queue limits and requests: the block layer's contract with drivers.
#pragma once

#include <blkcopy/event_loop.h>
#include <blkcopy/status.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace blkcopy {

class Device;

// Queue limits, named as in sysfs. Every byte count is a multiple of logical_block_size.
struct QueueLimits {
  uint32_t logical_block_size = 512;
  uint64_t capacity = 0;                // bytes
  uint64_t max_io_bytes = 1u << 30;     // most bytes one read or write may move
  uint64_t copy_max_hw_bytes = 0;       // most bytes one offloaded copy may move; 0 = no offload
  uint64_t copy_segment_max_bytes = 0;  // most bytes per source segment (NVMe MSSRL)
  uint32_t copy_max_src_segments = 0;   // most source segments per copy (NVMe MSRC + 1)
  uint64_t copy_max_bytes = 0;          // user limit, <= copy_max_hw_bytes; 0 = offload off
  bool read_only = false;

  bool can_offload() const {
    return copy_max_bytes > 0 && copy_segment_max_bytes > 0 && copy_max_src_segments > 0;
  }
};

// A byte range on a device: one leg of a copy.
struct CopySegment {
  Device* dev = nullptr;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// One copy context: vectored sources and one destination of the summed length. The legs stay
// together from submission to the bottom driver; they are never paired up later.
struct CopyDesc {
  std::vector<CopySegment> sources;
  CopySegment dst;
};

enum class Op : uint8_t { read, write, flush, write_zeroes, discard, copy };
inline constexpr Op kAllOps[] = {Op::read,         Op::write,   Op::flush,
                                 Op::write_zeroes, Op::discard, Op::copy};
const char* op_name(Op op);

// What a copy did in detail, filled before the completion runs. "Not supported" travels here
// and nowhere else: a device that cannot offload a copy (or parts of it: a stack whose legs
// landed on different children) completes it ok and lists the ranges it did not copy; the
// caller emulates exactly these. A failed status is always a real failure of the copy.
struct CopyReport {
  // Ranges {offset, length} of the copy, relative to its start, that were not offloaded.
  std::vector<std::pair<uint64_t, uint64_t>> not_supported;
  std::string why_not_supported;  // why, for messages (set with not_supported)
  // Bytes offloaded per bottom device; left empty by a bottom driver (all of it ran there).
  std::vector<std::pair<const Device*, uint64_t>> offloaded_on;
  // A copy that failed: bytes at its start (in source order) that are on the destination
  // nevertheless (NVMe: the ranges before the one the completion names). Left 0 when unknown.
  uint64_t done_before_error = 0;

  // The whole copy of `length` bytes was not offloaded, for `why`.
  void none(uint64_t length, std::string why) {
    not_supported.assign(1, {0, length});
    why_not_supported = std::move(why);
  }
};

struct Request {
  Op op = Op::read;
  uint64_t offset = 0;        // read, write, write_zeroes, discard
  uint64_t length = 0;        // read, write, write_zeroes, discard
  void* buf = nullptr;        // read, write: page-aligned memory of `length` bytes
  const CopyDesc* copy = nullptr;  // copy: must stay valid until the completion runs
  CopyReport* report = nullptr;    // copy: required, empty, valid until the completion runs
};

// Runs exactly once on the device's loop, never inside submit().
using Completion = std::function<void(Status)>;

// What `blkcopy info` shows beyond the limits.
struct DeviceInfo {
  std::string kind;         // "mem", "file"
  std::string name;         // the device string it was opened with
  std::string copy_method;  // how an offloaded copy runs, or why there is none
  std::vector<std::pair<std::string, std::string>> details;
  // A stacking device's children, each with what it is to the parent ("sectors 0+2048
  // linear at 0"); `blkcopy info` shows them as a tree.
  std::vector<std::pair<std::string, const Device*>> children;
  // Who copies a range this device offloads, and whether data moves, for reports: "xfs, sharing
  // the extents (no data moved)", "the kernel: copy_file_range moved the data through the page
  // cache ...". Empty where nothing is offloaded.
  std::string offloaded_by;
};

// A block device. Drivers implement submit(), limits and describe().
//
// Copies: a copy request is submitted to the destination device. A driver offloads it only if
// every leg lies in its copy domain (same_copy_domain); what it cannot offload it completes ok
// with those ranges in CopyReport::not_supported, and the copy engine emulates them. A driver
// that works with tokens (SCSI POPULATE TOKEN, then WRITE USING TOKEN) gets the whole context
// in one request and runs the two phases one after the other inside submit's completion chain;
// nothing in this interface needs both halves in flight at once.
class Device {
 public:
  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // `done` runs exactly once, later, on the device's loop (never inside submit) with the
  // outcome: every error, a request outside the limits included, comes through it. An
  // operation the device does not do (supports() false) fails with EOPNOTSUPP.
  // REQUIRES: no request is in flight when the device is destroyed.
  virtual void submit(const Request& req, Completion done) = 0;

  // Whether the device does `op` itself: read, write and flush always; write_zeroes and
  // discard where the driver has them; copy where it can offload (limits().can_offload()).
  virtual bool supports(Op op) const;

  // A handle on this device for another event loop, like SPDK's io_channel: a Device that
  // submits on `loop` and shares this one's storage (same_storage and same_copy_domain hold
  // between them), so that each loop reaches the device without a hop between threads. The
  // device must outlive its channels. ENOTSUP where the driver cannot (a remote namespace, whose
  // connection lives on one loop).
  virtual Result<std::unique_ptr<Device>> channel(EventLoop& loop);

  // True when a copy from `other` to this device may be offloaded (same copy domain).
  virtual bool same_copy_domain(const Device& other) const { return &other == this; }

  // True when `other` is this device's storage under another name (the same file opened twice),
  // so that overlapping ranges are detected.
  virtual bool same_storage(const Device& other) const { return &other == this; }

  virtual DeviceInfo describe() const = 0;

  // Bytes a network device has sent and received on its sockets so far (for a remote NVMe/TCP
  // namespace: all of its controller's queues); nullopt for devices without a network.
  struct WireCounters {
    uint64_t sent = 0, received = 0;
  };
  virtual std::optional<WireCounters> wire_counters() const { return std::nullopt; }

  const QueueLimits& limits() const { return limits_; }
  EventLoop& loop() const { return loop_; }
  const std::string& name() const { return name_; }

  // The writable copy_max_bytes limit: 0 turns offload off; at most copy_max_hw_bytes.
  Status set_copy_max_bytes(uint64_t bytes);

  // Claims the device for `owner`, which keeps state on its storage (a clone's region bitmap),
  // until the device is closed. A second claim fails with EBUSY naming the holder: always within
  // this process, and across processes where the driver can lock its storage (files, local NVMe
  // and SCSI nodes, the children of a dm stack). A RAM device has no other process; a remote
  // namespace cannot be locked from here (another host may still open it).
  Status claim(std::string_view owner);

 protected:
  // Locks the storage against other processes, for claim(); ok where there is nothing to lock.
  virtual Status lock_storage() { return {}; }

  Device(EventLoop& loop, std::string name) : loop_(loop), name_(std::move(name)) {}

  // Checks a request against the limits; drivers call it first in submit().
  Status check(const Request& req) const;
  // Runs done(s) on the loop, later: how submit() reports an error it found itself.
  void complete_later(Completion done, Status s) const;
  // Completes a copy as not offloaded (all of it, for `why`), later: the engine emulates it.
  void not_offloaded(const Request& req, Completion done, std::string why) const;

  QueueLimits limits_;

 private:
  EventLoop& loop_;
  std::string name_;
  std::string claimed_by_;
};

// Blocking helpers for simple callers and tests: submit and run the device's loop until done.
Status submit_and_wait(Device& dev, const Request& req);
Status read_sync(Device& dev, uint64_t offset, std::span<std::byte> buf);
Status write_sync(Device& dev, uint64_t offset, std::span<const std::byte> buf);

}  // namespace blkcopy
