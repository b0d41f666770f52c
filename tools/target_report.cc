// What a remote target says about the copies it was sent (tools/target_report.h).
#include "tools/target_report.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include "nvme/host/nvme_tcp_device.h"

namespace blkcopy::tools {

std::optional<Result<nvme::TargetCopyReport>> read_target_report(Device& dev) {
  auto* remote = dynamic_cast<nvme::NvmeTcpDevice*>(&dev);
  if (!remote) return std::nullopt;
  std::optional<Result<nvme::TargetCopyReport>> got;
  remote->copy_report([&got](Result<nvme::TargetCopyReport> r) { got = std::move(r); });
  // The admin queue's command timeout bounds the wait: a target that does not answer fails it.
  Status s = dev.loop().run_until([&got] { return got.has_value(); });
  if (!got) return Result<nvme::TargetCopyReport>(std::unexpected(std::move(s)));
  return got;
}

bool TargetCopies::known() const {
  if (!before || !after || !*before || !*after) return false;
  const nvme::TargetCopyReport &a = **before, &b = **after;
  return b.commands >= a.commands && b.device_bytes >= a.device_bytes && b.emulated_bytes >= a.emulated_bytes;
}

nlohmann::ordered_json TargetCopies::json() const {
  nlohmann::ordered_json j;
  if (!known()) {
    const auto& bad = before && !*before ? before : after;
    j["error"] = bad && !*bad ? (*bad).error().message()
                 : bad         ? "the target's counters went back between the reports (it restarted?)"
                               : "not read";
    return j;
  }
  const nvme::TargetCopyReport &a = **before, &b = **after;
  j["copy_commands"] = b.commands - a.commands;
  j["device_bytes"] = b.device_bytes - a.device_bytes;
  j["emulated_bytes"] = b.emulated_bytes - a.emulated_bytes;
  j["device_copies_by"] = b.device_copies_by;
  return j;
}

std::string TargetCopies::text() const {
  if (!known()) return {};
  const nvme::TargetCopyReport &a = **before, &b = **after;
  const uint64_t device = b.device_bytes - a.device_bytes, emulated = b.emulated_bytes - a.emulated_bytes;
  std::string out = fmt::format("on target  {} by its devices, {} emulated (the target read and wrote them)\n",
                                format_bytes(double(device)), format_bytes(double(emulated)));
  if (device && !b.device_copies_by.empty()) out += fmt::format("           copied by {}\n", b.device_copies_by);
  return out;
}

}  // namespace blkcopy::tools
