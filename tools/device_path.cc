// The file a device string names (file:PATH[,options], dm:TABLE, or a plain path), for the
// commands that resolve or create it (commands.h).
#include <sys/stat.h>

#include <filesystem>

#include "tools/commands.h"

namespace blkcopy::tools {

std::optional<FileSpec> file_spec(const std::string& dev) {
  if (dev.starts_with("file:") || dev.starts_with("dm:")) {
    const std::string scheme = dev.substr(0, dev.find(':') + 1);
    const std::string rest = dev.substr(scheme.size());
    const size_t comma = rest.find(',');  // options follow a file's path (a table's: none)
    if (scheme == "dm:" || comma == std::string::npos) return FileSpec{scheme, rest, ""};
    return FileSpec{scheme, rest.substr(0, comma), rest.substr(comma)};
  }
  // "mem:...", "nvme-tcp://...": a scheme before any slash is not a path.
  if (const size_t colon = dev.find(':'); colon != std::string::npos && colon < dev.find('/')) {
    return std::nullopt;
  }
  return FileSpec{"", dev, ""};  // a plain path is taken whole
}

std::optional<struct stat> regular_file(const std::string& dev) {
  auto f = file_spec(dev);
  struct stat st {};
  if (!f || f->scheme == "dm:" || ::stat(f->path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return st;
}

std::string absolute_device(const std::string& dev) {
  auto f = file_spec(dev);
  if (!f || f->path.empty() || f->path[0] == '/') return dev;
  return f->scheme + std::filesystem::absolute(f->path).string() + f->options;
}

}  // namespace blkcopy::tools
