// What a remote target says about the copies it was sent: the host knows only that it sent Copy
// commands ("offloaded to the controller"); blkcopy's target keeps a log page (C0h,
// nvme/copy_report.h) saying whether its devices copied them or it read and wrote them itself.
// Its counters are the controller's, which a CLI command has to itself: read once after the
// copy, they are that copy's.
#pragma once

#include <blkcopy/device.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

#include "nvme/copy_report.h"

namespace blkcopy::tools {

// The report of `dev`'s controller: nullopt when `dev` is not an nvme-tcp:// namespace; an
// error when the target keeps no such page (ENOTSUP), does not answer within `limit`
// (ETIMEDOUT: the copy is done, and is not kept waiting for a diagnostic) or `cancel` is set.
// `sent` bounds what it may claim: the bytes this command's controller sent as Copy commands
// (a report of more is a lying target's, and an error).
std::optional<Result<nvme::TargetCopyReport>> read_target_report(
    Device& dev, std::chrono::milliseconds limit, const std::atomic<bool>* cancel, uint64_t sent);

// "target": {"copy_commands", "device_bytes", "emulated_bytes", and "device_copies_by" or
// "device_does_not_copy"}, or {"error"}.
nlohmann::ordered_json target_report_json(const Result<nvme::TargetCopyReport>& r);
// "on target  ..." lines; "" when the report could not be read.
std::string target_report_text(const Result<nvme::TargetCopyReport>& r);

}  // namespace blkcopy::tools
