#include "nvme/copy_ranges.h"

#include <fmt/format.h>

#include <cstring>

#include "nvme/spec.h"

namespace blkcopy::nvme {

static_assert(sizeof(CopyRange0) == sizeof(CopyRange2));

std::vector<uint8_t> encode_copy_ranges(std::span<const CopySource> sources, uint8_t format) {
  std::vector<uint8_t> out;
  encode_copy_ranges(sources, format, out);
  return out;
}

void encode_copy_ranges(std::span<const CopySource> sources, uint8_t format, std::vector<uint8_t>& out) {
  out.assign(sources.size() * sizeof(CopyRange2), 0);
  for (size_t i = 0; i < sources.size(); ++i) {
    CopyRange2 r{};  // format 0 is the same but for the reserved SNSID field
    r.snsid = format == 2 ? sources[i].snsid : 0;
    r.slba = sources[i].slba;
    r.nlb = static_cast<uint16_t>(sources[i].blocks - 1);
    std::memcpy(out.data() + i * sizeof r, &r, sizeof r);
  }
}

Result<std::vector<CopySource>> decode_copy_ranges(std::span<const uint8_t> data, uint32_t nr,
                                                   uint8_t format) {
  std::vector<CopySource> out;
  if (Status s = decode_copy_ranges(data, nr, format, out); !s.ok()) return std::unexpected(s);
  return out;
}

Status decode_copy_ranges(std::span<const uint8_t> data, uint32_t nr, uint8_t format,
                          std::vector<CopySource>& out) {
  if (format != 0 && format != 2) {
    return Status::error(EINVAL, fmt::format("copy range format {} is not supported (0 and 2 are)", format));
  }
  if (nr == 0 || nr > kMaxCopyRanges || data.size() != nr * sizeof(CopyRange2)) {
    return Status::error(EMSGSIZE, fmt::format("{} copy ranges need {} bytes, got {}", nr,
                                               uint64_t(nr) * sizeof(CopyRange2), data.size()));
  }
  out.resize(nr);
  for (uint32_t i = 0; i < nr; ++i) {
    CopyRange2 r;
    std::memcpy(&r, data.data() + i * sizeof r, sizeof r);
    out[i] = {format == 2 ? r.snsid : 0, r.slba, r.nlb + 1u};
  }
  return {};
}

}  // namespace blkcopy::nvme
