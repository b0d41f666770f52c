#include "nvme/auth/interchange.h"

#include <fmt/format.h>
#include <isa-l.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

namespace blkcopy::nvme::auth {

Result<InterchangeKey> parse_interchange(std::string_view text, std::string_view prefix,
                                         std::initializer_list<size_t> sizes, std::string_view what,
                                         std::string_view example) {
  auto bad = [&](std::string_view why) {
    return fail(EINVAL, fmt::format("{}: {} (expected {})", what, why, example));
  };
  const size_t p = prefix.size();
  if (!text.starts_with(prefix) || text.size() < p + 5 || text[p] != ':' || text[p + 3] != ':' ||
      !text.ends_with(':')) {
    return bad(fmt::format("not of the form {}:hh:...:", prefix));
  }
  const std::string_view hh = text.substr(p + 1, 2);
  if (!std::all_of(hh.begin(), hh.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad(fmt::format("'{}' is not two digits", hh));
  }
  const std::string_view b64 = text.substr(p + 4, text.size() - p - 5);
  if (b64.size() % 4 != 0 || b64.size() > 128) return bad("the base64 part has a wrong length");
  std::vector<uint8_t> raw(b64.size() / 4 * 3);
  const int n = EVP_DecodeBlock(raw.data(), reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  if (n < 0) return bad("the base64 part does not decode");
  size_t len = static_cast<size_t>(n);
  for (size_t i = b64.size(); i > 0 && b64[i - 1] == '='; --i) --len;  // padding
  if (len < 4 || std::find(sizes.begin(), sizes.end(), len - 4) == sizes.end()) {
    std::string allowed;
    for (size_t s : sizes) allowed += fmt::format("{}{}", allowed.empty() ? "" : ", ", s);
    return bad(fmt::format("the key is {} bytes; {} (and a CRC) are allowed", len >= 4 ? len - 4 : 0,
                           allowed));
  }
  raw.resize(len);
  uint32_t crc;
  std::memcpy(&crc, raw.data() + len - 4, 4);
  if (crc32_gzip_refl(0, raw.data(), len - 4) != crc) return bad("its CRC-32 does not match");
  raw.resize(len - 4);
  return InterchangeKey{std::move(raw), static_cast<uint8_t>((hh[0] - '0') * 10 + (hh[1] - '0'))};
}

}  // namespace blkcopy::nvme::auth
