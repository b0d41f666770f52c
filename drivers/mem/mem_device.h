// mem: a RAM-backed device for tests and benchmarks (this project's null_blk).
//
// Copies run inside the driver (memmove within the device), so they never cost host I/O.
// Options make it stand in for other devices: copy limits, no copy support, no data at all,
// per-command latency and a bandwidth cap, and a fault injector.
#pragma once

#include <blkcopy/device.h>

#include "block/fault.h"
#include "core/deadline_queue.h"

#include <atomic>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace blkcopy {

struct MemConfig {
  uint64_t size = 0;
  uint32_t block = 512;
  // 256 MiB pieces: with 128 MiB ones, glibc's memmove took a slower path and a 1 GiB copy ran
  // 25% below one plain memmove (bench/).
  uint64_t copy_max = 256u << 20;     // copy_max_hw_bytes
  uint64_t segment_max = 256u << 20;  // copy_segment_max_bytes
  uint32_t max_segments = 256;        // copy_max_src_segments
  bool copy = true;                   // false: every copy is answered "not supported"
  bool data = true;                   // false: data-less, reads return zeroes, writes vanish
  bool zeroes = true;                 // false: no write zeroes or discard (EOPNOTSUPP)
  bool read_only = false;
  uint64_t latency_ns = 0;    // added to every command
  uint64_t jitter_ns = 0;     // plus a random delay up to this, so completions come out of order
  uint64_t bandwidth = 0;     // bytes per second the device moves (0 = unlimited)
  uint64_t seed = 0;          // non-zero: fill with pseudo-random bytes from this seed
  FaultRule fault;  // on a copy, EOPNOTSUPP refuses to offload it (the engine emulates it)
};

// Parses "1G,block=4096,copy_max=1M,nocopy,..." (the part after "mem:").
Result<MemConfig> parse_mem_config(std::string_view spec);

class MemDevice final : public Device {
 public:
  static Result<std::unique_ptr<MemDevice>> create(EventLoop& loop, std::string name,
                                                   const MemConfig& cfg);

  void submit(const Request& req, Completion done) override;
  bool supports(Op op) const override;
  // Channels share the RAM and the bandwidth cap; each counts its own injected faults.
  Result<std::unique_ptr<Device>> channel(EventLoop& loop) override;
  bool same_copy_domain(const Device& other) const override { return same_storage(other); }
  bool same_storage(const Device& other) const override;
  DeviceInfo describe() const override;

  // Direct access for tests and benchmarks (nullptr when data-less).
  std::byte* data() const { return store_->data; }

 private:
  // The RAM and the bandwidth schedule, shared by a device and its channels.
  struct Store {
    std::byte* data = nullptr;
    uint64_t size = 0;
    std::atomic<uint64_t> busy_until_ns{0};  // the bandwidth cap serialises transfers
    ~Store();
  };
  MemDevice(EventLoop& loop, std::string name, const MemConfig& cfg,
            std::shared_ptr<Store> store);
  Status execute(const Request& req);
  // Completes done with s on the next turn (an error found at submission).
  void finish(Completion done, Status s);
  // Queues req to run on a coming turn.
  void queue(const Request& req, Completion done);
  void deliver();

  MemConfig cfg_;
  std::shared_ptr<Store> store_;
  FaultCounter faults_;
  uint64_t jitter_state_ = 1;
  // Requests waiting for the device, run by one posted task a turn: a request costs no
  // allocation of its own (the task captures nothing but the device). A turn moves at most
  // kTurnBytes; the rest waits for the next turn, so that a device busy with large requests
  // (the target emulating copies) does not keep the loop from its sockets and timers.
  struct Pending {
    Request req;
    Completion done;
    Status outcome;   // an error found at submission: no work to do
    bool run = true;  // false: complete with outcome
  };
  static constexpr uint64_t kTurnBytes = 2u << 20;
  std::vector<Pending> pending_, running_;
  bool deliver_posted_ = false;
  DeadlineQueue delays_;  // latency, jitter and bandwidth: completions at their times
};

// Writes the bytes [offset, offset + length) of the pseudo-random fill of `seed` to dst: the same
// bytes a mem device created with seed=SEED holds there (tests use it as the reference).
// REQUIRES: offset and length multiples of 8.
void fill_pattern(std::byte* dst, uint64_t offset, uint64_t length, uint64_t seed);

}  // namespace blkcopy
