// One command on the target, from the transport that received it to the controller that runs
// it and back (nvmet's nvmet_req, SPDK's spdk_nvmf_request). Requests are pooled per queue: a
// command costs no allocation of its own once the queue is warm.
//
// Life of a request:
//   transport   takes it from the queue's pool, fills the SQE, asks the queue for its data
//               buffer (which may wait for room in the budget), moves the host's data in
//   controller  TargetQueue::execute() runs it from the opcode table; it ends in complete()
//   transport   sends the answer (C2HData for data to the host, then the completion) and, once
//               that has left, hands the request back with TargetQueue::release()
#pragma once

#include <blkcopy/copy.h>
#include <blkcopy/device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/budget.h"
#include "nvme/copy_ranges.h"
#include "nvme/spec.h"

namespace blkcopy::nvme {

class TargetQueue;
struct Namespace;

// A request's emulation buffers for Copy, drawn from its queue's copy budget (queue.cc).
class CopyBufferGrant final : public CopyBuffers, public BudgetWaiter {
 public:
  std::byte* take(uint64_t bytes, std::function<void()> retry) override;
  void give(std::byte* buf, uint64_t bytes) override;
  void granted() override;
  // The copy has ended: a grant it did not use goes back, a wait is cancelled.
  void finish();
  Account* account = nullptr;

 private:
  uint64_t unused_ = 0;  // granted and not yet taken
  std::function<void()> retry_;
};

struct TargetRequest final : BudgetWaiter {
  Sqe sqe{};
  Cqe cqe{};
  // The data buffer: what the host sent (host to controller), or what goes back to it.
  uint8_t* data = nullptr;
  uint32_t data_len = 0;  // bytes the command transfers (its SGL length)
  uint32_t data_cap = 0;  // bytes allocated (a size class), counted in the data budget
  uint32_t received = 0;  // transport: H2CData bytes so far
  uint32_t c2h = 0;       // bytes of data to send the host before a successful completion
  bool in_capsule = false;  // the data came inside the capsule (not counted as waiting)
  uint32_t held = 0;  // bytes a long Copy's decoded ranges take, counted like in-capsule data
  // The transport's: when the R2T for this command went out (its data must follow in time).
  std::chrono::steady_clock::time_point r2t_at{};
  // When the command began, while the command trace is on (trace.h); zero otherwise.
  std::chrono::steady_clock::time_point started{};

  // What an I/O command hands its device, living as long as the request.
  blkcopy::Request io{};
  CopyDesc copy{};
  CopyReport report{};
  std::vector<uint32_t> range_bytes;  // Copy: bytes per source range, for DW0 on a failure
  std::vector<Namespace*> range_ns;   // Copy: each source range's namespace
  std::vector<std::shared_ptr<Namespace>> pinned;  // Copy: held source namespaces but `ns`
  std::vector<CopySource> ranges;     // Copy: the decoded range list
  CopyBufferGrant copy_buffers;       // Copy: emulation buffers
  CopyResult copy_result;             // Copy: what the engine did

  TargetQueue* queue = nullptr;
  std::shared_ptr<Namespace> ns;  // I/O commands: the namespace named by the SQE, held
  // Device work: the loop whose channels it uses (the queue's own, or 0 after a hop), what
  // the device answered, and how far a command of several device requests has come.
  unsigned dev_worker = 0;
  bool hopped = false;
  Status status;
  uint64_t progress = 0;
  void (*then)(TargetRequest&) = nullptr;  // what runs when the device request is back
  TargetRequest* next = nullptr;  // the pool's free list, or a queue of waiting requests
  enum class Wait : uint8_t { none, data_buffer } wait = Wait::none;

  void granted() override;  // the data budget has room for data_cap bytes now

  // Resets a request taken from the pool. Vectors keep a small capacity (the common Copy of a
  // few ranges allocates nothing); a long Copy's are freed, so that a host cannot make every
  // pooled request of its queues hold 256 ranges' worth of memory no budget counts.
  static constexpr size_t kKeptRanges = 16;
  void reset() {
    trim(copy.sources);
    trim(range_bytes);
    trim(range_ns);
    trim(pinned);
    trim(ranges);
    trim(report.not_supported);
    trim(report.offloaded_on);
    sqe = {};
    cqe = {};
    data = nullptr;
    data_len = data_cap = received = c2h = 0;
    started = {};
    in_capsule = false;
    held = 0;
    io = {};
    copy.sources.clear();
    copy.dst = {};
    report.not_supported.clear();
    report.why_not_supported.clear();
    report.offloaded_on.clear();
    report.done_before_error = 0;
    range_bytes.clear();
    range_ns.clear();
    pinned.clear();
    ranges.clear();
    ns.reset();
    dev_worker = 0;
    hopped = false;
    status = Status();
    progress = 0;
    then = nullptr;
    wait = Wait::none;
    next = nullptr;
  }

 private:
  template <typename V>
  static void trim(V& v) {
    if (v.capacity() > kKeptRanges) V().swap(v);
  }
};

}  // namespace blkcopy::nvme
