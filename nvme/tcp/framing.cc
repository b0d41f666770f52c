#include "nvme/tcp/framing.h"

#include <cstring>

#include "nvme/codec.h"

namespace blkcopy::nvme::tcp {

Header frame_header(uint8_t type, uint8_t hlen, const void* specific,
                                  size_t specific_len, uint32_t data_len, uint8_t flags,
                                  Digests digests) {
  const uint32_t hd = digests.header ? 4 : 0, dd = (digests.data && data_len) ? 4 : 0;
  uint8_t out[255 + 4] = {};
  PduHeader h{type,
              static_cast<uint8_t>(flags | (hd ? pdu::kFlagHdgst : 0) | (dd ? pdu::kFlagDdgst : 0)),
              hlen, static_cast<uint8_t>(data_len ? hlen + hd : 0), hlen + hd + data_len + dd};
  std::memcpy(out, &h, sizeof h);
  std::memcpy(out + sizeof h, specific, std::min<size_t>(specific_len, hlen - sizeof h));
  if (hd) {
    const uint32_t crc = crc32c(out, hlen);
    std::memcpy(out + hlen, &crc, 4);
  }
  return Header(out, hlen + hd);
}

}  // namespace blkcopy::nvme::tcp
