// blkcopy's vendor-specific log page C0h, "Copy report" (NVMe 2.0 leaves C0h-FFh to vendors):
// how the target did the Copy commands of the controller that reads it, so that a host can say
// more than "offloaded to the controller". 512 bytes, little-endian:
//     0-3    "BCR1"
//     8-15   Copy commands completed on this controller (whatever their status)
//    16-23   bytes the namespaces' devices copied themselves (offloaded below the target)
//    24-31   bytes the target copied by reading and writing them (emulated)
//    64-319  for the NSID in the command: who copies what its device offloads, or why it
//            does not ("none: ..."); printable ASCII, NUL-padded; empty when NSID is 0 or
//            not a namespace
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace blkcopy::nvme {

inline constexpr uint8_t kLogCopyReport = 0xC0;
inline constexpr size_t kCopyReportSize = 512;

struct TargetCopyReport {
  uint64_t commands = 0, device_bytes = 0, emulated_bytes = 0;
  std::string device_copies_by;
};

std::vector<uint8_t> encode_copy_report(const TargetCopyReport& r);
// nullopt when the page is short or not blkcopy's (another target's C0h means something else).
std::optional<TargetCopyReport> decode_copy_report(std::span<const uint8_t> page);

}  // namespace blkcopy::nvme
