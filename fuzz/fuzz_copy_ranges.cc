// The Copy source range decoder: any bytes either decode or are refused, and what decodes
// encodes back to the same ranges. The same bytes as a Copy report (log page C0h, what a host
// reads from a target after its copies): refused, or printable text within its field that
// encodes back to the same report.
#include <cstdlib>
#include <cstring>

#include "fuzz/fuzz.h"
#include "nvme/copy_ranges.h"
#include "nvme/copy_report.h"

using namespace blkcopy::nvme;

namespace {

void check_copy_report(std::span<const uint8_t> page) {
  auto r = decode_copy_report(page);
  if (!r) return;
  if (r->device_copies_by.size() > 256) std::abort();
  for (char c : r->device_copies_by) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) std::abort();
  }
  auto again = decode_copy_report(encode_copy_report(*r));
  if (!again || again->commands != r->commands || again->device_bytes != r->device_bytes ||
      again->emulated_bytes != r->emulated_bytes ||
      !r->device_copies_by.starts_with(again->device_copies_by)) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_copy_report({data, size});
  if (size < 2) return 0;
  const uint32_t nr = data[0] + 1u;
  const uint8_t format = data[1] & 0xF;
  auto ranges = decode_copy_ranges({data + 2, size - 2}, nr, format);
  if (!ranges) return 0;
  if (ranges->size() != nr) std::abort();
  auto again = decode_copy_ranges(encode_copy_ranges(*ranges, format), nr, format);
  if (!again || again->size() != nr) std::abort();
  for (uint32_t i = 0; i < nr; ++i) {
    const CopySource& a = (*ranges)[i];
    const CopySource& b = (*again)[i];
    if (a.snsid != b.snsid || a.slba != b.slba || a.blocks != b.blocks || a.blocks == 0 ||
        a.blocks > 65536) {
      std::abort();
    }
  }
  return 0;
}
