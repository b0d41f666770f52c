// One event loop per thread, on io_uring. Every device completion runs on its loop's thread.
//
// Thread safety: an EventLoop is used from the thread that runs it, except post_remote() (any
// thread) and the blocking work handed to offload(), which runs on helper threads (and must
// touch no loop state).
//
// Ownership: whoever arms a timer or starts an operation owns cancelling it. at() and after()
// return a Timer handle: cancelling it, or destroying it, guarantees the task never runs. Every
// other operation returns an OpId that cancel() takes: the kernel is asked to end the operation
// early and its callback still runs exactly once (with -ECANCELED when the cancel won), so an
// owner that must go before its operations end cancels them and frees itself from the last
// callback, never by spinning the loop in a destructor.
#pragma once

#include <blkcopy/status.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

struct msghdr;
struct sockaddr;

namespace blkcopy {

class EventLoop;

// An operation in flight on a loop, for EventLoop::cancel(). A handle whose operation has ended
// is stale and cancelling it does nothing.
struct OpId {
  void* op = nullptr;
  uint64_t generation = 0;
};

// A timer armed with EventLoop::at() or after(), owned by whoever holds the handle: cancel(),
// or destroying the handle, makes sure the task does not run (its captures are released then).
// Move-only. REQUIRES: used on the loop's thread, and the loop outlives the handle.
class [[nodiscard]] Timer {
 public:
  Timer() = default;
  Timer(Timer&& o) noexcept : loop_(std::exchange(o.loop_, nullptr)), id_(o.id_) {}
  Timer& operator=(Timer&& o) noexcept {
    if (this != &o) {
      cancel();
      loop_ = std::exchange(o.loop_, nullptr);
      id_ = o.id_;
    }
    return *this;
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  ~Timer() { cancel(); }

  void cancel();
  // True from arming until the task has started running or the timer was cancelled.
  bool armed() const;

 private:
  friend class EventLoop;
  Timer(EventLoop* loop, OpId id) : loop_(loop), id_(id) {}
  EventLoop* loop_ = nullptr;
  OpId id_;
};

class EventLoop {
 public:
  // res: bytes transferred (>= 0) or -errno, as io_uring reports it.
  using IoCallback = std::function<void(int res)>;
  using Task = std::function<void()>;

  static Result<std::unique_ptr<EventLoop>> create(unsigned queue_depth = 256,
                                                   unsigned helper_threads = 4);
  virtual ~EventLoop() = default;

  // Asynchronous file I/O. The callback runs later on the loop, never inside the call.
  virtual OpId read(int fd, void* buf, uint32_t len, uint64_t offset, IoCallback cb) = 0;
  virtual OpId write(int fd, const void* buf, uint32_t len, uint64_t offset, IoCallback cb) = 0;
  virtual OpId fsync(int fd, IoCallback cb) = 0;
  virtual OpId fallocate(int fd, int mode, uint64_t offset, uint64_t len, IoCallback cb) = 0;

  // Sockets. accept's result is the new descriptor; sendmsg's msghdr (and what it points to)
  // must stay valid until the callback runs.
  virtual OpId accept(int fd, IoCallback cb) = 0;
  // A TCP connect without blocking the loop; `addr` must stay valid until the callback runs.
  virtual OpId connect(int fd, const struct sockaddr* addr, uint32_t len, IoCallback cb) = 0;
  virtual OpId recv(int fd, void* buf, uint32_t len, IoCallback cb) = 0;
  virtual OpId sendmsg(int fd, const struct msghdr* msg, IoCallback cb) = 0;

  // A command for the driver behind fd (IORING_OP_URING_CMD, Linux 5.19+: NVMe passthrough on
  // /dev/ngXnY): cmd_op and up to 80 bytes of command, copied now. cb gets the result (>= 0, or
  // -errno) and the 64-bit value of the big completion entry. Where the ring could not be set
  // up for such commands (an older kernel), cb gets -EOPNOTSUPP; supports_uring_cmd() says so.
  using CmdCallback = std::function<void(int res, uint64_t result)>;
  static constexpr size_t kUringCmdBytes = 80;
  virtual bool supports_uring_cmd() const = 0;
  virtual OpId uring_cmd(int fd, uint32_t cmd_op, const void* cmd, size_t len, CmdCallback cb) = 0;

  // Asks the kernel to end an operation early; its callback still runs once, with -ECANCELED
  // when the cancel won or with its own result when it had already finished. Buffers the
  // operation uses must stay valid until then. A stale handle is ignored.
  virtual void cancel(OpId op) = 0;

  // Runs task on the loop at the deadline (an absolute io_uring timeout on CLOCK_MONOTONIC,
  // which std::chrono::steady_clock reads), or after the delay. Timers fire in deadline order.
  virtual Timer at(std::chrono::steady_clock::time_point deadline, Task task) = 0;
  Timer after(std::chrono::nanoseconds delay, Task task) {
    return at(std::chrono::steady_clock::now() + delay, std::move(task));
  }
  // Runs task on the loop soon, after the current callback returns.
  virtual void post(Task task) = 0;
  // The same from any other thread (the only call that is thread-safe).
  virtual void post_remote(Task task) = 0;
  // Runs blocking work (a system call io_uring lacks, such as copy_file_range) on a helper
  // thread; `done` gets its result on the loop.
  virtual void offload(std::function<int()> work, IoCallback done) = 0;

  // Busy polling: before it would sleep waiting for a completion, the loop asks the kernel for
  // completions without sleeping for up to `spin` (0, the default: never spins). Under load the
  // loop then never sleeps, so a completion costs no wake-up of an idle CPU (tens of
  // microseconds on a virtual machine), at the price of a busy core, as SPDK's reactors do.
  // Only for loops that own their core; call it before running the loop.
  virtual void set_busy_poll(std::chrono::microseconds spin) = 0;

  // Runs the loop until done() is true. Returns an error if nothing is left that could make
  // done() true (a bug in the caller: it would otherwise hang).
  virtual Status run_until(const std::function<bool()>& done) = 0;

  // An object that frees itself once the kernel has ended its operations (a closed socket
  // whose cancelled receive is still in the ring). If the loop is destroyed first, those
  // operations never end: the loop then deletes every object still adopted, after the ring is
  // gone (no callback runs). adopt() when it starts waiting, disown() just before it frees
  // itself; its destructor must not use the loop.
  class Orphan {
   public:
    virtual ~Orphan() = default;
  };
  virtual void adopt(Orphan* o) = 0;
  virtual void disown(Orphan* o) = 0;

 protected:
  Timer make_timer(OpId id) { return Timer(this, id); }

 private:
  friend class Timer;
  // A timer's task is dropped and its timeout removed from the ring; false when stale.
  virtual void cancel_timer(OpId id) = 0;
  virtual bool timer_armed(OpId id) const = 0;
};

inline void Timer::cancel() {
  if (loop_) std::exchange(loop_, nullptr)->cancel_timer(id_);
}
inline bool Timer::armed() const { return loop_ && loop_->timer_armed(id_); }

}  // namespace blkcopy
