// What a remote target says about the copies it was sent (tools/target_report.h).
#include "tools/target_report.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include <memory>

#include "nvme/host/nvme_tcp_device.h"

namespace blkcopy::tools {
namespace {

// The page's text is who copies for the destination namespace, or why its device does not
// ("none: ..."), as describe() words them.
bool does_not_copy(const nvme::TargetCopyReport& r) {
  return r.device_copies_by.empty() || r.device_copies_by.starts_with("none");
}

}  // namespace

std::optional<Result<nvme::TargetCopyReport>> read_target_report(
    Device& dev, std::chrono::milliseconds limit, const std::atomic<bool>* cancel, uint64_t sent) {
  auto* remote = dynamic_cast<nvme::NvmeTcpDevice*>(&dev);
  if (!remote) return std::nullopt;
  // Shared with the callback: it may run after this returns (or never, once the device goes).
  auto got = std::make_shared<std::optional<Result<nvme::TargetCopyReport>>>();
  remote->copy_report([got](Result<nvme::TargetCopyReport> r) {
    if (!*got) *got = std::move(r);
  });
  bool late = false;
  Timer timer = dev.loop().after(limit, [&late] { late = true; });
  Status s = dev.loop().run_until([&] { return got->has_value() || late || (cancel && cancel->load()); });
  timer.cancel();
  if (*got && **got && ((**got)->device_bytes > sent || (**got)->emulated_bytes > sent - (**got)->device_bytes)) {
    return Result<nvme::TargetCopyReport>(fail(
        EPROTO, fmt::format("{}: the target's copy report claims {} + {} bytes, more than the {} sent to it",
                            dev.name(), (**got)->device_bytes, (**got)->emulated_bytes, sent)));
  }
  if (*got) return std::move(**got);
  if (!s.ok()) return Result<nvme::TargetCopyReport>(std::unexpected(std::move(s)));
  return Result<nvme::TargetCopyReport>(fail(
      late ? ETIMEDOUT : ECANCELED,
      late ? fmt::format("{}: no copy report within {} ms", dev.name(), limit.count())
           : fmt::format("{}: interrupted while reading the copy report", dev.name())));
}

nlohmann::ordered_json target_report_json(const Result<nvme::TargetCopyReport>& r) {
  nlohmann::ordered_json j;
  if (!r) {
    j["error"] = r.error().message();
    return j;
  }
  j["copy_commands"] = r->commands;
  j["device_bytes"] = r->device_bytes;
  j["emulated_bytes"] = r->emulated_bytes;
  j[does_not_copy(*r) ? "device_does_not_copy" : "device_copies_by"] = r->device_copies_by;
  return j;
}

std::string target_report_text(const Result<nvme::TargetCopyReport>& r) {
  if (!r) return {};
  std::string out = fmt::format("on target  {} copied by its devices, {} emulated (read and written by the target)\n",
                                format_bytes(double(r->device_bytes)), format_bytes(double(r->emulated_bytes)));
  if (r->device_copies_by.empty()) return out;
  if (does_not_copy(*r)) {
    if (r->emulated_bytes) out += fmt::format("           its device does not copy: {}\n", r->device_copies_by);
  } else if (r->device_bytes) {
    out += fmt::format("           copied by {}\n", r->device_copies_by);
  }
  return out;
}

}  // namespace blkcopy::tools
