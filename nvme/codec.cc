#include "nvme/codec.h"

#include <fmt/format.h>

#include <isa-l.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstdio>

#include "nvme/auth/dhchap.h"

namespace blkcopy::nvme {

void put_string(std::span<uint8_t> buf, size_t off, size_t len, std::string_view s, char pad) {
  std::memset(buf.data() + off, pad, len);
  std::memcpy(buf.data() + off, s.data(), std::min(len, s.size()));
}

std::string get_nqn(std::span<const uint8_t> buf, size_t off) {
  const char* p = reinterpret_cast<const char*>(buf.data() + off);
  return std::string(p, strnlen(p, 256));
}

std::string default_host_nqn() {
  if (FILE* f = std::fopen("/etc/nvme/hostnqn", "r")) {
    char line[256] = {};
    const bool got = std::fgets(line, sizeof line, f) != nullptr;
    std::fclose(f);
    std::string nqn = got ? line : "";
    while (!nqn.empty() && std::isspace(static_cast<unsigned char>(nqn.back()))) nqn.pop_back();
    if (check_nqn(nqn, "/etc/nvme/hostnqn").ok()) return nqn;
  }
  return "nqn.2014-08.io.blkcopy:host";
}

Status check_nqn(std::string_view nqn, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return Status::error(EINVAL, fmt::format("{} '{}' is not an NQN: {} (expected "
                                             "nqn.yyyy-mm.reverse.domain[:name])",
                                             what, nqn, why));
  };
  if (nqn.size() > 223) return bad("longer than 223 bytes");
  for (char ch : nqn) {
    if (static_cast<unsigned char>(ch) < 0x21 || ch == 0x7F) return bad("a space or control character");
  }
  if (!nqn.starts_with("nqn.")) return bad("it must start with 'nqn.'");
  std::string_view date = nqn.substr(4, 8);
  auto digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (date.size() != 8 || !digits(date.substr(0, 4)) || date[4] != '-' || !digits(date.substr(5, 2)) ||
      date[7] != '.') {
    return bad("'nqn.' must be followed by a date yyyy-mm and a '.'");
  }
  const int month = (date[5] - '0') * 10 + (date[6] - '0');
  if (month < 1 || month > 12) return bad("the month must be 01 to 12");
  std::string_view rest = nqn.substr(12);
  const std::string_view domain = rest.substr(0, rest.find(':'));
  if (domain.empty() || domain.front() == '.' || domain.back() == '.' ||
      domain.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") !=
          std::string_view::npos) {
    return bad("the reverse domain name after the date is missing or has characters other "
               "than letters, digits, '-' and '.'");
  }
  if (rest.size() > domain.size() && rest.size() == domain.size() + 1) {
    return bad("nothing follows the ':'");
  }
  return {};
}

uint32_t crc32c(const void* data, size_t len) { return crc32c_extend(0, data, len); }

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len) {
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  return crc32_iscsi(p, static_cast<int>(len), crc ^ 0xFFFFFFFFu) ^ 0xFFFFFFFFu;
}

Sqe connect_command(uint16_t qid, uint16_t sqsize, uint32_t kato_ms) {
  Sqe sqe{};
  sqe.opcode = admin::kFabrics;
  auto* raw = reinterpret_cast<uint8_t*>(&sqe);
  raw[kFcType] = fabrics::kConnect;
  std::memcpy(raw + kConnectQid, &qid, 2);
  std::memcpy(raw + kConnectSqsize, &sqsize, 2);
  raw[kConnectCattr] = kCattrDisableSqFlow;  // reads may end with C2HData SUCCESS
  sqe.cdw12 = kato_ms;
  return sqe;
}

Sqe auth_command(uint8_t fctype, uint32_t length) {
  Sqe sqe{};
  sqe.opcode = admin::kFabrics;
  reinterpret_cast<uint8_t*>(&sqe)[kFcType] = fctype;
  sqe.cdw10 = auth::kAuthCdw10;
  sqe.cdw11 = length;
  return sqe;
}

