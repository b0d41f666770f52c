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
#include "tools/perf_job.h"
#include "tools/report.h"

namespace blkcopy::tools {
namespace {

// The exit code once the figures are out: 128 + N after SIGINT or SIGTERM stopped the run.
int stopped(double secs) {
  if (!interrupt_signal()) return kOk;
  report_error(kIoError, fmt::format("interrupted by SIG{} after {:.2f} s: the figures are for that time",
                                     sigabbrev_np(interrupt_signal()), secs));
  return interrupted_exit_code();
}

// Why a write load must not go into `dev` without --force: its first MiB holds something (a
// partition table, a file system, a VM image), as fio users learn the hard way. RAM devices are
// the load's own. "" when it may.
std::string holds_data(const std::string& dev) {
  if (dev.starts_with("mem:")) return {};
  auto loop = EventLoop::create();
  if (!loop) return {};
  auto d = open_device(**loop, dev, {.read_only = true});
  if (!d) return {};  // the job's own open says why
  const uint64_t n = std::min<uint64_t>((*d)->limits().capacity, 1u << 20) & ~uint64_t(4095);
  if (n == 0) return {};
  AlignedBuffer buf(n);
  if (!read_sync(**d, 0, buf.span()).ok()) return {};
  const auto* p = buf.data();
  if (std::all_of(p, p + n, [](std::byte b) { return b == std::byte{0}; })) return {};
  return fmt::format("{} holds data (its first {} are not zeroes: a file system, a partition "
                     "table or an image?) and this load writes into it; give --force to go on",
                     dev, format_bytes(double(n)));
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

  // Loads that write: into DEV (write, mix, and copies without --dst), into --dst (copies).
  const bool copies = mode->kind == Kind::copy || a.rw == "mix";
  const bool writes_dev = mode->kind == Kind::write || a.rw == "mix" || (copies && a.dst.empty());
  for (const std::string* target : {writes_dev ? &a.device : nullptr, copies && !a.dst.empty() ? &a.dst : nullptr}) {
    if (!target || a.force) continue;
    if (std::string why = holds_data(*target); !why.empty()) return report_error(kBadInput, why);
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
  cmd->add_flag("--force", a->force, "write into a device whose first MiB holds data (a file "
                                     "system, an image): refused without it");
  cmd->add_flag("--json", a->json, "print the result as JSON");
  cmd->callback([a, &exit_code] { exit_code = run_perf(*a); });
}

}  // namespace blkcopy::tools
