#include "nvme/tcp/framing.h"

#include <cstring>

#include "nvme/codec.h"

namespace blkcopy::nvme::tcp {

std::vector<uint8_t> frame_header(uint8_t type, uint8_t hlen, const void* specific,
                                  size_t specific_len, uint32_t data_len, uint8_t flags,
                                  Digests digests) {
  const uint32_t hd = digests.header ? 4 : 0, dd = (digests.data && data_len) ? 4 : 0;
  std::vector<uint8_t> out(hlen + hd, 0);
  PduHeader h{type,
              static_cast<uint8_t>(flags | (hd ? pdu::kFlagHdgst : 0) | (dd ? pdu::kFlagDdgst : 0)),
              hlen, static_cast<uint8_t>(data_len ? hlen + hd : 0), hlen + hd + data_len + dd};
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, specific, std::min<size_t>(specific_len, hlen - sizeof h));
  if (hd) {
    const uint32_t crc = crc32c(out.data(), hlen);
    std::memcpy(out.data() + hlen, &crc, 4);
  }
  return out;
}

}  // namespace blkcopy::nvme::tcp
