// perf's report (tools/perf_report.h).
#include "tools/perf_report.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include <blkcopy/log.h>

#include <charconv>
#include <sstream>
#include <cmath>

#include "tools/interrupt.h"
#include "tools/report.h"
#include "tools/target_report.h"

namespace blkcopy::tools {
namespace {

constexpr const char* kKindNames[] = {"read", "write", "copy"};

OpStats all_kinds(const JobResult& sum) {
  OpStats all;
  for (const OpStats& s : sum.by_kind) all.merge(s);
  return all;
}

// fio's "clat_ns"-style object: min, max, mean, stddev, N and, when asked, the percentiles.
nlohmann::ordered_json latency_json(const Histogram& h, const std::vector<double>* percentiles) {
  nlohmann::ordered_json j;
  j["min"] = h.min_ns(), j["max"] = h.max_ns();
  j["mean"] = std::round(h.mean_ns() * 1000) / 1000, j["stddev"] = std::round(h.stddev_ns() * 1000) / 1000;
  j["N"] = h.count();
  if (percentiles) {
    nlohmann::ordered_json p = nlohmann::ordered_json::object();
    for (double q : *percentiles) p[fmt::format("{:f}", q)] = h.percentile_ns(q / 100);
    j["percentile"] = std::move(p);
  }
  return j;
}

// fio's per-direction object ("read": {...}).
nlohmann::ordered_json kind_json(const OpStats& s, double secs, const std::vector<double>& percentiles) {
  nlohmann::ordered_json j;
  j["total_ios"] = s.ops, j["io_bytes"] = s.bytes, j["io_kbytes"] = s.bytes / 1024;
  j["bw_bytes"] = uint64_t(double(s.bytes) / secs), j["bw"] = uint64_t(double(s.bytes) / secs / 1024);
  j["iops"] = double(s.ops) / secs;
  j["runtime"] = uint64_t(std::llround(secs * 1000));  // milliseconds, as fio
  j["slat_ns"] = latency_json(s.slat, nullptr);
  j["clat_ns"] = latency_json(s.clat, &percentiles);
  j["lat_ns"] = latency_json(s.lat, &percentiles);
  return j;
}

std::string percentile_label(double q) { return fmt::format("p{}", q); }

// "avg 1.2  p50 1.1  p99 3.0  max 9.5" in microseconds.
std::string latency_line(const Histogram& h, const std::vector<double>& percentiles) {
  std::string line = fmt::format("avg {:.1f}", h.mean_ns() / 1000);
  for (double q : percentiles) {
    line += fmt::format("  {} {:.1f}", percentile_label(q), double(h.percentile_ns(q / 100)) / 1000);
  }
  return line + fmt::format("  max {:.1f}", double(h.max_ns()) / 1000);
}

}  // namespace

uint64_t report_ops(const JobResult& sum) { return all_kinds(sum).ops; }

std::optional<std::vector<double>> parse_percentiles(const std::string& list) {
  std::vector<double> out;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find_first_of(",:", at), list.size());
    double q = 0;
    const char* first = list.data() + at;
    const char* last = list.data() + end;
    auto [ptr, ec] = std::from_chars(first, last, q);
    if (ec != std::errc{} || ptr != last || !(q > 0 && q <= 100) || out.size() == 20) return std::nullopt;
    // Two that fio's six decimals cannot tell apart would be one JSON key.
    for (double p : out) {
      if (fmt::format("{:f}", p) == fmt::format("{:f}", q)) return std::nullopt;
    }
    out.push_back(q);
    at = end + 1;
  }
  return out;
}

