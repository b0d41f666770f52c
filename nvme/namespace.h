// What Identify Namespace and Identify Controller say about a namespace, checked, and the
// queue limits that follow: shared by every driver that talks NVMe to a controller (the
// NVMe/TCP host, local NVMe passthrough).
#pragma once

#include <blkcopy/device.h>

#include <cstdint>
#include <span>
#include <string>

namespace blkcopy::nvme {

struct ControllerCaps {  // from Identify Controller
  uint16_t oncs = 0, ocfs = 0;
  uint8_t mdts = 0;  // 0 = no limit; else 2^mdts minimum pages
  uint32_t sgls = 0;
  std::string serial, model, firmware;  // SN, MN, FR without their padding
  bool copy() const;
  // Bytes one command may transfer: 2^mdts * 4 KiB (CAP.MPSMIN assumed 4 KiB), capped at `cap`.
  uint32_t max_transfer(uint32_t cap) const;
};
ControllerCaps parse_identify_controller(std::span<const uint8_t> id);

struct NamespaceGeometry {  // from Identify Namespace
  uint64_t nsze = 0;
  uint32_t block_size = 0;  // bytes, 512..64 KiB
  uint64_t capacity = 0;    // bytes
  uint8_t flbas = 0, lbaf = 0, nlbaf = 0;
  uint16_t metadata_size = 0;  // bytes per block (LBAF MS)
  uint8_t dps = 0;             // protection information type (bits 2:0) and position
  uint16_t mssrl = 0;          // blocks per source range (0: no limit stated)
  uint32_t mcl = 0;            // blocks per Copy (0: no limit stated)
  uint8_t msrc = 0;            // source ranges per Copy, 0-based
};
// Checks what a controller claims before use: a block size of 512 B to 64 KiB and a capacity
// that fits in 64 bits; `label` names the namespace in the error.
Result<NamespaceGeometry> parse_identify_namespace(std::span<const uint8_t> id,
                                                   const std::string& label);

// Fills the capacity, block size, transfer and copy limits: copy_max_hw_bytes from MCL,
// copy_segment_max_bytes from MSSRL, copy_max_src_segments from MSRC + 1 (capped so the range
// list fits in one transfer), all 0 when the controller has no Copy.
void fill_limits(QueueLimits& l, const NamespaceGeometry& g, const ControllerCaps& c,
                 uint32_t max_transfer);

// The Identify values nvme-cli users know, for `blkcopy info`.
void describe_identify(DeviceInfo& info, const NamespaceGeometry& g, const ControllerCaps& c);

}  // namespace blkcopy::nvme
