#include "block/path_config.h"

#include <fmt/format.h>

#include <charconv>

namespace blkcopy {

Result<PathConfig> parse_path_config(std::string_view driver, std::string_view spec,
                                     uint32_t default_timeout_ms) {
  PathConfig c;
  c.timeout_ms = default_timeout_ms;
  const size_t comma = spec.find(',');
  c.path = std::string(spec.substr(0, comma));
  if (c.path.empty()) {
    return fail(EINVAL, fmt::format("{}: missing path ({}:/dev/...[,ro][,timeout=MS])", driver,
                                    driver));
  }
  std::string_view opts = comma == spec.npos ? "" : spec.substr(comma + 1);
  while (!opts.empty()) {
    const size_t next = opts.find(',');
    std::string_view o = opts.substr(0, next);
    opts = next == opts.npos ? "" : opts.substr(next + 1);
    if (o == "ro") {
      c.read_only = true;
    } else if (o.starts_with("timeout=")) {
      std::string_view v = o.substr(8);
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), c.timeout_ms);
      if (ec != std::errc() || end != v.data() + v.size() || c.timeout_ms < 1 ||
          c.timeout_ms > 3'600'000) {
        return fail(EINVAL, fmt::format("{}:{}: timeout must be 1 to 3600000 ms", driver, spec));
      }
    } else {
      return fail(EINVAL,
                  fmt::format("{}:{}: unknown option '{}' (ro, timeout=MS)", driver, spec, o));
    }
  }
  return c;
}

}  // namespace blkcopy
