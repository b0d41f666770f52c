#include "nvme/namespace.h"

#include <blkcopy/log.h>

#include <fmt/format.h>

#include <algorithm>

#include "core/checked.h"
#include "nvme/codec.h"
#include "nvme/spec.h"

namespace blkcopy::nvme {

bool ControllerCaps::copy() const { return oncs & idctrl::kOncsCopy; }

uint32_t ControllerCaps::max_transfer(uint32_t cap) const {
  if (mdts == 0 || mdts >= 20) return cap;
  return static_cast<uint32_t>(std::min<uint64_t>(cap, uint64_t{4096} << mdts));
}

ControllerCaps parse_identify_controller(std::span<const uint8_t> id) {
  ControllerCaps c;
  c.oncs = get<uint16_t>(id, idctrl::kOncs);
  c.ocfs = get<uint16_t>(id, idctrl::kOcfs);
  c.mdts = id[idctrl::kMdts];
  c.sgls = get<uint32_t>(id, idctrl::kSgls);
  // SN (bytes 4-23), MN (24-63) and FR (64-71): ASCII padded with spaces.
  auto text = [&](size_t off, size_t len) {
    std::string s(reinterpret_cast<const char*>(id.data() + off), len);
    s.erase(s.find_last_not_of(std::string(" \0", 2)) + 1);
    return s;
  };
  c.serial = text(4, 20);
  c.model = text(24, 40);
  c.firmware = text(64, 8);
  return c;
}

Result<NamespaceGeometry> parse_identify_namespace(std::span<const uint8_t> id,
                                                   const std::string& label) {
  NamespaceGeometry g;
  g.nsze = get<uint64_t>(id, idns::kNsze);
  if (g.nsze == 0) return fail(ENODEV, fmt::format("{}: namespace not found (NSZE 0)", label));
  g.flbas = id[idns::kFlbas];
  g.nlbaf = id[idns::kNlbaf];
  // FLBAS bits 3:0 and 6:5 index the format (more than 16 formats); bit 4: metadata at the end
  // of the block.
  g.lbaf = static_cast<uint8_t>((g.flbas & 0xF) | ((g.flbas >> 1) & 0x30));
  if (g.lbaf > 63 || idns::kLbaf0 + 4u * g.lbaf + 4 > id.size()) {
    return fail(EPROTO, fmt::format("{}: Identify names LBA format {}, which does not exist", label,
                                    g.lbaf));
  }
  const size_t f = idns::kLbaf0 + 4u * g.lbaf;
  g.metadata_size = get<uint16_t>(id, f);
  const uint8_t lbads = id[f + 2];
  g.dps = id[idns::kDps];
  auto capacity = checked_mul<uint64_t>(g.nsze, uint64_t{1} << std::min<uint8_t>(lbads, 63));
  if (lbads < 9 || lbads > 16 || !capacity) {
    return fail(EPROTO, fmt::format("{}: Identify gives a block size of 2^{} bytes and {} blocks, "
                                    "which blkcopy cannot use",
                                    label, lbads, g.nsze));
  }
  g.block_size = 1u << lbads;
  g.capacity = *capacity;
  g.mssrl = get<uint16_t>(id, idns::kMssrl);
  g.mcl = get<uint32_t>(id, idns::kMcl);
  g.msrc = id[idns::kMsrc];
  return g;
}

void fill_limits(QueueLimits& l, const NamespaceGeometry& g, const ControllerCaps& c,
                 uint32_t max_transfer) {
  l.logical_block_size = g.block_size;
  l.capacity = g.capacity;
  l.max_io_bytes = std::max<uint32_t>(max_transfer / g.block_size * g.block_size, g.block_size);
  l.copy_max_hw_bytes = l.copy_max_bytes = l.copy_segment_max_bytes = 0;
  l.copy_max_src_segments = 0;
  if (!c.copy()) return;
  // A range is at most 65536 blocks (NLB is 16 bits, 0-based); MSSRL and MCL of 0 state no
  // limit of their own.
  const uint64_t seg_blocks = std::min<uint64_t>(g.mssrl ? g.mssrl : 65536, 65536);
  l.copy_segment_max_bytes = seg_blocks * g.block_size;
  l.copy_max_hw_bytes = l.copy_max_bytes = (g.mcl ? g.mcl : 65536) * uint64_t(g.block_size);
  // The range list (32 bytes an entry in formats 0 and 2) is one transfer.
  l.copy_max_src_segments = std::min<uint32_t>(g.msrc + 1u, std::max<uint32_t>(max_transfer / 32, 1));
}

void describe_identify(DeviceInfo& info, const NamespaceGeometry& g, const ControllerCaps& c) {
  // The controller's strings come from the device (or the network): shown escaped.
  info.details.emplace_back("model", printable(c.model));
  info.details.emplace_back("serial", printable(c.serial));
  info.details.emplace_back("firmware", printable(c.firmware));
  info.details.emplace_back("oncs", fmt::format("{:#06x}", c.oncs));
  info.details.emplace_back("ocfs", fmt::format("{:#06x}", c.ocfs));
  info.details.emplace_back("mdts", std::to_string(c.mdts));
  info.details.emplace_back("mssrl", std::to_string(g.mssrl));
  info.details.emplace_back("mcl", std::to_string(g.mcl));
  info.details.emplace_back("msrc", std::to_string(g.msrc));
  info.details.emplace_back("nsze", std::to_string(g.nsze));
  info.details.emplace_back("lbaf", fmt::format("{} (of {}): {} B blocks, {} B metadata", g.lbaf,
                                                g.nlbaf + 1u, g.block_size, g.metadata_size));
  info.details.emplace_back("dps", fmt::format("{:#04x}", g.dps));
}

}  // namespace blkcopy::nvme
