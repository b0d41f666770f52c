#include "drivers/scsi/scsi_proto.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>

namespace blkcopy::scsi {
namespace {

// Big-endian fields; callers have checked that the bytes are there.
uint64_t be(std::span<const uint8_t> d, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | d[at + i];
  return v;
}
void put_be(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[n - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
}

std::string ascii(std::span<const uint8_t> d, size_t at, size_t n) {
  std::string s;
  for (size_t i = at; i < at + n && i < d.size(); ++i) {
    s += (d[i] >= 0x20 && d[i] < 0x7F) ? static_cast<char>(d[i]) : ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// The page's bytes as far as both its length field and the answer reach.
std::span<const uint8_t> vpd_body(std::span<const uint8_t> d, uint8_t page) {
  if (d.size() < 4 || d[1] != page) return {};
  const size_t len = std::min<size_t>(be(d, 2, 2), d.size() - 4);
  return d.subspan(4, len);
}

}  // namespace

std::array<uint8_t, 6> cdb_inquiry(bool evpd, uint8_t page, uint16_t alloc) {
  std::array<uint8_t, 6> c{0x12, static_cast<uint8_t>(evpd ? 1 : 0), evpd ? page : uint8_t{0}};
  put_be(&c[3], alloc, 2);
  return c;
}

namespace {
// A 16-byte CDB with a service action and a 32-bit length in bytes 10-13.
std::array<uint8_t, 16> cdb16(uint8_t opcode, uint8_t service_action, uint32_t length) {
  std::array<uint8_t, 16> c{opcode, service_action};
  put_be(&c[10], length, 4);
  return c;
}
}  // namespace

std::array<uint8_t, 16> cdb_read_capacity16(uint32_t alloc) { return cdb16(0x9E, 0x10, alloc); }
std::array<uint8_t, 16> cdb_operating_parameters(uint32_t alloc) { return cdb16(0x84, 0x03, alloc); }
std::array<uint8_t, 16> cdb_extended_copy(uint32_t len) { return cdb16(0x83, 0x00, len); }

std::optional<Inquiry> parse_inquiry(std::span<const uint8_t> d) {
  if (d.size() < 8) return std::nullopt;
  Inquiry q;
  q.device_type = d[0] & 0x1F;
  q.tpc = d[5] & 0x08;
  q.vendor = ascii(d, 8, 8);
  q.product = ascii(d, 16, 16);
  q.revision = ascii(d, 32, 4);
  return q;
}

bool vpd_lists(std::span<const uint8_t> vpd00, uint8_t page) {
  auto body = vpd_body(vpd00, 0x00);
  return std::find(body.begin(), body.end(), page) != body.end();
}

std::string Designator::hex() const {
  std::string s;
  for (size_t i = 4; i < bytes.size(); ++i) s += fmt::format("{:02x}", bytes[i]);
  return s;
}

std::optional<Designator> parse_naa_designator(std::span<const uint8_t> vpd83) {
  auto body = vpd_body(vpd83, 0x83);
  std::optional<Designator> best;
  for (size_t at = 0; at + 4 <= body.size();) {
    const size_t len = body[at + 3];
    if (at + 4 + len > body.size()) break;
    const uint8_t code_set = body[at] & 0x0F;
    const uint8_t association = (body[at + 1] >> 4) & 0x3;
    const uint8_t type = body[at + 1] & 0x0F;
    // Binary, the logical unit, NAA; an identification descriptor holds at most 20 bytes.
    if (code_set == 1 && association == 0 && type == 3 && len >= 8 && len <= 20) {
      Designator d;
      d.bytes.assign(body.begin() + static_cast<ptrdiff_t>(at),
                     body.begin() + static_cast<ptrdiff_t>(at + 4 + len));
      d.bytes[0] &= 0x0F;  // the protocol identifier does not belong in a CSCD descriptor
      d.bytes[1] &= 0x3F;  // nor PIV
      if (!best || (len == 16 && best->bytes.size() != 20)) best = std::move(d);  // prefer NAA 6
    }
    at += 4 + len;
  }
  return best;
}

std::optional<BlockLimits> parse_block_limits(std::span<const uint8_t> vpdb0) {
  auto body = vpd_body(vpdb0, 0xB0);
  if (body.size() < 12) return std::nullopt;  // through MAXIMUM TRANSFER LENGTH
  BlockLimits b;
  b.max_transfer_blocks = static_cast<uint32_t>(be(body, 4, 4));
  if (body.size() >= 16) b.optimal_transfer_blocks = static_cast<uint32_t>(be(body, 8, 4));
  if (body.size() >= 20) b.max_unmap_blocks = static_cast<uint32_t>(be(body, 16, 4));
  if (body.size() >= 40) b.max_write_same_blocks = be(body, 32, 8);
  return b;
}

std::optional<Capacity> parse_read_capacity16(std::span<const uint8_t> d) {
  if (d.size() < 12) return std::nullopt;
  const uint64_t last = be(d, 0, 8);
  if (last == UINT64_MAX) return std::nullopt;
  return Capacity{last + 1, static_cast<uint32_t>(be(d, 8, 4))};
}

bool CopyParameters::implements(uint8_t type) const {
  return std::find(descriptor_types.begin(), descriptor_types.end(), type) !=
         descriptor_types.end();
}

std::optional<CopyParameters> parse_operating_parameters(std::span<const uint8_t> d) {
  if (d.size() < 44) return std::nullopt;
  const size_t avail = std::min<size_t>(be(d, 0, 4), d.size() - 4) + 4;
  if (avail < 44) return std::nullopt;
  CopyParameters p;
  p.max_cscd = static_cast<uint16_t>(be(d, 8, 2));
  p.max_segments = static_cast<uint16_t>(be(d, 10, 2));
  p.max_list_bytes = static_cast<uint32_t>(be(d, 12, 4));
  p.max_segment_bytes = static_cast<uint32_t>(be(d, 16, 4));
  p.max_inline_bytes = static_cast<uint32_t>(be(d, 20, 4));
  p.held_data_limit = static_cast<uint32_t>(be(d, 24, 4));
  p.segment_granularity_log2 = d[37];
  const size_t n = std::min<size_t>(d[43], avail - 44);
  p.descriptor_types.assign(d.begin() + 44, d.begin() + 44 + static_cast<ptrdiff_t>(n));
  return p;
}

Sense parse_sense(std::span<const uint8_t> d) {
  Sense s;
  if (d.empty()) return s;
  const uint8_t code = d[0] & 0x7F;
  if ((code == 0x70 || code == 0x71) && d.size() >= 3) {
    s.valid = true;
    s.key = d[2] & 0x0F;
    if (d.size() >= 14 && d[7] >= 6) {  // ADDITIONAL SENSE LENGTH reaches ASC and ASCQ
      s.asc = d[12];
      s.ascq = d[13];
    }
    if ((d[0] & 0x80) && d.size() >= 7) s.information = be(d, 3, 4);
    if (d.size() >= 12 && d[7] >= 4) s.command_specific = static_cast<uint32_t>(be(d, 8, 4));
  } else if ((code == 0x72 || code == 0x73) && d.size() >= 4) {
    s.valid = true;
    s.key = d[1] & 0x0F;
    s.asc = d[2];
    s.ascq = d[3];
    const size_t end = d.size() >= 8 ? std::min<size_t>(d.size(), 8u + d[7]) : 0;
    for (size_t at = 8; at + 2 <= end;) {
      const size_t len = d[at + 1];
      if (at + 2 + len > end) break;
      if (d[at] == 0x00 && len >= 10 && (d[at + 2] & 0x80)) s.information = be(d, at + 4, 8);
      if (d[at] == 0x01 && len >= 10) s.command_specific = static_cast<uint32_t>(be(d, at + 8, 4));
      at += 2 + len;
    }
  }
  return s;
}

const char* sense_key_name(uint8_t key) {
  static constexpr const char* kNames[16] = {
      "NO SENSE",        "RECOVERED ERROR", "NOT READY",       "MEDIUM ERROR",
      "HARDWARE ERROR",  "ILLEGAL REQUEST", "UNIT ATTENTION",  "DATA PROTECT",
      "BLANK CHECK",     "VENDOR SPECIFIC", "COPY ABORTED",    "ABORTED COMMAND",
      "reserved (0xC)",  "VOLUME OVERFLOW", "MISCOMPARE",      "COMPLETED"};
  return kNames[key & 0x0F];
}

namespace {
struct AscName {
  uint8_t asc, ascq;
  const char* text;
};
constexpr AscName kAscNames[] = {
    {0x04, 0x00, "logical unit not ready"},
    {0x08, 0x00, "logical unit communication failure"},
    {0x0C, 0x00, "write error"},
    {0x0D, 0x00, "error detected by third party temporary initiator"},
    {0x0D, 0x01, "third party device failure"},
    {0x0D, 0x02, "copy target device not reachable"},
    {0x0D, 0x03, "incorrect copy target device type"},
    {0x0D, 0x04, "copy target device data underrun"},
    {0x0D, 0x05, "copy target device data overrun"},
    {0x11, 0x00, "unrecovered read error"},
    {0x1A, 0x00, "parameter list length error"},
    {0x20, 0x00, "invalid command operation code"},
    {0x21, 0x00, "logical block address out of range"},
    {0x24, 0x00, "invalid field in CDB"},
    {0x25, 0x00, "logical unit not supported"},
    {0x26, 0x00, "invalid field in parameter list"},
    {0x26, 0x06, "too many target descriptors"},
    {0x26, 0x07, "unsupported target descriptor type code"},
    {0x26, 0x08, "too many segment descriptors"},
    {0x26, 0x09, "unsupported segment descriptor type code"},
    {0x27, 0x00, "write protected"},
    {0x29, 0x00, "power on, reset, or bus device reset occurred"},
    {0x2A, 0x01, "mode parameters changed"},
    {0x3A, 0x00, "medium not present"},
    {0x3F, 0x0E, "reported LUNs data has changed"},
    {0x55, 0x00, "system resource failure"},
};
}  // namespace

std::string sense_text(const Sense& s) {
  if (!s.valid) return "no sense data";
  const char* what = nullptr;
  for (const AscName& a : kAscNames) {
    if (a.asc == s.asc && a.ascq == s.ascq) what = a.text;
  }
  return fmt::format("{}, {} (ASC/ASCQ {:#04x}/{:#04x})", sense_key_name(s.key),
                     what ? what : "unlisted condition", s.asc, s.ascq);
}

int errno_for_sense(const Sense& s) {
  if (!s.valid) return EIO;
  switch (s.key) {
    case 0x2: return EAGAIN;   // NOT READY
    case 0x3: return EIO;      // MEDIUM ERROR
    case 0x4: return EIO;      // HARDWARE ERROR
    case 0x5:                  // ILLEGAL REQUEST
      if (s.asc == 0x20 || (s.asc == 0x26 && s.ascq >= 0x06 && s.ascq <= 0x09)) return EOPNOTSUPP;
      if (s.asc == 0x21) return ERANGE;
      return EINVAL;
    case 0x6: return EAGAIN;   // UNIT ATTENTION
    case 0x7: return EROFS;    // DATA PROTECT
    case 0xA:                  // COPY ABORTED: the copy manager could not do it: emulate
      return s.asc == 0x0D ? EOPNOTSUPP : EIO;
    case 0xB: return EIO;      // ABORTED COMMAND
    case 0xD: return ENOSPC;   // VOLUME OVERFLOW
    default: return EIO;
  }
}

std::vector<uint8_t> encode_extended_copy(uint8_t list_id, std::span<const Designator> luns,
                                          uint32_t block_size,
                                          std::span<const XcopySegment> segments) {
  const size_t cscd_len = luns.size() * kCscdBytes, seg_len = segments.size() * kSegmentBytes;
  std::vector<uint8_t> out(kXcopyHeaderBytes + cscd_len + seg_len, 0);
  uint8_t* p = out.data();
  p[0] = list_id;
  p[1] = (2u << 3) | 1;  // LIST ID USAGE 10b (no held data), priority 1: as sg_xcopy and ddpt
  put_be(p + 2, cscd_len, 2);
  put_be(p + 8, seg_len, 4);
  p += kXcopyHeaderBytes;
  for (const Designator& d : luns) {
    p[0] = kTypeIdentification;  // LU ID TYPE 0, NUL 0, peripheral device type 0 (block)
    const size_t n = std::min<size_t>(d.bytes.size(), 24);  // 4-byte header + up to 20
    std::copy_n(d.bytes.begin(), n, p + 4);
    put_be(p + 29, block_size, 3);  // block device parameters: PAD 0, DISK BLOCK LENGTH
    p += kCscdBytes;
  }
  for (const XcopySegment& s : segments) {
    p[0] = kTypeBlockToBlock;
    put_be(p + 2, 0x18, 2);
    put_be(p + 4, s.src_cscd, 2);
    put_be(p + 6, s.dst_cscd, 2);
    put_be(p + 10, s.blocks, 2);
    put_be(p + 12, s.src_lba, 8);
    put_be(p + 20, s.dst_lba, 8);
    p += kSegmentBytes;
  }
  return out;
}

}  // namespace blkcopy::scsi
