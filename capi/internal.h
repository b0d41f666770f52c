// What the C API's files share: the cancel object the copy engine looks at, and the guard
// that keeps a C callback (progress, log) from calling back into the library.
#pragma once

#include <atomic>

struct blkcopy_cancel {
  std::atomic<bool> requested{false};
  static_assert(std::atomic<bool>::is_always_lock_free, "set from signal handlers");
};

namespace blkcopy::capi {

// True on a thread while it runs a caller's progress or log callback: a blkcopy call from
// there would close a device a copy is using, run a copy inside a copy on the same loop, or
// take the log's lock again; it gets -EDEADLK instead.
inline thread_local bool in_callback = false;

class InCallback {
 public:
  InCallback() : was_(in_callback) { in_callback = true; }
  ~InCallback() { in_callback = was_; }
  InCallback(const InCallback&) = delete;
  InCallback& operator=(const InCallback&) = delete;

 private:
  bool was_;
};

}  // namespace blkcopy::capi
