// The C API (include/blkcopy/blkcopy.h) over the C++ one: no exception crosses it, every
// argument is checked, errors are negative errno values.
#include <blkcopy/blkcopy.h>
#include <blkcopy/copy.h>
#include <blkcopy/open.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include "capi/internal.h"

struct blkcopy_device {
  std::unique_ptr<blkcopy::Device> dev;
  std::thread::id owner;
};

namespace {

using blkcopy::Status;

// The calling thread's loop, made on first use.
blkcopy::EventLoop* thread_loop() {
  thread_local std::unique_ptr<blkcopy::EventLoop> loop = [] {
    auto l = blkcopy::EventLoop::create();
    return l ? std::move(*l) : nullptr;
  }();
  return loop.get();
}

bool mine(const blkcopy_device* d) { return d && d->owner == std::this_thread::get_id(); }

// The message of this thread's last failed call (blkcopy_last_error).
thread_local std::string last_error;

int fail(int err, std::string why) {
  last_error = std::move(why);
  return err;
}
int fail(const Status& s) { return fail(-s.code(), s.message()); }

// A blkcopy call from inside a progress or log callback (see capi/internal.h): -EDEADLK.
int from_callback(const char* call) {
  return fail(-EDEADLK,
              std::string(call) + ": called from a progress or log callback (not allowed)");
}

int check_range(const blkcopy_device* d, uint64_t offset, uint64_t len) {
  const auto& l = d->dev->limits();
  if (len == 0 || offset % l.logical_block_size || len % l.logical_block_size) return -EINVAL;
  if (offset > l.capacity || len > l.capacity - offset) return -ERANGE;
  return 0;
}

// The caller's options (of the size it was built with) into opt; 0 or an errno with why.
int options(const blkcopy_copy_options* o, blkcopy::CopyOptions& opt, const char*& why) {
  if (!o) return 0;
  if (o->size == 0) {
    why = "the options' size is not set: start from BLKCOPY_COPY_OPTIONS_INIT";
    return -EINVAL;
  }
  // Every version's struct ends on an 8-byte field: another size would cut a field (half a
  // pointer) or is garbage.
  if (o->size < offsetof(blkcopy_copy_options, buffer_bytes) || o->size % 8 || o->size > 4096) {
    why = "the options' size is not one this API ever had: start from BLKCOPY_COPY_OPTIONS_INIT";
    return -EINVAL;
  }
  // What an older caller does not know stays zero (the defaults); what a newer one set that
  // this library does not know is refused, not ignored.
  blkcopy_copy_options known{};
  std::memcpy(&known, o, std::min<size_t>(o->size, sizeof known));
  const auto* extra = reinterpret_cast<const unsigned char*>(o) + sizeof known;
  for (size_t i = sizeof known; i < o->size; ++i, ++extra) {
    if (*extra) {
      why = "the options set fields this version of libblkcopy does not know";
      return -E2BIG;
    }
  }
  switch (known.emulation) {
    case BLKCOPY_EMULATE_ALLOW: opt.emulation = blkcopy::Emulation::allow; break;
    case BLKCOPY_EMULATE_NEVER: opt.emulation = blkcopy::Emulation::never; break;
    case BLKCOPY_EMULATE_FORCE: opt.emulation = blkcopy::Emulation::force; break;
    default: why = "unknown emulation value in the options"; return -EINVAL;
  }
  if (known.buffer_bytes) opt.buffer_bytes = known.buffer_bytes;
  if (known.chunk_bytes) opt.chunk_bytes = known.chunk_bytes;
  if (known.progress) {
    opt.progress = [fn = known.progress, arg = known.progress_arg](uint64_t done, uint64_t total) {
      blkcopy::capi::InCallback guard;
      fn(arg, done, total);
    };
  }
  if (known.cancel) opt.cancel = &known.cancel->requested;
  return 0;
}

int finish(const blkcopy::CopyResult& r, blkcopy_copy_result* out) {
  const int status = r.status.ok() ? 0 : -r.status.code();
  if (!out) return status;
  *out = blkcopy_copy_result{};
  out->status = status;
  out->bytes = r.bytes;
  out->backward = r.backward;
  out->offloaded_bytes = r.offloaded_bytes;
  out->emulated_bytes = r.emulated_bytes;
  out->host_read_bytes = r.host_read_bytes;
  out->host_written_bytes = r.host_written_bytes;
  out->commands = r.commands;
  out->seconds = r.seconds;
  std::snprintf(out->error, sizeof out->error, "%s", r.status.ok() ? "" : r.status.message().c_str());
  if (!r.status.ok()) last_error = r.status.message();
  return status;
}

int refuse(int err, const char* why, blkcopy_copy_result* out) {
  last_error = why;
  if (out) {
    *out = blkcopy_copy_result{};
    out->status = err;
    std::snprintf(out->error, sizeof out->error, "%s", why);
  }
  return err;
}

// Runs f, turning an exception into an error: none may cross into C.
template <class F>
int guarded(F f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(-ENOMEM, "out of memory");
  } catch (...) {
    return fail(-EIO, "internal error");
  }
}

}  // namespace

