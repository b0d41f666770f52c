// The source range list of an NVMe Copy command (formats 0 and 2), encoded and decoded through
// spec.h's structs: the host writes it, the target reads it. Decoding checks only the shape
// (format, count, length); what the values mean (namespace, bounds, limits) is the target's.
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <span>
#include <vector>

namespace blkcopy::nvme {

struct CopySource {
  uint32_t snsid = 0;  // source namespace (format 2); 0 in format 0
  uint64_t slba = 0;
  uint32_t blocks = 0;  // 1 to 65536
};

inline constexpr uint32_t kMaxCopyRanges = 256;  // NR is 8 bits, 0-based

// REQUIRES: 1 <= sources.size() <= 256, every blocks in 1..65536, format 0 or 2.
std::vector<uint8_t> encode_copy_ranges(std::span<const CopySource> sources, uint8_t format);
// The same into `out`, reusing its storage.
void encode_copy_ranges(std::span<const CopySource> sources, uint8_t format, std::vector<uint8_t>& out);

// `nr` ranges (1-based count) of `format` from `data`, which must hold exactly nr entries.
// Errors: EINVAL for a format other than 0 or 2, EMSGSIZE for a length that is not
// nr x 32 bytes or a count outside 1..256.
Result<std::vector<CopySource>> decode_copy_ranges(std::span<const uint8_t> data, uint32_t nr,
                                                   uint8_t format);
// The same into `out`, reusing its storage.
Status decode_copy_ranges(std::span<const uint8_t> data, uint32_t nr, uint8_t format,
                          std::vector<CopySource>& out);

}  // namespace blkcopy::nvme
