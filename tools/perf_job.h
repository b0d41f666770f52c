// perf's jobs (tools/cmd_perf.cc runs them): each a thread with its own event loop and its own
// open of the device(s), keeping --qd operations in flight until the deadline or its byte quota,
// counting what it did and the latency of each operation.
#pragma once

#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/buffer.h"
#include "tools/commands.h"

namespace blkcopy::tools {

using Clock = std::chrono::steady_clock;

enum class Kind { read, write, copy };

struct PerfArgs {
  std::string device, dst, rw = "randread", bs = "4k", copy_len, size;
  double seconds = 10;
  unsigned ranges = 1, qd = 32, jobs = 1, mix_copies = 10, poll_us = 0;
  bool emulate = false, json = false, force = false;
  uint64_t seed = 1;
};

// Latencies in nanoseconds, log-linear: 16 buckets per power of two (about 6% wide).
class Histogram {
 public:
  void add(uint64_t ns) {
    ++n_[index(ns)];
    sum_ += ns;
    max_ = std::max(max_, ns);
    ++count_;
  }
  void merge(const Histogram& o) {
    for (size_t i = 0; i < n_.size(); ++i) n_[i] += o.n_[i];
    sum_ += o.sum_;
    max_ = std::max(max_, o.max_);
    count_ += o.count_;
  }
  double avg_us() const { return count_ ? double(sum_) / double(count_) / 1000 : 0; }
  double max_us() const { return double(max_) / 1000; }
  // The upper edge of the bucket holding the p-th fraction of samples.
  double percentile_us(double p) const {
    const uint64_t want = std::max<uint64_t>(1, uint64_t(p * double(count_) + 0.5));
    uint64_t seen = 0;
    for (size_t i = 0; i < n_.size(); ++i) {
      seen += n_[i];
      if (seen >= want) return double(std::min(upper(i), max_)) / 1000;
    }
    return max_us();
  }

 private:
  static size_t index(uint64_t ns) {
    if (ns < 16) return ns;
    const unsigned e = 63 - unsigned(std::countl_zero(ns));  // >= 4
    return (e - 3) * 16 + ((ns >> (e - 4)) & 15);
  }
  static uint64_t upper(size_t i) {
    if (i < 16) return i;
    const size_t e = i / 16 + 3, sub = i % 16;
    return ((16 + sub + 1) << (e - 4)) - 1;
  }
  std::array<uint64_t, 61 * 16> n_{};
  uint64_t sum_ = 0, max_ = 0, count_ = 0;
};

// What one job did; merged into the report.
struct JobResult {
  Histogram latency;
  uint64_t reads = 0, writes = 0, copies = 0, bytes = 0;
  uint64_t offloaded = 0, emulated = 0, host_read = 0, host_written = 0, wire = 0;
  std::string error;
  int code = kIoError;  // the exit code its error gives (bad input: arguments, device strings)
};

class Job {
 public:
  Job(const PerfArgs& a, unsigned index, uint64_t bs, uint64_t copy_len, Kind kind, bool random,
      uint64_t byte_quota, std::atomic<uint64_t>& done_bytes, std::atomic<bool>& stop)
      : a_(a), bs_(bs), copy_len_(copy_len), kind_(kind), random_(random), quota_(byte_quota),
        done_bytes_(done_bytes), stop_(stop), rng_(a.seed * 7919 + index) {}

  // Opens the devices on this thread's loop: false (and the error in the result) on failure.
  // Opening (connecting, filling a RAM device) is not part of the measured time.
  bool open() {
    auto loop = EventLoop::create(std::max(256u, a_.qd * 4), 4);
    if (!loop) return refuse(loop.error().message());
    loop_ = std::move(*loop);
    loop_->set_busy_poll(std::chrono::microseconds(a_.poll_us));
    auto src = open_device(*loop_, a_.device);
    if (!src) return refuse(src.error().message(), open_exit_code(a_.device, src.error()));
    src_ = std::move(*src);
    if (!a_.dst.empty()) {
      auto dst = open_device(*loop_, a_.dst);
      if (!dst) return refuse(dst.error().message(), open_exit_code(a_.dst, dst.error()));
      dst_ = std::move(*dst);
    }
    if (std::string e = plan(); !e.empty()) return refuse(e);
    return true;
  }

  // Runs the load on this thread (after open) until the deadline or the byte quota.
  JobResult run(Clock::time_point deadline) {
    if (stop_) return std::move(r_);  // another job failed to open
    const auto wire0 = wire();
    deadline_ = deadline;
    for (unsigned i = 0; i < a_.qd; ++i) buffers_.emplace_back(bs_);
    sources_.resize(a_.qd);
    started_.resize(a_.qd);
    kinds_.resize(a_.qd);
    for (unsigned i = 0; i < a_.qd && !error_; ++i) issue(i);
    Status s = loop_->run_until([this] { return inflight_ == 0; });
    if (!s.ok() && r_.error.empty()) r_.error = s.message();
    r_.wire = wire() - wire0;
    return std::move(r_);
  }

 private:
  // Before the load starts, a failure is bad input (a device string, a size that does not fit),
  // or a target that cannot be reached or refuses this host.
  bool refuse(std::string message, int code = kBadInput) {
    r_.error = std::move(message);
    r_.code = code;
    return false;
  }
  Device& dst() { return dst_ ? *dst_ : *src_; }
  uint64_t wire() const {
    uint64_t n = 0;
    for (const Device* d : {src_.get(), dst_.get()}) {
      if (auto w = d ? d->wire_counters() : std::nullopt) n += w->sent + w->received;
    }
    return n;
  }

