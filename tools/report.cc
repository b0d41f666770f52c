#include "tools/report.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include <cmath>
#include <sys/resource.h>

#include <charconv>
#include <chrono>
#include <cstdio>

namespace blkcopy::tools {

nlohmann::ordered_json info_json(const Device& dev) {
  const QueueLimits& l = dev.limits();
  const DeviceInfo info = dev.describe();
  nlohmann::ordered_json j;
  j["device"] = info.name;
  j["kind"] = info.kind;
  j["capacity"] = l.capacity;
  j["limits"] = {{"logical_block_size", l.logical_block_size},
                 {"max_io_bytes", l.max_io_bytes},
                 {"copy_max_hw_bytes", l.copy_max_hw_bytes},
                 {"copy_segment_max_bytes", l.copy_segment_max_bytes},
                 {"copy_max_src_segments", l.copy_max_src_segments},
                 {"copy_max_bytes", l.copy_max_bytes},
                 {"read_only", l.read_only}};
  j["copy"] = {{"offload", l.can_offload()}, {"method", info.copy_method}};
  // Values that are numbers (decimal, or 0x hex as Identify fields are shown) are numbers.
  for (const auto& [k, v] : info.details) {
    uint64_t n = 0;
    const bool hex = v.starts_with("0x") && v.size() > 2;
    const char* b = v.data() + (hex ? 2 : 0);
    auto [end, ec] = std::from_chars(b, v.data() + v.size(), n, hex ? 16 : 10);
    if (!v.empty() && ec == std::errc() && end == v.data() + v.size()) {
      j["details"][k] = n;
    } else {
      j["details"][k] = v;
    }
  }
  for (const auto& [role, child] : info.children) {
    nlohmann::ordered_json c = child ? info_json(*child) : nlohmann::ordered_json::object();
    c["role"] = role;
    j["children"].push_back(c);
  }
  return j;
}

namespace {
// The tree of a stack's children, one line each, indented by depth.
void tree_text(const Device& dev, int depth, std::string& out) {
  for (const auto& [role, child] : dev.describe().children) {
    out += fmt::format("{:{}}{} {}", "", 2 + 4 * depth, "-", role);
    if (child) {
      const QueueLimits& l = child->limits();
      out += fmt::format(": {} ({}, copy_max_bytes {})", child->name(),
                         format_bytes(double(l.capacity)), l.copy_max_bytes);
    }
    out += "\n";
    if (child) tree_text(*child, depth + 1, out);
  }
}
}  // namespace

std::string info_text(const Device& dev) {
  const QueueLimits& l = dev.limits();
  const DeviceInfo info = dev.describe();
  std::string out;
  auto row = [&](std::string_view k, const std::string& v) {
    out += fmt::format("{:<24} {}\n", k, v);
  };
  row("device", info.name);
  row("kind", info.kind);
  row("capacity", fmt::format("{} ({})", l.capacity, format_bytes(double(l.capacity))));
  row("logical_block_size", std::to_string(l.logical_block_size));
  row("max_io_bytes", std::to_string(l.max_io_bytes));
  row("copy_max_hw_bytes", std::to_string(l.copy_max_hw_bytes));
  row("copy_segment_max_bytes", std::to_string(l.copy_segment_max_bytes));
  row("copy_max_src_segments", std::to_string(l.copy_max_src_segments));
  row("copy_max_bytes", std::to_string(l.copy_max_bytes));
  row("read_only", l.read_only ? "1" : "0");
  // "none (nocopy): copies are emulated" reads "no (nocopy): copies are emulated".
  const std::string_view method = info.copy_method;
  row("copy offload", !l.can_offload() && method.starts_with("none")
                          ? fmt::format("no{}", method.substr(4))
                          : fmt::format("{}: {}", l.can_offload() ? "yes" : "no", method));
  for (const auto& [k, v] : info.details) row(k, v);
  if (!info.children.empty()) {
    out += "children:\n";
    tree_text(dev, 0, out);
  }
  return out;
}

nlohmann::ordered_json result_json(const CopyResult& r) {
  nlohmann::ordered_json j;
  j["status"] = r.status.ok() ? "ok" : "error";
  if (!r.status.ok()) {
    j["error"] = r.status.message();
    j["errno"] = r.status.code();
  }
  j["bytes"] = r.bytes;
  j["backward"] = r.backward;
  j["offloaded_bytes"] = r.offloaded_bytes;
  j["emulated_bytes"] = r.emulated_bytes;
  if (r.emulated_bytes && !r.emulated_because.empty()) j["emulated_because"] = r.emulated_because;
  j["host_read_bytes"] = r.host_read_bytes;
  j["host_written_bytes"] = r.host_written_bytes;
  j["commands"] = r.commands;
  j["seconds"] = microseconds(r.seconds);
  for (const auto& [dev, n] : r.offloaded_by_device) j["offloaded_by_device"][dev] = n;
  return j;
}

std::string result_text(const CopyResult& r) {
  const double rate = r.seconds > 0 ? double(r.bytes) / r.seconds : 0;
  std::string out = fmt::format(
      "copied     {} in {:.3f} s ({}/s){}\n"
      "offloaded  {:<12} emulated      {}\n"
      "host read  {:<12} host written  {}\n"
      "commands   {}\n",
      format_bytes(double(r.bytes)), r.seconds, format_bytes(rate),
      r.backward ? " (walked from the end: the ranges overlap)" : "",
      format_bytes(double(r.offloaded_bytes)), format_bytes(double(r.emulated_bytes)),
      format_bytes(double(r.host_read_bytes)), format_bytes(double(r.host_written_bytes)),
      r.commands);
  if (r.emulated_bytes && !r.emulated_because.empty()) out += fmt::format("emulated   because {}\n", r.emulated_because);
  // Through a stack: which children did the offloaded work.
  if (r.offloaded_by_device.size() > 1 ||
      (r.offloaded_by_device.size() == 1 && r.offloaded_by_device[0].second != r.bytes)) {
    for (const auto& [dev, n] : r.offloaded_by_device) {
      out += fmt::format("  offloaded on {}: {}\n", dev, format_bytes(double(n)));
    }
  }
  return out;
}

double microseconds(double seconds) { return std::round(seconds * 1e6) / 1e6; }

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return double(tv.tv_sec) + double(tv.tv_usec) / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

ProgressBar::ProgressBar(bool enabled, bool forced)
    : enabled_(enabled || forced), forced_(forced), started_(now_s()) {}

void ProgressBar::update(uint64_t done, uint64_t total) {
  if (!enabled_ || total == 0) return;
  const double now = now_s();
  if (!forced_ && now - started_ < 0.5) return;
  if (last_ >= 0 && now - last_ < 0.1 && done != total) return;
  last_ = now;
  constexpr int kWidth = 30;
  const double frac = double(done) / double(total);
  const int filled = int(frac * kWidth);
  const double rate = now > started_ ? double(done) / (now - started_) : 0;
  // As dd's status=progress and ddpt: the rate so far, and when it will end at that rate.
  auto clock = [](double s) {
    const auto t = static_cast<uint64_t>(s + 0.5);
    return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                     : fmt::format("{}:{:02}", t / 60, t % 60);
  };
  const std::string eta = done >= total ? "done" : rate > 0 ? "ETA " + clock(double(total - done) / rate) : "ETA -";
  fmt::print(stderr, "\r[{:#<{}}{:<{}}] {:3.0f}% {} of {} {}/s {} {}  ", "", filled, "",
             kWidth - filled, frac * 100, format_bytes(double(done)), format_bytes(double(total)),
             format_bytes(rate), clock(now - started_), eta);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) fmt::print(stderr, "\n");
  drawn_ = false;
}

}  // namespace blkcopy::tools
