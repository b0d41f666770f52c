#include <blkcopy/status.h>

#include <cstring>
#include <string>

namespace blkcopy {

Status Status::from_errno(int code, std::string_view context) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(code);
  return Status(code, std::move(msg));
}

}  // namespace blkcopy