  // Where each operation may go: reads and writes anywhere on the device; copies from the
  // source region to the destination region, which do not overlap (halves of one device).
  std::string plan() {
    const QueueLimits& l = src_->limits();
    const uint32_t lbs = std::max(l.logical_block_size, dst().limits().logical_block_size);
    if (bs_ % lbs || copy_len_ % (uint64_t(lbs) * a_.ranges)) {
      return fmt::format("--bs and --copy-len / --ranges must be multiples of the {}-byte block",
                         lbs);
    }
    if (bs_ > l.max_io_bytes) return fmt::format("--bs is over {}'s max_io_bytes", a_.device);
    device_bytes_ = l.capacity / bs_ * bs_;
    if (dst_) {
      src_region_ = {0, l.capacity};
      dst_region_ = {0, dst().limits().capacity};
    } else {
      src_region_ = {0, l.capacity / 2 / lbs * lbs};
      dst_region_ = {src_region_.second, l.capacity / lbs * lbs - src_region_.second};
    }
    const uint64_t piece = copy_len_ / a_.ranges;
    if (device_bytes_ < bs_ || src_region_.second < copy_len_ || dst_region_.second < copy_len_ ||
        piece == 0) {
      return fmt::format("{} is too small for --bs {} / --copy-len {}", a_.device, bs_, copy_len_);
    }
    return {};
  }

  uint64_t pick(uint64_t region, uint64_t unit, uint64_t& cursor) {
    const uint64_t slots = region / unit;
    if (random_) return std::uniform_int_distribution<uint64_t>(0, slots - 1)(rng_) * unit;
    const uint64_t at = cursor % slots * unit;
    ++cursor;
    return at;
  }

  Kind next_kind() {
    if (a_.rw != "mix") return kind_;
    const unsigned roll = std::uniform_int_distribution<unsigned>(0, 99)(rng_);
    if (roll < a_.mix_copies) return Kind::copy;
    return roll % 2 ? Kind::read : Kind::write;
  }

  bool finished(Clock::time_point now) const {
    return error_ || stop_.load(std::memory_order_relaxed) || now >= deadline_ ||
           (quota_ && issued_bytes_ >= quota_);
  }

  // Starts the next operation in `slot`; `start` is now (one clock read per operation: the
  // end of the last one is the start of the next).
  void issue(unsigned slot, Clock::time_point start = Clock::now()) {
    if (finished(start)) return;
    const Kind k = next_kind();
    ++inflight_;
    if (k == Kind::copy) {
      const uint64_t piece = copy_len_ / a_.ranges;
      std::vector<CopySegment>& sources = sources_[slot];  // reused: no allocation per copy
      sources.clear();
      for (unsigned i = 0; i < a_.ranges; ++i) {
        sources.push_back({src_.get(), pick(src_region_.second, piece, src_cursor_), piece});
      }
      started_[slot] = start;
      const uint64_t to = dst_region_.first + pick(dst_region_.second, copy_len_, dst_cursor_);
      CopyOptions opt;
      opt.emulation = a_.emulate ? Emulation::force : Emulation::allow;
      opt.buffer_bytes = std::max<uint64_t>(copy_len_, 1u << 20);
      issued_bytes_ += copy_len_;
      // The callback captures 16 bytes: std::function keeps it without allocating.
      Status s = copy_async(std::span<const CopySegment>(sources), dst(), to, opt, [this, slot](CopyResult r) {
        const Clock::time_point began = started_[slot];
        if (!r.status.ok()) return done(slot, began, Kind::copy, r.status, 0);
        r_.offloaded += r.offloaded_bytes;
        r_.emulated += r.emulated_bytes;
        r_.host_read += r.host_read_bytes;
        r_.host_written += r.host_written_bytes;
        done(slot, began, Kind::copy, r.status, r.bytes);
      });
      if (!s.ok()) done(slot, start, k, s, 0);
      return;
    }
    const uint64_t off = pick(device_bytes_, bs_, io_cursor_);
    issued_bytes_ += bs_;
    Request req{k == Kind::read ? Op::read : Op::write, off, bs_, buffers_[slot].data()};
    started_[slot] = start;
    kinds_[slot] = k;
    src_->submit(req, [this, slot](Status st) { done(slot, started_[slot], kinds_[slot], st, bs_); });
  }

  void done(unsigned slot, Clock::time_point start, Kind k, const Status& s, uint64_t bytes) {
    --inflight_;
    if (!s.ok()) {
      if (!error_) r_.error = s.message();
      error_ = true;
      return;
    }
    const auto now = Clock::now();
    r_.latency.add(uint64_t(std::chrono::nanoseconds(now - start).count()));
    (k == Kind::read ? r_.reads : k == Kind::write ? r_.writes : r_.copies) += 1;
    if (k == Kind::read) r_.host_read += bytes;
    if (k == Kind::write) r_.host_written += bytes;
    r_.bytes += bytes;
    done_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    issue(slot, now);
  }

  const PerfArgs& a_;
  const uint64_t bs_, copy_len_;
  const Kind kind_;
  const bool random_;
  const uint64_t quota_;
  std::atomic<uint64_t>& done_bytes_;
  std::atomic<bool>& stop_;
  std::mt19937_64 rng_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Device> src_, dst_;
  std::vector<AlignedBuffer> buffers_;
  // Per slot: the copy's sources, when its operation started, and what it is.
  std::vector<std::vector<CopySegment>> sources_;
  std::vector<Clock::time_point> started_;
  std::vector<Kind> kinds_;
  uint64_t device_bytes_ = 0, issued_bytes_ = 0;
  uint64_t io_cursor_ = 0, src_cursor_ = 0, dst_cursor_ = 0;
  std::pair<uint64_t, uint64_t> src_region_, dst_region_;  // {start, length}
  Clock::time_point deadline_;
  unsigned inflight_ = 0;
  bool error_ = false;
  JobResult r_;
};

}  // namespace blkcopy::tools
