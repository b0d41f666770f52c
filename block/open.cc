// The table of drivers: a device string's prefix picks one. Adding a driver is one row here.
#include <blkcopy/open.h>
#include <fmt/format.h>

#include "drivers/file/file_device.h"
#include "drivers/mem/mem_device.h"

namespace blkcopy {
namespace {

using Opener = Result<std::unique_ptr<Device>> (*)(EventLoop&, std::string_view spec,
                                                   std::string_view rest, const OpenOptions&);

Result<std::unique_ptr<Device>> open_mem(EventLoop& loop, std::string_view spec,
                                         std::string_view rest, const OpenOptions& o) {
  auto cfg = parse_mem_config(rest);
  if (!cfg) return std::unexpected(cfg.error());
  cfg->read_only |= o.read_only;
  auto dev = MemDevice::create(loop, std::string(spec), *cfg);
  if (!dev) return std::unexpected(dev.error());
  return std::unique_ptr<Device>(std::move(*dev));
}

Result<std::unique_ptr<Device>> open_file(EventLoop& loop, std::string_view spec,
                                          std::string_view rest, const OpenOptions& o) {
  auto cfg = parse_file_config(rest);
  if (!cfg) return std::unexpected(cfg.error());
  cfg->read_only |= o.read_only;
  auto dev = FileDevice::open(loop, std::string(spec), *cfg);
  if (!dev) return std::unexpected(dev.error());
  return std::unique_ptr<Device>(std::move(*dev));
}

struct Driver {
  std::string_view prefix;
  Opener open;
};
constexpr Driver kDrivers[] = {
    {"mem", open_mem},
    {"file", open_file},
};

}  // namespace

Result<std::unique_ptr<Device>> open_device(EventLoop& loop, std::string_view spec,
                                            const OpenOptions& options) {
  if (spec.empty()) return fail(EINVAL, "empty device string");
  const size_t colon = spec.find(':');
  if (colon != spec.npos) {
    const std::string_view prefix = spec.substr(0, colon);
    for (const Driver& d : kDrivers) {
      if (prefix == d.prefix) return d.open(loop, spec, spec.substr(colon + 1), options);
    }
    // "foo:bar" without a slash before the colon is a device type we do not know, not a path.
    if (prefix.find('/') == prefix.npos && spec.find('/') == spec.npos) {
      return fail(EINVAL, fmt::format("unknown device type '{}' in '{}' (known: mem, file, or a "
                                      "path)",
                                      prefix, spec));
    }
  }
  FileConfig cfg{std::string(spec)};
  cfg.read_only = options.read_only;
  auto dev = FileDevice::open(loop, std::string(spec), cfg);
  if (!dev) return std::unexpected(dev.error());
  return std::unique_ptr<Device>(std::move(*dev));
}

}  // namespace blkcopy