std::vector<uint8_t> connect_data(uint16_t cntlid, std::string_view subnqn,
                                  std::string_view hostnqn) {
  std::vector<uint8_t> data(kConnectDataSize, 0);
  std::memcpy(data.data() + kCdCntlid, &cntlid, 2);
  std::memcpy(data.data() + kCdSubnqn, subnqn.data(), std::min<size_t>(subnqn.size(), 255));
  std::memcpy(data.data() + kCdHostnqn, hostnqn.data(), std::min<size_t>(hostnqn.size(), 255));
  return data;
}

bool parse_hex16(std::string hex, uint8_t out[16]) {
  std::erase(hex, '-');
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return false;
  }
  for (int i = 0; i < 16; ++i) out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return true;
}

void build_identify_controller(const ControllerIdentity& id, std::span<uint8_t, 4096> out) {
  std::fill(out.begin(), out.end(), 0);
  put<uint16_t>(out, idctrl::kVid, 0x1b36);  // the PCI vendor ID of QEMU's emulated devices
  put_string(out, idctrl::kSn, 20, id.serial, ' ');
  put_string(out, idctrl::kMn, 40, id.model, ' ');
  put_string(out, idctrl::kFr, 8, id.firmware, ' ');
  out[idctrl::kCmic] = 0x02;  // the subsystem may have several controllers (hosts)
  out[idctrl::kMdts] = id.mdts;
  put<uint16_t>(out, idctrl::kCntlid, id.cntlid);
  put<uint32_t>(out, idctrl::kVer, 0x00010400);  // NVMe 1.4
  out[idctrl::kCntrltype] = id.discovery ? 2 : 1;
  out[idctrl::kAerl] = 3;
  // LPA: bit 1 commands supported and effects log; bit 2 extended data (discovery).
  out[idctrl::kLpa] = id.discovery ? 0x04 : 0x02;
  put<uint16_t>(out, idctrl::kKas, id.kas);
  out[idctrl::kSqes] = 0x66;
  out[idctrl::kCqes] = 0x44;
  put<uint16_t>(out, idctrl::kMaxcmd, id.maxcmd);
  put<uint32_t>(out, idctrl::kNn, id.nn);
  if (id.namespace_events) put<uint32_t>(out, idctrl::kOaes, kAenNamespaceAttribute);
  if (!id.discovery) {
    uint16_t oncs = idctrl::kOncsWriteZeroes | idctrl::kOncsDsm;
    if (id.copy) oncs |= idctrl::kOncsCopy;
    put<uint16_t>(out, idctrl::kOncs, oncs);
    if (id.copy) put<uint16_t>(out, idctrl::kOcfs, id.ocfs);
    out[idctrl::kVwc] = 0x01;
  }
  // SGLS: bits 1:0 = 01b (SGLs supported), bit 20 offset addressing, bit 2 keyed (TCP: 0).
  put<uint32_t>(out, idctrl::kSgls, (1u << 0) | (1u << 20));
  put_string(out, idctrl::kSubnqn, 256, id.subnqn, '\0');
  put<uint32_t>(out, idctrl::kIoccsz, id.ioccsz);
  put<uint32_t>(out, idctrl::kIorcsz, 1);
  put<uint16_t>(out, idctrl::kIcdoff, 0);
  out[idctrl::kMsdbd] = 1;
}

void build_identify_namespace(const NamespaceIdentity& id, std::span<uint8_t, 4096> out) {
  std::fill(out.begin(), out.end(), 0);
  put<uint64_t>(out, idns::kNsze, id.blocks);
  put<uint64_t>(out, idns::kNcap, id.blocks);
  put<uint64_t>(out, idns::kNuse, id.blocks);
  out[idns::kNlbaf] = 0;
  out[idns::kFlbas] = 0;
  out[idns::kNmic] = 0x01;  // shared by the subsystem's controllers
  if (id.deallocate_reads_zero) out[idns::kDlfeat] = 0x01;  // deallocated blocks read as zeroes
  put<uint16_t>(out, idns::kMssrl, id.mssrl);
  put<uint32_t>(out, idns::kMcl, id.mcl);
  out[idns::kMsrc] = id.msrc;
  std::memcpy(out.data() + idns::kNguid, id.nguid, 16);
  // LBA format 0: LBADS = log2(block size) at byte 2.
  out[idns::kLbaf0 + 2] = static_cast<uint8_t>(std::countr_zero(id.block_size));
}

}  // namespace blkcopy::nvme
