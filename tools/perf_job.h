// perf's jobs (tools/cmd_perf.cc runs them): each a thread with its own event loop and its own
// open of the device(s), keeping --qd operations in flight until the deadline or the bytes of
// --size (shared by the jobs) are issued,
// counting what it did and the latencies of each operation (tools/perf_stats.h).
#pragma once

#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "core/buffer.h"
#include "tools/commands.h"
#include "tools/perf_stats.h"
#include "tools/target_report.h"

namespace blkcopy::tools {

using Clock = std::chrono::steady_clock;

enum class Kind { read, write, copy };

struct PerfArgs {
  std::string device, dst, rw = "randread", bs = "4k", copy_len, size, percentiles = "50,99,99.9";
  std::optional<double> seconds;  // --time (default 10, none with --size alone)
  unsigned ranges = 1, qd = 32, jobs = 1, poll_us = 0;
  std::optional<unsigned> mix_copies;  // percent, with --rw mix (default 10)
  bool emulate = false, json = false, force = false;
  uint64_t seed = 1;

  // fio's randrw is a mix without copies.
  bool mix() const { return rw == "mix" || rw == "randrw"; }
  unsigned copy_percent() const { return rw == "randrw" ? 0 : mix_copies.value_or(10); }
  bool copies() const { return rw == "copy" || rw == "randcopy" || (mix() && copy_percent() > 0); }
};

// What every job has done so far, for the live line.
struct Progress {
  std::atomic<uint64_t> bytes{0}, ops{0};
};

// What one job did; merged into the report.
struct JobResult {
  std::array<OpStats, 3> by_kind;  // indexed by Kind
  Clock::time_point ended{};  // when its last operation completed (none: the epoch)
  // How a remote target did this job's copies (its controller is the job's own): nullopt when
  // the destination is not remote or nothing was offloaded.
  std::optional<Result<nvme::TargetCopyReport>> target;
  uint64_t offloaded = 0, emulated = 0, host_read = 0, host_written = 0, wire = 0;
  std::string error;
  int code = kIoError;  // the exit code its error gives (bad input: arguments, device strings)
};

class Job {
 public:
  Job(const PerfArgs& a, unsigned index, uint64_t bs, uint64_t copy_len, Kind kind, bool random,
      std::atomic<int64_t>* budget, Progress& progress, std::atomic<bool>& stop)
      : a_(a), bs_(bs), copy_len_(copy_len), kind_(kind), random_(random), budget_(budget),
        progress_(progress), stop_(stop), rng_(a.seed * 7919 + index) {}

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
    // Writes carry random bytes, as fio's do: zeroes would not show on a fresh device, and
    // some devices store them as holes. Made here, before the clock starts.
    for (unsigned i = 0; i < a_.qd; ++i) {
      AlignedBuffer& b = buffers_.emplace_back(bs_);
      for (size_t at = 0; at + 8 <= bs_; at += 8) {
        const uint64_t word = rng_();
        std::memcpy(b.data() + at, &word, 8);
      }
    }
    return true;
  }

