// What a remote target says about the copies it was sent: the host knows only that it sent Copy
// commands ("offloaded to the controller"); blkcopy's target keeps a log page (C0h,
// nvme/copy_report.h) saying whether its devices copied them or it read and wrote them itself.
#pragma once

#include <blkcopy/device.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "nvme/copy_report.h"

namespace blkcopy::tools {

// The report of `dev`'s controller now: nullopt when `dev` is not an nvme-tcp:// namespace;
// an error (ENOTSUP) from a target that keeps no such page.
std::optional<Result<nvme::TargetCopyReport>> read_target_report(Device& dev);

// What the target did between two reports: JSON ("target": {...}) and a line of text.
struct TargetCopies {
  std::optional<Result<nvme::TargetCopyReport>> before, after;
  // Both read, and no counter went back (a target that restarted between them, or lies).
  bool known() const;
  nlohmann::ordered_json json() const;
  std::string text() const;  // "" when not known
};

}  // namespace blkcopy::tools