nlohmann::ordered_json perf_json(const PerfReport& r) {
  const PerfArgs& a = r.args;
  const OpStats all = all_kinds(r.sum);
  const auto& k = r.sum.by_kind;
  const double gib = double(all.bytes) / double(1u << 30);
  nlohmann::ordered_json j;
  j["device"] = a.device;
  if (!a.dst.empty()) j["dst"] = a.dst;
  j["rw"] = a.rw, j["bs"] = r.bs, j["copy_len"] = r.copy_len, j["ranges"] = a.ranges;
  j["qd"] = a.qd, j["numjobs"] = a.jobs, j["seconds"] = microseconds(r.seconds);
  j["ops"] = all.ops, j["reads"] = k[0].ops, j["writes"] = k[1].ops, j["copies"] = k[2].ops;
  j["bytes"] = all.bytes, j["iops"] = double(all.ops) / r.seconds;
  j["mib_per_second"] = double(all.bytes) / r.seconds / double(1u << 20);
  nlohmann::ordered_json lat;
  lat["avg"] = all.lat.mean_ns() / 1000;
  for (double q : r.percentiles) lat[percentile_label(q)] = double(all.lat.percentile_ns(q / 100)) / 1000;
  lat["max"] = double(all.lat.max_ns()) / 1000;
  j["latency_us"] = std::move(lat);
  j["cpu_seconds"] = microseconds(r.cpu_seconds);
  j["cpu_seconds_per_gib"] = microseconds(gib > 0 ? r.cpu_seconds / gib : 0);
  j["offloaded_bytes"] = r.sum.offloaded, j["emulated_bytes"] = r.sum.emulated;
  j["host_read_bytes"] = r.sum.host_read, j["host_written_bytes"] = r.sum.host_written;
  j["wire_bytes"] = r.sum.wire;
  if (r.sum.target) j["target"] = target_report_json(*r.sum.target);
  // fio's layout: one job (the jobs together, as fio's group_reporting) with an object per kind.
  nlohmann::ordered_json job;
  job["jobname"] = "blkcopy-perf", job["groupid"] = 0, job["job_runtime"] = uint64_t(std::llround(r.seconds * 1000));
  for (size_t i = 0; i < k.size(); ++i) job[kKindNames[i]] = kind_json(k[i], r.seconds, r.percentiles);
  j["jobs"] = nlohmann::ordered_json::array({std::move(job)});
  if (interrupt_signal()) j["interrupted"] = fmt::format("SIG{}", sigabbrev_np(interrupt_signal()));
  return j;
}

void print_perf_text(const PerfReport& r) {
  const PerfArgs& a = r.args;
  const OpStats all = all_kinds(r.sum);
  const bool copies = a.copies();
  fmt::print("{} {} bs={} qd={} jobs={}{}: {} ops in {:.2f} s\n", a.device, a.rw,
             format_bytes(double(r.bs)), a.qd, a.jobs,
             copies ? fmt::format(" length={} ranges={}", format_bytes(double(r.copy_len)), a.ranges) : "",
             all.ops, r.seconds);
  unsigned kinds = 0;
  for (size_t i = 0; i < r.sum.by_kind.size(); ++i) {
    const OpStats& s = r.sum.by_kind[i];
    if (s.ops == 0) continue;
    ++kinds;
    fmt::print("  {:<7}{:.0f} IOPS, {}/s ({} ops)\n", std::string(kKindNames[i]) + ":",
               double(s.ops) / r.seconds, format_bytes(double(s.bytes) / r.seconds), s.ops);
    fmt::print("    lat us: {}\n", latency_line(s.lat, r.percentiles));
    fmt::print("    slat us: avg {:.1f}  max {:.1f};  clat us: avg {:.1f}  max {:.1f}\n",
               s.slat.mean_ns() / 1000, double(s.slat.max_ns()) / 1000, s.clat.mean_ns() / 1000,
               double(s.clat.max_ns()) / 1000);
  }
  if (kinds != 1) {
    fmt::print("  all:   {:.0f} IOPS, {}/s ({} ops)\n", double(all.ops) / r.seconds,
               format_bytes(double(all.bytes) / r.seconds), all.ops);
    fmt::print("    lat us: {}\n", latency_line(all.lat, r.percentiles));
  }
  const double gib = double(all.bytes) / double(1u << 30);
  fmt::print("  CPU {:.2f} s ({:.2f} s per GiB)\n", r.cpu_seconds, gib > 0 ? r.cpu_seconds / gib : 0.0);
  fmt::print("  host read {}, written {}; offloaded {}, emulated {}; wire {}\n",
             format_bytes(double(r.sum.host_read)), format_bytes(double(r.sum.host_written)),
             format_bytes(double(r.sum.offloaded)), format_bytes(double(r.sum.emulated)),
             format_bytes(double(r.sum.wire)));
  if (r.sum.target) {
    std::istringstream lines(target_report_text(*r.sum.target));
    for (std::string line; std::getline(lines, line);) fmt::print("  {}\n", line);
    if (!*r.sum.target) log_info((*r.sum.target).error().message());
  }
}

}  // namespace blkcopy::tools
