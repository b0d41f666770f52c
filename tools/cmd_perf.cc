// blkcopy perf: a load generator for any device string, in the spirit of fio and
// spdk_nvme_perf, with copies as a first-class operation. Each job is a thread with its own
// event loop and its own open of the device(s), keeping --qd operations in flight until --time
// or --size is reached (or SIGINT/SIGTERM stops it: the figures so far, exit 128 + N); a
// progress line on stderr, then IOPS, bandwidth, latency percentiles, CPU and the bytes that
// crossed host memory and the wire.
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "tools/commands.h"
#include "tools/interrupt.h"
#include "tools/perf_job.h"
#include "tools/perf_report.h"
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

// A regular file that is mostly holes: reads of holes and reflinks of holes cost the file system
// little, so the figures say little of the data it will hold. fio lays its files out first.
void warn_if_sparse(const std::string& dev) {
  const auto st = regular_file(dev);
  if (!st) return;
  const uint64_t allocated = uint64_t(st->st_blocks) * 512, size = uint64_t(st->st_size);
  if (size >= (1u << 20) && allocated < size / 2) {
    log_warning(fmt::format("{} is sparse ({} of {} allocated): reads and copies of its holes measure "
                            "little; write it out first for figures of real data",
                            dev, format_bytes(double(allocated)), format_bytes(double(size))));
  }
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
                                    {"mix", Kind::read, true},         {"randrw", Kind::read, true}};
  const Mode* mode = nullptr;
  for (const Mode& m : kModes) {
    if (a.rw == m.name) mode = &m;
  }
  if (!mode) {
    return report_error(kBadInput, fmt::format("--rw '{}': expected read, write, randread, "
                                               "randwrite, randrw, copy, randcopy or mix", a.rw));
  }
  auto bs = parse_size(a.bs);
  if (!bs || *bs == 0) return report_error(kBadInput, fmt::format("--bs '{}': not a size", a.bs));
  auto copy_len = parse_size(a.copy_len.empty() ? a.bs : a.copy_len);
  if (!copy_len || *copy_len == 0) {
    return report_error(kBadInput, fmt::format("--length '{}': not a size", a.copy_len));
  }
  // --size: the bytes all jobs issue together (whole operations: the last may go past it).
  std::optional<std::atomic<int64_t>> budget;
  if (!a.size.empty()) {
    auto s = parse_size(a.size);
    if (!s || *s == 0 || *s > uint64_t(INT64_MAX / 2)) {
      return report_error(kBadInput, fmt::format("--size '{}': not a size", a.size));
    }
    budget.emplace(int64_t(*s));
  }
  const auto percentiles = parse_percentiles(a.percentiles);
  if (!percentiles) {
    return report_error(kBadInput, fmt::format("--percentiles '{}': expected up to 20 different numbers in "
                                               "(0, 100] separated by , or :", a.percentiles));
  }
  if (a.seconds && !(*a.seconds > 0 && *a.seconds <= 1e9)) {
    return report_error(kBadInput, fmt::format("--time {}: expected seconds above 0", *a.seconds));
  }
  if (a.mix_copies && a.rw != "mix") {
    return report_error(kBadInput, fmt::format("--mix-copies is for --rw mix, not {}", a.rw));
  }
  // Loads that write: into DEV (write, mixes, and copies without --dst), into --dst (copies).
  const bool copies = a.copies();
  if (!copies && !a.dst.empty()) {
    return report_error(kBadInput, fmt::format("--dst is where copies go, and --rw {} makes none", a.rw));
  }
  const bool writes_dev = mode->kind == Kind::write || a.mix() || (copies && a.dst.empty());
  warn_if_sparse(a.device);
  if (!a.dst.empty()) warn_if_sparse(a.dst);
  for (const std::string* target : {writes_dev ? &a.device : nullptr, copies && !a.dst.empty() ? &a.dst : nullptr}) {
    if (!target || a.force) continue;
    if (std::string why = holds_data(*target); !why.empty()) return report_error(kBadInput, why);
  }

  Progress progress;
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
      Job job(a, i, *bs, *copy_len, mode->kind, mode->random, budget ? &*budget : nullptr, progress, stop);
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
  // --time and --size: whichever comes first, as fio; --size alone: no time limit.
  deadline = budget && !a.seconds ? Clock::time_point::max()
                                  : t0 + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(a.seconds.value_or(10)));
  go.count_down();
  // The progress line, once a second, until every job is done.
  const bool live = !a.json && isatty(STDERR_FILENO);
  std::atomic<unsigned> finished{0};
  std::thread live_line([&] {
    uint64_t last_bytes = 0, last_ops = 0;
    auto next = t0;
    while (finished < a.jobs) {
      next += std::chrono::seconds(1);
      while (Clock::now() < next && finished < a.jobs) {
        if (interrupted) stop = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (finished == a.jobs) break;  // a part of a second is no rate per second
      const uint64_t bytes = progress.bytes.load(), ops = progress.ops.load();
      if (live) {
        fmt::print(stderr, "\r{:6.0f} s  {}/s  {} IOPS      ",
                   std::chrono::duration<double>(Clock::now() - t0).count(),
                   format_bytes(double(bytes - last_bytes)), ops - last_ops);
      }
      last_bytes = bytes, last_ops = ops;
    }
    if (live) fmt::print(stderr, "\n");
  });
  for (auto& t : threads) {
    t.join();
    ++finished;
  }
  live_line.join();
  const double cpu = process_cpu_seconds() - cpu0;
  // The run ends with its last operation, not when the live line notices.
  Clock::time_point end = t0;
  for (const JobResult& r : results) end = std::max(end, r.ended);
  const double secs = std::max(1e-9, std::chrono::duration<double>(end - t0).count());

  JobResult sum;
  for (const JobResult& r : results) {
    if (!r.error.empty() && sum.error.empty()) {
      sum.error = r.error;
      sum.code = r.code;
    }
    for (size_t k = 0; k < sum.by_kind.size(); ++k) sum.by_kind[k].merge(r.by_kind[k]);
    sum.offloaded += r.offloaded, sum.emulated += r.emulated, sum.wire += r.wire;
    sum.host_read += r.host_read, sum.host_written += r.host_written;
    // The jobs' target reports add up; one that could not be read stands for all.
    if (r.target && (!sum.target || *sum.target)) {
      if (!sum.target || !*r.target) {
        sum.target = r.target;
      } else {
        (*sum.target)->commands += (*r.target)->commands;
        (*sum.target)->device_bytes += (*r.target)->device_bytes;
        (*sum.target)->emulated_bytes += (*r.target)->emulated_bytes;
      }
    }
  }
  if (!sum.error.empty()) return report_error(sum.code, sum.error);
  const PerfReport report{a, *bs, *copy_len, secs, cpu, sum, *percentiles};
  if (report_ops(sum) == 0) log_warning(fmt::format("no operation completed in {:.6f} s", secs));
  if (a.json) {
    fmt::print("{}\n", perf_json(report).dump(2));
  } else {
    print_perf_text(report);
  }
  return stopped(secs);
}

}  // namespace