  // Runs the load on this thread (after open) until the deadline or the budget of bytes is
  // spent (nullptr: by time).
  JobResult run(Clock::time_point deadline) {
    if (stop_) return std::move(r_);  // another job failed to open
    const auto wire0 = wire();
    deadline_ = deadline;
    sources_.resize(a_.qd);
    started_.resize(a_.qd);
    submitted_.resize(a_.qd);
    kinds_.resize(a_.qd);
    for (unsigned i = 0; i < a_.qd && !error_; ++i) issue(i);
    Status s = loop_->run_until([this] { return inflight_ == 0; });
    if (!s.ok() && r_.error.empty()) r_.error = s.message();
    r_.wire = wire() - wire0;
    if (r_.offloaded && r_.error.empty()) {
      r_.target = read_target_report(dst(), std::chrono::seconds(5), &stop_, r_.offloaded);
    }
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
      return fmt::format("--bs and --length / --ranges must be multiples of the {}-byte block",
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
    if (device_bytes_ < bs_) return fmt::format("{} is too small for --bs {}", a_.device, bs_);
    if (a_.copies() && src_region_.second < copy_len_) {
      return fmt::format("{} is too small for --length {}{}", a_.device, copy_len_,
                         dst_ ? "" : " (copies go from its lower half to its upper half)");
    }
    if (a_.copies() && dst_region_.second < copy_len_) {
      return fmt::format("{} is too small for --length {}", a_.dst, copy_len_);
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
    if (!a_.mix()) return kind_;
    const unsigned roll = std::uniform_int_distribution<unsigned>(0, 99)(rng_);
    if (roll < a_.copy_percent()) return Kind::copy;
    return roll % 2 ? Kind::read : Kind::write;
  }

  bool finished(Clock::time_point now) const {
    return error_ || stop_.load(std::memory_order_relaxed) || now >= deadline_ ||
           (budget_ && budget_->load(std::memory_order_relaxed) <= 0);
  }

  // Takes `n` bytes of the budget; false when it was spent (by another job too). The last
  // operation may go past it: --size rounds up to whole operations.
  bool take(uint64_t n) {
    return !budget_ || budget_->fetch_sub(int64_t(n), std::memory_order_relaxed) > 0;
  }

  // Starts the next operation in `slot`; `start` is now (one clock read per operation: the
  // end of the last one is the start of the next).
  void issue(unsigned slot, Clock::time_point start = Clock::now()) {
    if (finished(start)) return;
    const Kind k = next_kind();
    if (!take(k == Kind::copy ? copy_len_ : bs_)) return;
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
      opt.explain_emulation = false;  // a string per copy: perf counts bytes only
      opt.buffer_bytes = std::max<uint64_t>(copy_len_, 1u << 20);
      // The callback captures 16 bytes: std::function keeps it without allocating.
      kinds_[slot] = Kind::copy;
      Status s = copy_async(std::span<const CopySegment>(sources), dst(), to, opt, [this, slot](CopyResult r) {
        if (!r.status.ok()) return done(slot, r.status, 0);
        r_.offloaded += r.offloaded_bytes;
        r_.emulated += r.emulated_bytes;
        r_.host_read += r.host_read_bytes;
        r_.host_written += r.host_written_bytes;
        done(slot, r.status, r.bytes);
      });
      if (!s.ok()) {
        submitted_[slot] = start;
        return done(slot, s, 0);
      }
      submitted_[slot] = Clock::now();  // completions never run inside the submission
      return;
    }
    const uint64_t off = pick(device_bytes_, bs_, io_cursor_);
    Request req{k == Kind::read ? Op::read : Op::write, off, bs_, buffers_[slot].data()};
    started_[slot] = start;
    kinds_[slot] = k;
    src_->submit(req, [this, slot](Status st) { done(slot, st, bs_); });
    submitted_[slot] = Clock::now();  // completions never run inside submit()
  }

  void done(unsigned slot, const Status& s, uint64_t bytes) {
    --inflight_;
    if (!s.ok()) {
      if (!error_) r_.error = s.message();
      error_ = true;
      return;
    }
    const auto now = Clock::now();
    r_.ended = now;
    const Kind k = kinds_[slot];
    auto ns = [](Clock::duration d) { return uint64_t(std::chrono::nanoseconds(d).count()); };
    r_.by_kind[size_t(k)].add(bytes, ns(submitted_[slot] - started_[slot]), ns(now - submitted_[slot]));
    if (k == Kind::read) r_.host_read += bytes;
    if (k == Kind::write) r_.host_written += bytes;
    progress_.bytes.fetch_add(bytes, std::memory_order_relaxed);
    progress_.ops.fetch_add(1, std::memory_order_relaxed);
    issue(slot, now);
  }

  const PerfArgs& a_;
  const uint64_t bs_, copy_len_;
  const Kind kind_;
  const bool random_;
  std::atomic<int64_t>* const budget_;
  Progress& progress_;
  std::atomic<bool>& stop_;
  std::mt19937_64 rng_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Device> src_, dst_;
  std::vector<AlignedBuffer> buffers_;
  // Per slot: the copy's sources, when its operation started and was submitted, and what it is.
  std::vector<std::vector<CopySegment>> sources_;
  std::vector<Clock::time_point> started_, submitted_;
  std::vector<Kind> kinds_;
  uint64_t device_bytes_ = 0;
  uint64_t io_cursor_ = 0, src_cursor_ = 0, dst_cursor_ = 0;
  std::pair<uint64_t, uint64_t> src_region_, dst_region_;  // {start, length}
  Clock::time_point deadline_;
  unsigned inflight_ = 0;
  bool error_ = false;
  JobResult r_;
};

}  // namespace blkcopy::tools