extern "C" {

int blkcopy_open(const char* device, blkcopy_device** out) {
  if (blkcopy::capi::in_callback) return from_callback("blkcopy_open");
  if (!device || !out) return fail(-EINVAL, "blkcopy_open: no device string or no place for it");
  *out = nullptr;
  try {
    blkcopy::EventLoop* loop = thread_loop();
    if (!loop) return fail(-ENOMEM, "blkcopy_open: no event loop for this thread");
    auto dev = blkcopy::open_device(*loop, device);
    if (!dev) return fail(dev.error());
    *out = new blkcopy_device{std::move(*dev), std::this_thread::get_id()};
    return 0;
  } catch (const std::bad_alloc&) {
    return fail(-ENOMEM, "out of memory");
  } catch (...) {
    return fail(-EIO, "internal error");
  }
}

int blkcopy_close(blkcopy_device* device) {
  if (!device) return 0;
  if (blkcopy::capi::in_callback) return from_callback("blkcopy_close");
  if (!mine(device)) return fail(-EXDEV, "blkcopy_close: the device belongs to another thread");
  delete device;
  return 0;
}

const char* blkcopy_last_error(void) { return last_error.c_str(); }

int blkcopy_info(blkcopy_device* device, blkcopy_limits* out) {
  if (blkcopy::capi::in_callback) return from_callback("blkcopy_info");
  if (!device || !out) return -EINVAL;
  if (!mine(device)) return -EXDEV;
  const auto& l = device->dev->limits();
  *out = blkcopy_limits{l.logical_block_size, l.capacity, l.copy_max_hw_bytes, l.copy_max_bytes,
                        l.copy_segment_max_bytes, l.copy_max_src_segments, l.read_only ? 1 : 0};
  return 0;
}

int blkcopy_copy(blkcopy_device* src, uint64_t src_offset, blkcopy_device* dst, uint64_t dst_offset,
                 uint64_t len, const blkcopy_copy_options* opts, blkcopy_copy_result* out) {
  blkcopy_range r{src, src_offset, len};
  return blkcopy_copy_ranges(&r, 1, dst, dst_offset, opts, out);
}

int blkcopy_copy_ranges(const blkcopy_range* sources, size_t n, blkcopy_device* dst,
                        uint64_t dst_offset, const blkcopy_copy_options* opts,
                        blkcopy_copy_result* out) {
  if (blkcopy::capi::in_callback) {
    return refuse(-EDEADLK, "blkcopy_copy: called from a progress or log callback (not allowed)",
                  out);
  }
  if (!sources || n == 0 || !dst) return refuse(-EINVAL, "no sources or no destination", out);
  if (!mine(dst)) return refuse(-EXDEV, "the destination belongs to another thread", out);
  try {
    std::vector<blkcopy::CopySegment> segs;
    for (size_t i = 0; i < n; ++i) {
      if (!sources[i].device) return refuse(-EINVAL, "a source range has no device", out);
      if (!mine(sources[i].device)) return refuse(-EXDEV, "a source belongs to another thread", out);
      segs.push_back({sources[i].device->dev.get(), sources[i].offset, sources[i].length});
    }
    blkcopy::CopyOptions opt;
    const char* why = nullptr;
    if (int e = options(opts, opt, why)) return refuse(e, why, out);
    // The engine validates alignment, bounds, overlap and the destination, with messages.
    return finish(blkcopy::copy_ranges(segs, *dst->dev, dst_offset, opt), out);
  } catch (const std::bad_alloc&) {
    return refuse(-ENOMEM, "out of memory", out);
  } catch (...) {
    return refuse(-EIO, "internal error", out);
  }
}

int blkcopy_read(blkcopy_device* device, uint64_t offset, void* buf, uint64_t len) {
  if (blkcopy::capi::in_callback) return from_callback("blkcopy_read");
  if (!device || !buf) return fail(-EINVAL, "blkcopy_read: no device or no buffer");
  if (!mine(device)) return fail(-EXDEV, "blkcopy_read: the device belongs to another thread");
  if (int e = check_range(device, offset, len)) return fail(e, "blkcopy_read: bad range");
  return guarded([&] {
    Status s = blkcopy::read_sync(*device->dev, offset, {static_cast<std::byte*>(buf), len});
    return s.ok() ? 0 : fail(s);
  });
}

int blkcopy_write(blkcopy_device* device, uint64_t offset, const void* buf, uint64_t len) {
  if (blkcopy::capi::in_callback) return from_callback("blkcopy_write");
  if (!device || !buf) return fail(-EINVAL, "blkcopy_write: no device or no buffer");
  if (!mine(device)) return fail(-EXDEV, "blkcopy_write: the device belongs to another thread");
  if (device->dev->limits().read_only) return fail(-EROFS, "blkcopy_write: the device is read-only");
  if (int e = check_range(device, offset, len)) return fail(e, "blkcopy_write: bad range");
  return guarded([&] {
    Status s = blkcopy::write_sync(*device->dev, offset, {static_cast<const std::byte*>(buf), len});
    return s.ok() ? 0 : fail(s);
  });
}

const char* blkcopy_strerror(int err) {
  if (err == INT_MIN) return "Unknown error";  // -INT_MIN does not exist
  return std::strerror(err < 0 ? -err : err);
}

const char* blkcopy_version(void) { return BLKCOPY_VERSION; }

}  // extern "C"
