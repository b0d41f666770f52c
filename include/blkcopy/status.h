// Errors as values: an errno-compatible code plus a message naming what went wrong.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>

namespace blkcopy {

class [[nodiscard]] Status {
 public:
  Status() = default;  // success

  // REQUIRES: code > 0 (an errno value).
  static Status error(int code, std::string message) { return Status(code, std::move(message)); }
  // "context: strerror(code)".
  static Status from_errno(int code, std::string_view context);

  bool ok() const { return code_ == 0; }
  int code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

template <class T>
using Result = std::expected<T, Status>;

inline std::unexpected<Status> fail(int code, std::string message) {
  return std::unexpected(Status::error(code, std::move(message)));
}

}  // namespace blkcopy
