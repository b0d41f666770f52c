// NVMe/TCP PDU framing shared by the target, the host and the test client: the common header
// with its digest flags and lengths, the header digest, and the H2CData PDUs that answer an R2T.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nvme/spec.h"

namespace blkcopy::nvme::tcp {

struct Digests {  // what ICReq/ICResp agreed
  bool header = false;
  bool data = false;
};

// A PDU header as it leaves (with its digest), held inline: queuing a PDU allocates nothing.
// Large enough for ICReq/ICResp (128 bytes) and a C2HTermReq with the offending header (152).
class Header {
 public:
  static constexpr size_t kMax = 160;
  Header() = default;
  Header(const void* bytes, size_t n) : n_(static_cast<uint8_t>(std::min(n, kMax))) {
    std::memcpy(b_.data(), bytes, n_);
  }
  const uint8_t* data() const { return b_.data(); }
  uint8_t* data() { return b_.data(); }
  size_t size() const { return n_; }

 private:
  std::array<uint8_t, kMax> b_{};
  uint8_t n_ = 0;
};

// The header of a PDU of `type` (hlen bytes, of which `specific` fills the bytes after the
// common 8) carrying data_len bytes of data: flags, pdo and plen set from the digests, the
// header digest appended when on. The data (and its digest) follow it on the wire.
Header frame_header(uint8_t type, uint8_t hlen, const void* specific,
                                  size_t specific_len, uint32_t data_len, uint8_t flags,
                                  Digests digests);

// The same, for a PDU struct whose first 8 bytes are the common header (R2T, DataPdu,
// CapsuleResp): the struct's own header fields are ignored.
template <class Pdu>
Header frame_pdu(uint8_t type, const Pdu& pdu, uint32_t data_len, uint8_t flags,
                               Digests digests) {
  static_assert(sizeof(Pdu) > sizeof(PduHeader) && sizeof(Pdu) <= 255);
  return frame_header(type, sizeof(Pdu), reinterpret_cast<const uint8_t*>(&pdu) + sizeof(PduHeader),
                      sizeof(Pdu) - sizeof(PduHeader), data_len, flags, digests);
}

// The H2CData PDUs that answer R2T r, none longer than max_data: fn(const DataPdu&, bool last)
// once per PDU, in order; the PDU's data is the command's buffer at datao, datal bytes.
// r2to + r2tl must have been checked against the command's length by the caller.
template <class Fn>
void for_each_h2c(const R2T& r, uint32_t max_data, Fn&& fn) {
  const uint64_t end = uint64_t(r.r2to) + r.r2tl;
  for (uint64_t off = r.r2to; off < end;) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(max_data, end - off));
    DataPdu d{};
    d.cccid = r.cccid;
    d.ttag = r.ttag;
    d.datao = static_cast<uint32_t>(off);
    d.datal = n;
    off += n;
    fn(d, off == end);
  }
}

}  // namespace blkcopy::nvme::tcp
