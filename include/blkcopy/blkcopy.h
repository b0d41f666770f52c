/* blkcopy's C API: open devices by their device strings, read their limits, and copy ranges
 * the cheapest way the devices allow (offloaded inside a device, emulated otherwise). Usable
 * from C, and from Python (ctypes, cffi), Rust or Go through their C interfaces.
 *
 * Errors are negative errno values (-EINVAL for bad arguments, -ERANGE for ranges beyond a
 * device, -EROFS for a read-only destination, -EOPNOTSUPP when offload was required and is
 * impossible, -ECANCELED for a cancelled copy, -EIO and others from the devices);
 * blkcopy_strerror() names them, a copy result carries the full message, and
 * blkcopy_last_error() gives it for any call.
 *
 * Threads: each thread that calls blkcopy has its own event loop, made on first use. A device
 * belongs to the thread that opened it: use and close it there (another thread gets -EXDEV).
 * The devices of one copy must belong to the same thread. Calls block the calling thread until
 * their work is done; different threads work independently.
 *
 * Link with pkg-config (`cc prog.c $(pkg-config --cflags --libs blkcopy)`) or CMake
 * (`find_package(blkcopy)`, `target_link_libraries(prog blkcopy::blkcopy)`).
 */
#ifndef BLKCOPY_BLKCOPY_H
#define BLKCOPY_BLKCOPY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct blkcopy_device blkcopy_device;

/* Queue limits, as `blkcopy info` and sysfs name them; byte counts. */
typedef struct blkcopy_limits {
  uint32_t logical_block_size;    /* offsets and lengths are multiples of it */
  uint64_t capacity;
  uint64_t copy_max_hw_bytes;     /* most bytes one offloaded copy may move; 0: no offload */
  uint64_t copy_max_bytes;        /* the user limit in force (0: offload off) */
  uint64_t copy_segment_max_bytes;
  uint32_t copy_max_src_segments;
  int read_only;
} blkcopy_limits;

enum blkcopy_emulation {
  BLKCOPY_EMULATE_ALLOW = 0, /* offload where possible, emulate the rest (the default) */
  BLKCOPY_EMULATE_NEVER = 1, /* offload only: -EOPNOTSUPP where it cannot */
  BLKCOPY_EMULATE_FORCE = 2  /* always read into memory and write back */
};

/* Cancels copies from any thread, or from a signal handler: pass it in the options, then
 * blkcopy_cancel_request() makes every copy using it issue no more work and end with
 * -ECANCELED once the work in flight is done (result.bytes is then exact; a copy whose work
 * had all landed ends with 0). Work in flight is not interrupted: an offloaded piece (up to the
 * destination's copy_max_bytes) or an emulated chunk finishes first. A request stays in force
 * (a copy started later with the same object ends at once) until blkcopy_cancel_reset(). */
typedef struct blkcopy_cancel blkcopy_cancel;
blkcopy_cancel *blkcopy_cancel_create(void); /* NULL when out of memory */
void blkcopy_cancel_request(blkcopy_cancel *cancel); /* async-signal-safe; NULL: nothing */
void blkcopy_cancel_reset(blkcopy_cancel *cancel);
void blkcopy_cancel_destroy(blkcopy_cancel *cancel); /* not while a copy uses it; NULL allowed */

/* Called on the copying thread each time a copy's in-order progress advances: `done` of
 * `total` bytes copied from the start, in steps of the pieces in flight. It may call
 * blkcopy_cancel_request(); other blkcopy calls from it fail with -EDEADLK (closing a device
 * the copy uses, or a copy inside the copy, would pull the ground from under it). */
