// The Copy source range decoder: any bytes either decode or are refused, and what decodes
// encodes back to the same ranges.
#include <cstdlib>
#include <cstring>

#include "fuzz/fuzz.h"
#include "nvme/copy_ranges.h"

using namespace blkcopy::nvme;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
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
