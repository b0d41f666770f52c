// The C API's ways into a running program: a log sink and cancel objects.
#include <blkcopy/blkcopy.h>
#include <blkcopy/log.h>

#include <cerrno>
#include <new>
#include <string>

#include "capi/internal.h"

extern "C" {

blkcopy_cancel* blkcopy_cancel_create(void) { return new (std::nothrow) blkcopy_cancel; }

void blkcopy_cancel_request(blkcopy_cancel* cancel) {
  if (cancel) cancel->requested.store(true);
}

void blkcopy_cancel_reset(blkcopy_cancel* cancel) {
  if (cancel) cancel->requested.store(false);
}

void blkcopy_cancel_destroy(blkcopy_cancel* cancel) { delete cancel; }

int blkcopy_set_log(blkcopy_log_fn fn, void* arg, int level) {
  if (blkcopy::capi::in_callback) return -EDEADLK;  // the log's lock is held in a log callback
  if (level < BLKCOPY_LOG_ERROR || level > BLKCOPY_LOG_DEBUG) return -EINVAL;
  if (!fn) {
    blkcopy::set_log_sink(nullptr);
    return 0;
  }
  try {
    blkcopy::set_log_level(static_cast<blkcopy::LogLevel>(level));
    blkcopy::set_log_sink([fn, arg](blkcopy::LogLevel l, std::string_view message) {
      try {
        const std::string line(message);  // the C side wants a terminated string
        blkcopy::capi::InCallback guard;
        fn(arg, static_cast<int>(l), line.c_str());
      } catch (const std::bad_alloc&) {  // a message lost, not an exception in the library
      }
    });
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  }
  return 0;
}

}  // extern "C"