typedef void (*blkcopy_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Copy options. The struct grows at its end in later versions: `size` says how much of it the
 * caller knows, so start from BLKCOPY_COPY_OPTIONS_INIT (or set size = sizeof *opts and zero
 * the rest). Fields beyond a caller's size take their defaults; a caller's fields this library
 * does not know must be zero, else -E2BIG (a newer program on an older library). */
typedef struct blkcopy_copy_options {
  uint32_t size; /* sizeof(blkcopy_copy_options) as the caller was built; 0, not a multiple of 8
                    or not a size any version had: -EINVAL */
  int emulation;          /* enum blkcopy_emulation; another value: -EINVAL */
  uint64_t buffer_bytes;  /* host memory emulation may use; 0: the default (64 MiB) */
  uint64_t chunk_bytes;   /* bytes per emulated read and write; 0: the default (4 MiB) */
  blkcopy_progress_fn progress; /* NULL: none */
  void *progress_arg;
  blkcopy_cancel *cancel; /* NULL: the copy runs to its end */
} blkcopy_copy_options;

#define BLKCOPY_COPY_OPTIONS_INIT \
  { sizeof(blkcopy_copy_options), BLKCOPY_EMULATE_ALLOW, 0, 0, NULL, NULL, NULL }

/* What a copy did: the same counters as `blkcopy copy --json`. */
typedef struct blkcopy_copy_result {
  int status;                   /* 0 or a negative errno */
  uint64_t bytes;               /* copied, in order from the start (exact after a failure) */
  int backward;                 /* overlapping ranges walked from the end: the last `bytes` */
  uint64_t offloaded_bytes;     /* of `bytes`: copied inside the devices */
  uint64_t emulated_bytes;      /* of `bytes`: read into memory and written back */
  uint64_t host_read_bytes;
  uint64_t host_written_bytes;
  uint64_t commands;            /* requests sent to devices */
  double seconds;
  char error[256];              /* the message when status != 0, else "" */
} blkcopy_copy_result;

/* One source range of a vectored copy. */
typedef struct blkcopy_range {
  blkcopy_device *device;
  uint64_t offset;
  uint64_t length;
} blkcopy_range;

/* Opens a device string ("/path/file", "mem:1G", "dm:table", "nvme-tcp://host/nqn?ns=1", ...).
 * On success *out is the device (close it with blkcopy_close) and 0 is returned. */
int blkcopy_open(const char *device, blkcopy_device **out);
/* Closes a device; NULL is allowed (0). A device of another thread is left open: -EXDEV. */
int blkcopy_close(blkcopy_device *device);
/* The message of this thread's last failed call ("" before any): what blkcopy_open could not
 * open and why, for instance. Valid until this thread's next blkcopy call. */
const char *blkcopy_last_error(void);
int blkcopy_info(blkcopy_device *device, blkcopy_limits *out);

/* Copies len bytes from src at src_offset to dst at dst_offset. opts may be NULL (defaults);
 * out may be NULL. Overlapping ranges on one device behave like memmove. Returns out->status. */
int blkcopy_copy(blkcopy_device *src, uint64_t src_offset, blkcopy_device *dst, uint64_t dst_offset,
                 uint64_t len, const blkcopy_copy_options *opts, blkcopy_copy_result *out);
/* Copies n source ranges, laid end to end, to dst at dst_offset. */
int blkcopy_copy_ranges(const blkcopy_range *sources, size_t n, blkcopy_device *dst,
                        uint64_t dst_offset, const blkcopy_copy_options *opts,
                        blkcopy_copy_result *out);

/* Reads or writes len bytes at offset (multiples of the logical block size, within the
 * device); buf may have any alignment. For checks and simple tools. */
int blkcopy_read(blkcopy_device *device, uint64_t offset, void *buf, uint64_t len);
int blkcopy_write(blkcopy_device *device, uint64_t offset, const void *buf, uint64_t len);

/* Where the library's messages go (a DH-HMAC-CHAP login without key agreement, a local NVMe or
 * SCSI device opened without command passthrough, an in-process target's log): by default
 * nowhere. fn(arg, level, message) gets each message of `level` or more important
 * (enum blkcopy_log_level); message is one line without a newline, valid during the call, with
 * control and non-ASCII bytes escaped. Calls come from the threads that do the work, one at a
 * time (other threads' messages wait meanwhile: keep fn short); blkcopy calls from fn fail with
 * -EDEADLK. fn NULL drops messages again. Set it before other threads use blkcopy. A level
 * outside the enum: -EINVAL. */
enum blkcopy_log_level {
  BLKCOPY_LOG_ERROR = 0,
  BLKCOPY_LOG_WARNING = 1,
  BLKCOPY_LOG_INFO = 2,
  BLKCOPY_LOG_DEBUG = 3
};
typedef void (*blkcopy_log_fn)(void *arg, int level, const char *message);
int blkcopy_set_log(blkcopy_log_fn fn, void *arg, int level);

/* A static description of a (negative or positive) errno value. */
const char *blkcopy_strerror(int err);
/* The version, "MAJOR.MINOR.PATCH". */
const char *blkcopy_version(void);

#ifdef __cplusplus
}
#endif

#endif /* BLKCOPY_BLKCOPY_H */
