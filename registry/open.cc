// The device-string registry: a device string's prefix picks a driver. It sits above every
// driver and the stack (which it hands itself to, so that a table can name any device);
// adding a driver is one row here.
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <fmt/format.h>

#include "drivers/file/file_device.h"
#include "drivers/mem/mem_device.h"
#include "drivers/nvme/nvme_device.h"
#include "drivers/scsi/scsi_device.h"
#include "nvme/host/nvme_tcp_device.h"
#include "stack/dm_device.h"

namespace blkcopy {
namespace {

using Opener = Result<std::unique_ptr<Device>> (*)(EventLoop&, std::string_view spec,
                                                   std::string_view rest, const OpenOptions&);

// Parses the options after "PREFIX:" with Parse, then makes the device with Create.
template <auto Parse, auto Create>
Result<std::unique_ptr<Device>> open_driver(EventLoop& loop, std::string_view spec,
                                            std::string_view rest, const OpenOptions& o) {
  auto cfg = Parse(rest);
  if (!cfg) return std::unexpected(cfg.error());
  cfg->read_only |= o.read_only;
  if constexpr (requires { cfg->open_child; }) {
    cfg->open_child = [](EventLoop& l, std::string_view s, bool ro) {
      return open_device(l, s, OpenOptions{.read_only = ro});
    };
  }
  auto dev = Create(loop, std::string(spec), *cfg);
  if (!dev) return std::unexpected(dev.error());
  return std::unique_ptr<Device>(std::move(*dev));
}

// A bare path takes no options: commas belong to the file name.
Result<FileConfig> path_only(std::string_view path) { return FileConfig{std::string(path)}; }

struct Driver {
  std::string_view prefix;
  Opener open;
};
constexpr Driver kDrivers[] = {
    {"mem", open_driver<parse_mem_config, MemDevice::create>},
    {"file", open_driver<parse_file_config, FileDevice::open>},
    {"dm", open_driver<parse_dm_config, DmDevice::create>},
    {"nvme-tcp", open_driver<nvme::parse_nvme_tcp_config, nvme::NvmeTcpDevice::create>},
    {"nvme", open_driver<parse_nvme_local_config, NvmeLocalDevice::open>},
    {"scsi", open_driver<parse_scsi_config, ScsiDevice::open>},
};

// A bare path of a device that takes commands (/dev/nvmeXnY, /dev/ngXnY; /dev/sdX, /dev/sgN)
// opens with its driver. Where the kernel cannot pass the commands through (no io_uring
// passthrough, no SG_IO), the block device is opened as a file instead, copies emulated, with
// a notice. (Such paths hold no commas, so the driver's option parser takes them whole.)
template <auto Parse, auto Open>
Result<std::unique_ptr<Device>> open_command_path(EventLoop& loop, std::string_view spec,
                                                  const std::string& block, const OpenOptions& o) {
  auto dev = open_driver<Parse, Open>(loop, spec, spec, o);
  if (dev || dev.error().code() != ENOSYS) return dev;
  log_warning(dev.error().message() +
              fmt::format("; opening {} as a block device, copies emulated", block));
  return open_driver<path_only, FileDevice::open>(loop, spec, block, o);
}

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
      return fail(EINVAL, fmt::format("unknown device type '{}' in '{}' (known: mem, file, dm, "
                                      "nvme-tcp, nvme, scsi, or a path)",
                                      prefix, spec));
    }
  }
  if (auto nodes = nvme_nodes(spec)) {
    return open_command_path<parse_nvme_local_config, NvmeLocalDevice::open>(loop, spec, nodes->block, options);
  }
  if (auto nodes = scsi_nodes(spec)) {
    return open_command_path<parse_scsi_config, ScsiDevice::open>(loop, spec, nodes->block, options);
  }
  return open_driver<path_only, FileDevice::open>(loop, spec, spec, options);
}

}  // namespace blkcopy
