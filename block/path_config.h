// The options of drivers that open one device node: "PATH[,ro][,timeout=MS]" (nvme:, scsi:).
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace blkcopy {

struct PathConfig {
  std::string path;  // as given
  bool read_only = false;
  uint32_t timeout_ms = 30000;  // per command
};

// Parses the part after "DRIVER:"; timeout_ms starts at default_timeout_ms.
Result<PathConfig> parse_path_config(std::string_view driver, std::string_view spec,
                                     uint32_t default_timeout_ms);

}  // namespace blkcopy