void add_perf_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<PerfArgs>();
  CLI::App* cmd = app.add_subcommand(
      "perf", "Load a device with reads, writes and copies; report IOPS, latency and cost");
  cmd->add_option("DEV", a->device, "the device string to load")->required();
  cmd->add_option("--rw", a->rw,
                  "read|write|randread|randwrite|copy|randcopy|mix (default randread); fio's randrw is a "
                  "mix without copies");
  cmd->add_option("--bs", a->bs, "bytes per read or write (default 4k)");
  cmd->add_option("-l,--length,--copy-len", a->copy_len, "bytes per copy, as copy's --length (default: --bs)");
  cmd->add_option("--ranges", a->ranges, "source ranges per copy (default 1)")->check(CLI::Range(1u, 256u));
  cmd->add_option("--mix-copies", a->mix_copies,
                  "with --rw mix: percent of copies, the rest half reads, half writes (default 10)")
      ->check(CLI::Range(0u, 100u));
  // fio's names as aliases: --iodepth, --numjobs, --runtime.
  cmd->add_option("--qd,--iodepth", a->qd, "operations in flight per job (default 32)")
      ->check(CLI::Range(1u, 4096u));
  cmd->add_option("--jobs,--numjobs", a->jobs, "threads, each with its own loop and open (default 1)")
      ->check(CLI::Range(1u, 64u));
  cmd->add_option("--time,--runtime", a->seconds, "seconds to run (default 10; with --size, whichever comes first)")
      ->check(CLI::Range(1e-6, 1e9));  // NaN passes it: run_perf checks again
  cmd->add_option("--size,--io_size", a->size, "stop after this many bytes, all jobs together, "
                                               "instead of --time (fio's --size; whole operations)");
  cmd->add_option("--percentiles,--percentile_list", a->percentiles,
                  "latency percentiles to report, fio's list: 50:99:99.9 or 50,99,99.9 (the default)");
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
