// The C API's cancel object (blkcopy_cancel): the flag the copy engine looks at.
#pragma once

#include <atomic>

struct blkcopy_cancel {
  std::atomic<bool> requested{false};
  static_assert(std::atomic<bool>::is_always_lock_free, "set from signal handlers");
};
