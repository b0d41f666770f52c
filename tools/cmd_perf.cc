// blkcopy perf: a load generator for any device string, in the spirit of fio and
// spdk_nvme_perf, with copies as a first-class operation. Each job is a thread with its own
// event loop and its own open of the device(s), keeping --qd operations in flight until --time
// or --size is reached (or SIGINT/SIGTERM stops it: the figures so far, exit 128 + N); a
// progress line on stderr, then IOPS, bandwidth, latency percentiles, CPU and the bytes that
// crossed host memory and the wire.
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <latch>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "tools/commands.h"
#include "tools/interrupt.h"
#include "tools/report.h"

namespace blkcopy::tools {
namespace {

using Clock = std::chrono::steady_clock;

enum class Kind { read, write, copy };

struct PerfArgs {
  std::string device, dst, rw = "randread", bs = "4k", copy_len, size;
  double seconds = 10;
  unsigned ranges = 1, qd = 32, jobs = 1, mix_copies = 10, poll_us = 0;
  bool emulate = false, json = false;
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

// The exit code once the figures are out: 128 + N after SIGINT or SIGTERM stopped the run.
int stopped(double secs) {
  if (!interrupt_signal()) return kOk;
  report_error(kIoError, fmt::format("interrupted by SIG{} after {:.2f} s: the figures are for that time",
                                     sigabbrev_np(interrupt_signal()), secs));
  return interrupted_exit_code();
}

int run_perf(const PerfArgs& a) {
  struct Mode {
    const char* name;
    Kind kind;
    bool random;
  };
  static constexpr Mode kModes[] = {{"read", Kind::read, false},       {"randread", Kind::read, true},
                                    {"write", Kind::write, false},     {"randwrite", Kind::write, true},
                                    {"copy", Kind::copy, false},       {"randcopy", Kind::copy, true},
                                    {"mix", Kind::read, true}};
  const Mode* mode = nullptr;
  for (const Mode& m : kModes) {
    if (a.rw == m.name) mode = &m;
  }
  if (!mode) {
    return report_error(kBadInput, fmt::format("--rw '{}': expected read, write, randread, "
                                               "randwrite, copy, randcopy or mix", a.rw));
  }
  auto bs = parse_size(a.bs);
  if (!bs || *bs == 0) return report_error(kBadInput, fmt::format("--bs '{}': not a size", a.bs));
  auto copy_len = parse_size(a.copy_len.empty() ? a.bs : a.copy_len);
  if (!copy_len || *copy_len == 0) {
    return report_error(kBadInput, fmt::format("--copy-len '{}': not a size", a.copy_len));
  }
  uint64_t quota = 0;
  if (!a.size.empty()) {
    auto s = parse_size(a.size);
    if (!s || *s == 0) return report_error(kBadInput, fmt::format("--size '{}': not a size", a.size));
    quota = (*s + a.jobs - 1) / a.jobs;
  }
  if (a.qd == 0 || a.qd > 4096 || a.jobs == 0 || a.jobs > 64 || a.ranges == 0 ||
      a.ranges > 256 || a.mix_copies > 100 || !(a.seconds > 0)) {
    return report_error(kBadInput, "--qd 1-4096, --jobs 1-64, --ranges 1-256, --mix-copies "
                                   "0-100 and --time above 0 are the ranges allowed");
  }

  std::atomic<uint64_t> done_bytes{0};
  std::atomic<bool> stop{false};
  // The first SIGINT or SIGTERM stops the jobs (what they have done is reported); a second
  // ends the process.
  const std::atomic<bool>& interrupted = catch_interrupts();
  std::vector<JobResult> results(a.jobs);
  std::vector<std::thread> threads;
  // Every job opens its devices first; the clock and the CPU count start when all are open.
  std::latch opened(a.jobs), go(1);
  double cpu0 = 0;
  Clock::time_point t0, deadline;
  for (unsigned i = 0; i < a.jobs; ++i) {
    threads.emplace_back([&, i] {
      Job job(a, i, *bs, *copy_len, mode->kind, mode->random, quota, done_bytes, stop);
      if (!job.open()) stop = true;
      opened.count_down();
      go.wait();
      results[i] = job.run(deadline);
      if (!results[i].error.empty()) stop = true;
    });
  }
  opened.wait();
  cpu0 = process_cpu_seconds();
  t0 = Clock::now();
  deadline = quota ? Clock::time_point::max()
                   : t0 + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(a.seconds));
  go.count_down();
  // The progress line, once a second, until every job is done.
  const bool live = !a.json && isatty(STDERR_FILENO);
  std::atomic<unsigned> finished{0};
  std::thread progress([&] {
    uint64_t last = 0;
    auto next = t0;
    while (finished < a.jobs) {
      next += std::chrono::seconds(1);
      while (Clock::now() < next && finished < a.jobs) {
        if (interrupted) stop = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      const uint64_t now = done_bytes.load();
      if (live) {
        fmt::print(stderr, "\r{:6.0f} s  {}/s      ",
                   std::chrono::duration<double>(Clock::now() - t0).count(),
                   format_bytes(double(now - last)));
      }
      last = now;
    }
    if (live) fmt::print(stderr, "\n");
  });
  for (auto& t : threads) {
    t.join();
    ++finished;
  }
  progress.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = process_cpu_seconds() - cpu0;

  JobResult sum;
  for (const JobResult& r : results) {
    if (!r.error.empty() && sum.error.empty()) {
      sum.error = r.error;
      sum.code = r.code;
    }
    sum.latency.merge(r.latency);
    sum.reads += r.reads, sum.writes += r.writes, sum.copies += r.copies, sum.bytes += r.bytes;
    sum.offloaded += r.offloaded, sum.emulated += r.emulated, sum.wire += r.wire;
    sum.host_read += r.host_read, sum.host_written += r.host_written;
  }
  if (!sum.error.empty()) return report_error(sum.code, sum.error);
  const uint64_t ops = sum.reads + sum.writes + sum.copies;
  const double gib = double(sum.bytes) / double(1u << 30);
  const Histogram& h = sum.latency;
  if (a.json) {
    nlohmann::ordered_json j;
    j["device"] = a.device;
    if (!a.dst.empty()) j["dst"] = a.dst;
    j["rw"] = a.rw, j["bs"] = *bs, j["copy_len"] = *copy_len, j["ranges"] = a.ranges;
    j["qd"] = a.qd, j["jobs"] = a.jobs, j["seconds"] = microseconds(secs);
    j["ops"] = ops, j["reads"] = sum.reads, j["writes"] = sum.writes, j["copies"] = sum.copies;
    j["bytes"] = sum.bytes, j["iops"] = double(ops) / secs;
    j["mib_per_second"] = double(sum.bytes) / secs / double(1u << 20);
    j["latency_us"] = {{"avg", h.avg_us()},
                       {"p50", h.percentile_us(0.5)},
                       {"p99", h.percentile_us(0.99)},
                       {"p99.9", h.percentile_us(0.999)},
                       {"max", h.max_us()}};
    j["cpu_seconds"] = microseconds(cpu), j["cpu_seconds_per_gib"] = microseconds(gib > 0 ? cpu / gib : 0);
    j["offloaded_bytes"] = sum.offloaded, j["emulated_bytes"] = sum.emulated;
    j["host_read_bytes"] = sum.host_read, j["host_written_bytes"] = sum.host_written;
    j["wire_bytes"] = sum.wire;
    if (interrupt_signal()) j["interrupted"] = fmt::format("SIG{}", sigabbrev_np(interrupt_signal()));
    fmt::print("{}\n", j.dump(2));
    return stopped(secs);
  }
  fmt::print("{} {} bs={} qd={} jobs={}{}: {} ops in {:.2f} s\n", a.device, a.rw,
             format_bytes(double(*bs)), a.qd, a.jobs,
             mode->kind == Kind::copy || a.rw == "mix"
                 ? fmt::format(" copy-len={} ranges={}", format_bytes(double(*copy_len)), a.ranges)
                 : "",
             ops, secs);
  fmt::print("  {:.0f} IOPS ({} reads, {} writes, {} copies), {}/s\n", double(ops) / secs,
             sum.reads, sum.writes, sum.copies, format_bytes(double(sum.bytes) / secs));
  fmt::print("  latency us: avg {:.1f}  p50 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}\n",
             h.avg_us(), h.percentile_us(0.5), h.percentile_us(0.99), h.percentile_us(0.999),
             h.max_us());
  fmt::print("  CPU {:.2f} s ({:.2f} s per GiB)\n", cpu, gib > 0 ? cpu / gib : 0.0);
  fmt::print("  host read {}, written {}; offloaded {}, emulated {}; wire {}\n",
             format_bytes(double(sum.host_read)), format_bytes(double(sum.host_written)),
             format_bytes(double(sum.offloaded)), format_bytes(double(sum.emulated)),
             format_bytes(double(sum.wire)));
  return stopped(secs);
}

}  // namespace

void add_perf_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<PerfArgs>();
  CLI::App* cmd = app.add_subcommand(
      "perf", "Load a device with reads, writes and copies; report IOPS, latency and cost");
  cmd->add_option("device", a->device, "the device string to load")->required();
  cmd->add_option("--rw", a->rw,
                  "read|write|randread|randwrite|copy|randcopy|mix (default randread)");
  cmd->add_option("--bs", a->bs, "bytes per read or write (default 4k)");
  cmd->add_option("--copy-len", a->copy_len, "bytes per copy (default: --bs)");
  cmd->add_option("--ranges", a->ranges, "source ranges per copy (default 1)");
  cmd->add_option("--mix-copies", a->mix_copies,
                  "with --rw mix: percent of copies, the rest half reads, half writes (default 10)");
  // fio's names as aliases: --iodepth, --numjobs, --runtime.
  cmd->add_option("--qd,--iodepth", a->qd, "operations in flight per job (default 32)");
  cmd->add_option("--jobs,--numjobs", a->jobs, "threads, each with its own loop and open (default 1)");
  cmd->add_option("--time,--runtime", a->seconds, "seconds to run (default 10)");
  cmd->add_option("--size", a->size, "stop after this many bytes instead of --time");
  cmd->add_option("--dst", a->dst, "copy into this device (default: the device's upper half)");
  cmd->add_option("--seed", a->seed, "random offsets' seed (default 1)");
  cmd->add_flag("--emulate", a->emulate, "emulate every copy (read and write back)");
  add_poll_option(*cmd, a->poll_us, "the jobs' loops");
  cmd->add_flag("--json", a->json, "print the result as JSON");
  cmd->callback([a, &exit_code] { exit_code = run_perf(*a); });
}

}  // namespace blkcopy::tools
