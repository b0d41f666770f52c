// Keys in the interchange form nvme-cli prints them in: "PREFIX:hh:BASE64:", where BASE64 holds
// the key and its CRC-32 (little-endian) and hh is two digits the format gives a meaning to
// (DH-HMAC-CHAP secrets: DHHC-1, 'nvme gen-dhchap-key'; TLS PSKs: NVMeTLSkey-1,
// 'nvme gen-tls-key').
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace blkcopy::nvme::auth {

struct InterchangeKey {
  std::vector<uint8_t> key;
  uint8_t hh = 0;  // the two digits, as a number (00..99)
};

// Parses "PREFIX:hh:BASE64:" whose key is one of `sizes` bytes long and whose CRC matches.
// Errors begin with `what` ("TLS PSK") and say what a good one looks like (`example`).
Result<InterchangeKey> parse_interchange(std::string_view text, std::string_view prefix,
                                         std::initializer_list<size_t> sizes, std::string_view what,
                                         std::string_view example);

}  // namespace blkcopy::nvme::auth
