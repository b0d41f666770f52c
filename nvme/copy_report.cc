// blkcopy's Copy report log page (nvme/copy_report.h).
#include "nvme/copy_report.h"

#include <algorithm>
#include <cstring>

#include "nvme/codec.h"

namespace blkcopy::nvme {
namespace {

constexpr char kSignature[4] = {'B', 'C', 'R', '1'};
constexpr size_t kCommands = 8, kDeviceBytes = 16, kEmulatedBytes = 24, kCopiesBy = 64,
                 kCopiesByLen = 256;

}  // namespace

std::vector<uint8_t> encode_copy_report(const TargetCopyReport& r) {
  std::vector<uint8_t> page(kCopyReportSize, 0);
  std::span<uint8_t> p(page);
  std::memcpy(page.data(), kSignature, sizeof kSignature);
  put<uint64_t>(p, kCommands, r.commands);
  put<uint64_t>(p, kDeviceBytes, r.device_bytes);
  put<uint64_t>(p, kEmulatedBytes, r.emulated_bytes);
  // Cut to the field, leaving its last byte NUL.
  const size_t n = std::min(r.device_copies_by.size(), kCopiesByLen - 1);
  std::memcpy(page.data() + kCopiesBy, r.device_copies_by.data(), n);
  return page;
}

std::optional<TargetCopyReport> decode_copy_report(std::span<const uint8_t> page) {
  if (page.size() < kCopyReportSize || std::memcmp(page.data(), kSignature, sizeof kSignature) != 0) {
    return std::nullopt;
  }
  TargetCopyReport r;
  r.commands = get<uint64_t>(page, kCommands);
  r.device_bytes = get<uint64_t>(page, kDeviceBytes);
  r.emulated_bytes = get<uint64_t>(page, kEmulatedBytes);
  const auto* s = reinterpret_cast<const char*>(page.data() + kCopiesBy);
  r.device_copies_by.assign(s, strnlen(s, kCopiesByLen));
  // What the target says is shown to the user and put in JSON: printable ASCII only (no
  // escapes, C1 controls, bidi overrides or broken UTF-8 from a lying target).
  for (char& c : r.device_copies_by) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
  }
  return r;
}

}  // namespace blkcopy::nvme
