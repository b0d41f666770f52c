// Encoding helpers for the NVMe structures in spec.h: little-endian fields in byte buffers,
// CRC32C digests (ISA-L), Identify and log page builders shared by the target and the host.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <blkcopy/status.h>

#include "nvme/spec.h"

namespace blkcopy::nvme {

template <class T>
void put(std::span<uint8_t> buf, size_t off, T v) {
  std::memcpy(buf.data() + off, &v, sizeof v);
}
template <class T>
T get(std::span<const uint8_t> buf, size_t off) {
  T v;
  std::memcpy(&v, buf.data() + off, sizeof v);
  return v;
}
// A space-padded ASCII field (serial, model) or a NUL-padded NQN.
void put_string(std::span<uint8_t> buf, size_t off, size_t len, std::string_view s, char pad);
std::string get_nqn(std::span<const uint8_t> buf, size_t off);

// An NVMe Qualified Name as the base specification writes it: "nqn.yyyy-mm.reverse.domain"
// with an optional ":anything" after it (the UUID form "nqn.2014-08.org.nvmexpress:uuid:..."
// included), at most 223 bytes, printable. `what` names it in the error.
Status check_nqn(std::string_view nqn, std::string_view what);

// The host NQN to present when none is given: /etc/nvme/hostnqn as nvme-cli keeps it (when it
// holds a valid NQN), else nqn.2014-08.io.blkcopy:host.
std::string default_host_nqn();

// CRC32C as NVMe/TCP digests use it (seed and final XOR 0xFFFFFFFF).
uint32_t crc32c(const void* data, size_t len);
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len);  // crc from crc32c()

// A fabrics Connect command for queue `qid` and its 1024 bytes of data (CNTLID 0xFFFF asks for
// a new controller on the admin queue).
Sqe connect_command(uint16_t qid, uint16_t sqsize, uint32_t kato_ms);
std::vector<uint8_t> connect_data(uint16_t cntlid, std::string_view subnqn,
                                  std::string_view hostnqn);
// A fabrics Authentication Send or Receive (fctype fabrics::kAuthSend / kAuthReceive) of a
// DH-HMAC-CHAP message of `length` bytes (TL or AL).
Sqe auth_command(uint8_t fctype, uint32_t length);

struct ControllerIdentity {
  uint16_t cntlid = 1;
  // Views of strings that outlive the call (a subsystem's): an Identify allocates nothing.
  std::string_view serial, model = "blkcopy", firmware = "0.1";
  std::string_view subnqn;
  bool discovery = false;
  uint32_t nn = 0;          // highest namespace ID
  uint8_t mdts = 8;         // 2^mdts x 4 KiB per transfer
  bool copy = true;         // ONCS Copy
  uint16_t ocfs = 0x5;      // formats 0 and 2
  uint32_t ioccsz = 4 + 8192 / 16;  // in 16-byte units: SQE + in-capsule data
  uint16_t maxcmd = 128;
  uint16_t kas = 1;         // 100 ms units
  bool namespace_events = false;  // OAES: Namespace Attribute Notices
};
inline constexpr uint32_t kLargestNsidAdvertised = 1024;

// An NGUID or UUID: 32 hex digits, dashes allowed, into 16 bytes; false when it is not one.
bool parse_hex16(std::string hex, uint8_t out[16]);  // NN where namespaces come and go
void build_identify_controller(const ControllerIdentity& id, std::span<uint8_t, 4096> out);

struct NamespaceIdentity {
  uint64_t blocks = 0;
  uint32_t block_size = 512;
  uint16_t mssrl = 0;  // blocks per source range
  uint32_t mcl = 0;    // blocks per Copy command
  uint8_t msrc = 0;    // ranges per Copy command, 0-based
  uint8_t nguid[16] = {};
  bool deallocate_reads_zero = true;
};
void build_identify_namespace(const NamespaceIdentity& id, std::span<uint8_t, 4096> out);

}  // namespace blkcopy::nvme
