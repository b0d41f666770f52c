// What a SCSI LUN answers is untrusted: every parser takes any bytes without reading past them
// (ASan), and what parses keeps within what the field widths allow.
#include <cstdlib>

#include "drivers/scsi/scsi_proto.h"
#include "fuzz/fuzz.h"

using namespace blkcopy::scsi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> d(data, size);
  const Sense s = parse_sense(d);
  (void)sense_text(s);
  (void)errno_for_sense(s);
  if (s.valid && s.key > 0x0F) std::abort();
  (void)parse_inquiry(d);
  (void)vpd_lists(d, 0x8F);
  if (auto naa = parse_naa_designator(d)) {
    if (naa->bytes.size() < 12 || naa->bytes.size() > 24 || naa->bytes[3] + 4u != naa->bytes.size()) {
      std::abort();
    }
    // A designator that parses makes an EXTENDED COPY list of the size SPC gives.
    const Designator luns[] = {*naa, *naa};
    const XcopySegment seg{1, 0, 1, 0, 0};
    if (encode_extended_copy(1, luns, 512, {&seg, 1}).size() != 16 + 64 + 28) std::abort();
  }
  (void)parse_block_limits(d);
  (void)parse_read_capacity16(d);
  if (auto p = parse_operating_parameters(d)) {
    if (p->descriptor_types.size() + 44 > size) std::abort();
  }
  return 0;
}
