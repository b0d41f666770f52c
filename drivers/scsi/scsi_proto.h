// SCSI bytes for copy offload (SPC-4, SBC-3): the CDBs blkcopy sends, parsers for what a LUN
// answers (INQUIRY, VPD pages, READ CAPACITY(16), RECEIVE COPY RESULTS operating parameters,
// sense data) and the EXTENDED COPY (LID1) parameter list. Everything a device returns is
// untrusted: every parser checks lengths before it reads and never trusts a length field
// beyond the bytes it was given (fuzz/fuzz_scsi_proto.cc).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace blkcopy::scsi {

// ---- CDBs ----
std::array<uint8_t, 6> cdb_inquiry(bool evpd, uint8_t page, uint16_t alloc);
std::array<uint8_t, 16> cdb_read_capacity16(uint32_t alloc);
std::array<uint8_t, 16> cdb_operating_parameters(uint32_t alloc);  // RECEIVE COPY RESULTS sa 3
std::array<uint8_t, 16> cdb_extended_copy(uint32_t param_len);    // EXTENDED COPY (LID1)

// ---- answers ----
struct Inquiry {
  uint8_t device_type = 0x1F;  // peripheral device type (0 = direct access block device)
  bool tpc = false;            // 3PC: a copy manager (EXTENDED COPY) is present
  std::string vendor, product, revision;
};
std::optional<Inquiry> parse_inquiry(std::span<const uint8_t> data);

// VPD 0x00: whether `page` is listed.
bool vpd_lists(std::span<const uint8_t> vpd00, uint8_t page);

// VPD 0x83: the logical unit's first NAA designator with the binary code set (what an
// identification CSCD descriptor carries), as its 4-byte header and the designator.
struct Designator {
  std::vector<uint8_t> bytes;  // header (code set, association/type, 0, length) + designator
  std::string hex() const;     // the designator, e.g. "6001405..."
};
std::optional<Designator> parse_naa_designator(std::span<const uint8_t> vpd83);

// VPD 0xB0 (Block Limits), the fields blkcopy shows.
struct BlockLimits {
  uint32_t max_transfer_blocks = 0;  // 0: not reported
  uint32_t optimal_transfer_blocks = 0;
  uint32_t max_unmap_blocks = 0;
  uint64_t max_write_same_blocks = 0;
};
std::optional<BlockLimits> parse_block_limits(std::span<const uint8_t> vpdb0);

struct Capacity {
  uint64_t blocks = 0;  // last LBA + 1
  uint32_t block_size = 0;
};
std::optional<Capacity> parse_read_capacity16(std::span<const uint8_t> data);

// RECEIVE COPY RESULTS, OPERATING PARAMETERS: what the copy manager takes.
struct CopyParameters {
  uint16_t max_cscd = 0;              // CSCD descriptors per command
  uint16_t max_segments = 0;          // segment descriptors per command
  uint32_t max_list_bytes = 0;        // descriptor list length
  uint32_t max_segment_bytes = 0;     // bytes per segment (0: no limit given)
  uint32_t max_inline_bytes = 0;
  uint32_t held_data_limit = 0;
  uint8_t segment_granularity_log2 = 0;
  std::vector<uint8_t> descriptor_types;  // implemented descriptor type codes
  bool implements(uint8_t type) const;
};
std::optional<CopyParameters> parse_operating_parameters(std::span<const uint8_t> data);

// ---- sense data ----
struct Sense {
  bool valid = false;
  uint8_t key = 0, asc = 0, ascq = 0;
  std::optional<uint64_t> information;       // INFORMATION field, when valid
  std::optional<uint32_t> command_specific;  // COMMAND-SPECIFIC INFORMATION
};
Sense parse_sense(std::span<const uint8_t> data);  // fixed (70h/71h) and descriptor (72h/73h)
const char* sense_key_name(uint8_t key);
// "ILLEGAL REQUEST, invalid field in CDB (ASC/ASCQ 0x24/0x00)"
std::string sense_text(const Sense& s);
// The errno a failed command means for blkcopy: EOPNOTSUPP where the copy manager says it cannot
// do this copy (not reachable, unsupported descriptors or command), so the engine emulates it.
int errno_for_sense(const Sense& s);
// UNIT ATTENTION (after a reset or a LUN change): the command may be sent again once.
inline bool retry_once(const Sense& s) { return s.valid && s.key == 0x6; }

// ---- EXTENDED COPY (LID1) parameter list ----
inline constexpr size_t kXcopyHeaderBytes = 16, kCscdBytes = 32, kSegmentBytes = 28;
inline constexpr uint32_t kMaxSegmentBlocks = 0xFFFF;  // NUMBER OF BLOCKS is 16 bits
inline constexpr uint8_t kTypeBlockToBlock = 0x02, kTypeIdentification = 0xE4;

struct XcopySegment {
  uint16_t src_cscd = 0, dst_cscd = 0;
  uint16_t blocks = 0;
  uint64_t src_lba = 0, dst_lba = 0;
};
// The parameter list: identification (E4h) CSCD descriptors for the LUNs (one per designator)
// and block-to-block (02h) segment descriptors.
std::vector<uint8_t> encode_extended_copy(uint8_t list_id, std::span<const Designator> luns,
                                          uint32_t block_size,
                                          std::span<const XcopySegment> segments);

}  // namespace blkcopy::scsi
