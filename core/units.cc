#include <blkcopy/units.h>

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdint>

namespace blkcopy {

Result<uint64_t> parse_size(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) {
    return fail(EINVAL, fmt::format("invalid size '{}': expected a number with an optional "
                                    "suffix k, M, G or T (KiB, MiB: the same; kB, MB, GB, TB: "
                                    "powers of 1000, as dd)",
                                    text));
  }
  std::string_view suffix(end, text.data() + text.size() - end);
  // As dd: kB, MB, GB, TB are powers of 1000; k, M, G, T (and KiB, MiB...) powers of 1024.
  if (suffix.size() == 2 && (suffix[1] == 'B' || suffix[1] == 'b') && suffix[0] != 'i') {
    uint64_t unit = 1;
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(suffix[0])));
    const int power = c == 'k' ? 1 : c == 'm' ? 2 : c == 'g' ? 3 : c == 't' ? 4 : 0;
    if (power == 0) return fail(EINVAL, fmt::format("invalid size '{}': unknown suffix", text));
    for (int i = 0; i < power; ++i) unit *= 1000;
    if (value > UINT64_MAX / unit) return fail(ERANGE, fmt::format("invalid size '{}': too large", text));
    return value * unit;
  }
  if (suffix.ends_with("iB") || suffix.ends_with("ib")) suffix.remove_suffix(2);
  unsigned shift = 0;
  if (suffix.size() == 1) {
    switch (std::tolower(static_cast<unsigned char>(suffix[0]))) {
      case 'b': shift = 0; break;
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      default: suffix = "?";
    }
  }
  if (suffix.size() > 1 || suffix == "?") {
    return fail(EINVAL, fmt::format("invalid size '{}': unknown suffix", text));
  }
  if (shift && (value >> (64 - shift)) != 0) {
    return fail(ERANGE, fmt::format("invalid size '{}': too large", text));
  }
  return value << shift;
}

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  unsigned u = 0;
  while (bytes >= 1024 && u + 1 < std::size(kUnits)) {
    bytes /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{:.0f} B", bytes);
  return fmt::format("{:.{}f} {}", bytes, bytes < 10 ? 2 : 1, kUnits[u]);
}

}  // namespace blkcopy
