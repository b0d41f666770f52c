// io_uring event loop. Each submitted operation carries an Op from the loop's pool whose address
// is the SQE's user_data; the completion runs the callback exactly once and returns the Op.
#include <blkcopy/event_loop.h>

#include <fmt/format.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

namespace blkcopy {
namespace {

// What a submission carries: its callback, and for a timer its deadline. Ops come from a pool
// the loop owns (no allocation per operation once warm); `generation` counts reuses, so a
// handle (OpId, Timer) to an op that has ended and been reused is recognised as stale.
struct Op {
  enum class Kind : uint8_t { io, cmd, timer, internal };
  Kind kind = Kind::io;
  bool cancelled = false;  // a timer whose task was dropped
  uint64_t generation = 0;
  EventLoop::IoCallback cb;
  EventLoop::CmdCallback cmd_cb;  // instead of cb for uring_cmd: also the big CQE's result
  EventLoop::Task task;           // a timer's
  __kernel_timespec ts{};         // for timeouts: must live until completion
};

class UringLoop final : public EventLoop {
 public:
  UringLoop() = default;
  ~UringLoop() override;

  Status init(unsigned depth, unsigned helpers);

  OpId read(int fd, void* buf, uint32_t len, uint64_t offset, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_read(sqe(op), fd, buf, len, offset);
    return id(op);
  }
  OpId write(int fd, const void* buf, uint32_t len, uint64_t offset, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_write(sqe(op), fd, buf, len, offset);
    return id(op);
  }
  OpId fsync(int fd, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_fsync(sqe(op), fd, 0);
    return id(op);
  }
  OpId fallocate(int fd, int mode, uint64_t offset, uint64_t len, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_fallocate(sqe(op), fd, mode, offset, len);
    return id(op);
  }
  OpId accept(int fd, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_accept(sqe(op), fd, nullptr, nullptr, SOCK_CLOEXEC);
    return id(op);
  }
  OpId connect(int fd, const sockaddr* addr, uint32_t len, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_connect(sqe(op), fd, addr, len);
    return id(op);
  }
  OpId recv(int fd, void* buf, uint32_t len, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_recv(sqe(op), fd, buf, len, 0);
    return id(op);
  }
  OpId sendmsg(int fd, const struct msghdr* msg, IoCallback cb) override {
    Op* op = io_op(std::move(cb));
    io_uring_prep_sendmsg(sqe(op), fd, msg, MSG_NOSIGNAL);
    return id(op);
  }
  bool supports_uring_cmd() const override { return big_ring_; }
  OpId uring_cmd(int fd, uint32_t cmd_op, const void* cmd, size_t len, CmdCallback cb) override {
    if (!big_ring_ || len > kUringCmdBytes) {
      post([cb = std::move(cb)] { cb(-EOPNOTSUPP, 0); });
      return {};
    }
    Op* op = take_op(Op::Kind::cmd);
    op->cmd_cb = std::move(cb);
    io_uring_sqe* s = sqe(op);
    std::memset(s, 0, 2 * sizeof(io_uring_sqe));  // a 128-byte entry in this ring
    s->opcode = IORING_OP_URING_CMD;
    s->fd = fd;
    s->cmd_op = cmd_op;
    io_uring_sqe_set_data(s, op);
    std::memcpy(s->cmd, cmd, len);
    return id(op);
  }
  void cancel(OpId which) override {
    auto* op = static_cast<Op*>(which.op);
    if (!op || op->generation != which.generation || op->kind == Op::Kind::timer) return;
    io_uring_prep_cancel64(sqe(&ignored_op_), reinterpret_cast<uint64_t>(op), 0);
  }
  Timer at(std::chrono::steady_clock::time_point deadline, Task task) override {
    // Absolute: a relative timeout would count from when the SQE reaches the kernel, so two
    // timers armed in one batch could fire out of order.
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           deadline.time_since_epoch())
                           .count();
    Op* op = take_op(Op::Kind::timer);
    op->task = std::move(task);
    op->ts.tv_sec = ns / 1'000'000'000;
    op->ts.tv_nsec = ns % 1'000'000'000;
    io_uring_prep_timeout(sqe(op), &op->ts, 0, IORING_TIMEOUT_ABS);
    return make_timer(id(op));
  }
  void post(Task task) override { posted_.push_back(std::move(task)); }
  void post_remote(Task task) override {
    {
      std::lock_guard lock(mu_);
      remote_.push_back(std::move(task));
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(efd_, &one, sizeof one);
  }
  void offload(std::function<int()> work, IoCallback done) override;
  void set_busy_poll(std::chrono::microseconds spin) override { spin_ = spin; }
  Status run_until(const std::function<bool()>& done) override;
  void adopt(Orphan* o) override { orphans_.insert(o); }
  void disown(Orphan* o) override { orphans_.erase(o); }

 private:
  void cancel_timer(OpId which) override {
    Op* op = live_timer(which);
    if (!op) return;
    op->cancelled = true;
    Task drop = std::move(op->task);  // its captures go now, not when the kernel answers
    op->task = nullptr;
    io_uring_prep_timeout_remove(sqe(&ignored_op_), reinterpret_cast<uint64_t>(op), 0);
  }
  bool timer_armed(OpId which) const override { return live_timer(which) != nullptr; }
  Op* live_timer(OpId which) const {
    auto* op = static_cast<Op*>(which.op);
    if (!op || op->generation != which.generation || op->kind != Op::Kind::timer ||
        op->cancelled) {
      return nullptr;
    }
    return op;
  }
  static OpId id(Op* op) { return {op, op->generation}; }
  Op* take_op(Op::Kind kind);
  Op* io_op(IoCallback cb) {
    Op* op = take_op(Op::Kind::io);
    op->cb = std::move(cb);
    return op;
  }
  void give_op(Op* op);
  io_uring_sqe* sqe(Op* op);
  void arm_eventfd();
  void run_posted();
  void spin();
  void reap(io_uring_cqe* cqe);
  void reap_ready();  // every completion in the ring now
  void helper_main();

  io_uring ring_{};
  bool ring_ok_ = false;
  bool big_ring_ = false;  // 128-byte SQEs and 32-byte CQEs: uring_cmd works
  unsigned inflight_ = 0;  // SQEs whose completion has not been reaped (internal ones excluded)
  std::vector<std::unique_ptr<Op>> ops_;  // every op ever made; freed with the loop
  std::unordered_set<Orphan*> orphans_;    // waiting for their operations to end
  std::vector<Op*> free_ops_;
  // Tasks posted on the loop, and the ones being run: two vectors swapped each round keep their
  // capacity, so posting allocates nothing once warm (a task's own captures aside).
  std::vector<Task> posted_, running_;
  bool running_posted_ = false;

  // Helper threads for blocking work; results come back through an eventfd read on the ring.
  struct Job {
    std::function<int()> work;
    IoCallback done;
    int res = 0;
  };
  int efd_ = -1;
  uint64_t efd_value_ = 0;
  Op efd_op_{Op::Kind::internal};
  Op ignored_op_{Op::Kind::internal};  // cancel requests: their own answers are not needed
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_, finished_;
  std::vector<Task> remote_, remote_taken_;  // posted from other threads
  unsigned jobs_pending_ = 0;  // loop thread only
  std::chrono::microseconds spin_{0};
  bool stopping_ = false;
  std::vector<std::thread> helpers_;
};

UringLoop::~UringLoop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : helpers_) t.join();
  // Operations that never completed (a socket still waiting to be read, a timer) go with the
  // ring: their callbacks do not run; ops_ frees them. The kernel keeps no pointer into an Op
  // once the ring is gone.
  if (ring_ok_) io_uring_queue_exit(&ring_);
  if (efd_ >= 0) close(efd_);
  for (Orphan* o : std::exchange(orphans_, {})) delete o;
}

Status UringLoop::init(unsigned depth, unsigned helpers) {
  // 128-byte SQEs and 32-byte CQEs (Linux 5.19) carry NVMe passthrough commands; a kernel
  // without them gets a plain ring, and uring_cmd answers EOPNOTSUPP.
  // BLKCOPY_PLAIN_RING=1 makes the plain ring here too (tests of the older-kernel path).
  const char* plain = getenv("BLKCOPY_PLAIN_RING");
  // COOP_TASKRUN: completions run at the loop's next system call, not through an interrupt;
  // TASKRUN_FLAG: the ring says when there are some (what a busy-polling loop checks).
  const unsigned flags = IORING_SETUP_SQE128 | IORING_SETUP_CQE32 | IORING_SETUP_COOP_TASKRUN |
                         IORING_SETUP_TASKRUN_FLAG;
  int rc = plain && *plain == '1' ? -EINVAL : io_uring_queue_init(depth, &ring_, flags);
  big_ring_ = rc == 0;
  if (rc < 0) rc = io_uring_queue_init(depth, &ring_, 0);
  if (rc < 0) return Status::from_errno(-rc, "io_uring_queue_init");
  ring_ok_ = true;
  efd_ = eventfd(0, EFD_CLOEXEC);
  if (efd_ < 0) return Status::from_errno(errno, "eventfd");
  arm_eventfd();
  for (unsigned i = 0; i < helpers; ++i) helpers_.emplace_back([this] { helper_main(); });
  return {};
}

Op* UringLoop::take_op(Op::Kind kind) {
  if (free_ops_.empty()) {
    ops_.push_back(std::make_unique<Op>());
    free_ops_.push_back(ops_.back().get());
  }
  Op* op = free_ops_.back();
  free_ops_.pop_back();
  op->kind = kind;
  op->cancelled = false;
  return op;
}

void UringLoop::give_op(Op* op) {
  ++op->generation;  // handles to it are stale from now on
  op->cb = nullptr;
  op->cmd_cb = nullptr;
  op->task = nullptr;
  free_ops_.push_back(op);
}

io_uring_sqe* UringLoop::sqe(Op* op) {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  while (!s) {  // submission queue full: hand what we have to the kernel and retry
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data(s, op);
  if (op->kind != Op::Kind::internal) ++inflight_;
  return s;
}

void UringLoop::arm_eventfd() {
  efd_op_.cb = [this](int) {
    std::deque<Job> done;
    {
      std::lock_guard lock(mu_);
      if (!finished_.empty()) done.swap(finished_);
      remote_taken_.swap(remote_);
    }
    arm_eventfd();
    for (auto& t : remote_taken_) posted_.push_back(std::move(t));
    remote_taken_.clear();
    for (auto& job : done) {
      --jobs_pending_;
      job.done(job.res);
    }
  };
  io_uring_prep_read(sqe(&efd_op_), efd_, &efd_value_, sizeof efd_value_, 0);
}

void UringLoop::offload(std::function<int()> work, IoCallback done) {
  ++jobs_pending_;
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(Job{std::move(work), std::move(done)});
  }
  cv_.notify_one();
}

void UringLoop::helper_main() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job.res = job.work();
    {
      std::lock_guard lock(mu_);
      finished_.push_back(std::move(job));
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(efd_, &one, sizeof one);
  }
}

void UringLoop::run_posted() {
  // Tasks posted while running go to the next round, so a task that re-posts cannot starve I/O.
  if (running_posted_) {  // a task that runs the loop itself (a blocking wrapper inside it)
    std::vector<Task> now;
    now.swap(posted_);
    for (auto& t : now) t();
    return;
  }
  running_posted_ = true;
  running_.swap(posted_);
  for (auto& t : running_) t();
  running_.clear();
  running_posted_ = false;
}

void UringLoop::reap(io_uring_cqe* cqe) {
  auto* op = static_cast<Op*>(io_uring_cqe_get_data(cqe));
  int res = cqe->res;
  const uint64_t big = big_ring_ ? cqe->big_cqe[0] : 0;
  io_uring_cqe_seen(&ring_, cqe);
  if (op == &efd_op_) return op->cb(res);
  if (op == &ignored_op_) return;
  --inflight_;
  // The op goes back to the pool before its callback runs (which may start new operations);
  // the callback is moved out first.
  switch (op->kind) {
    case Op::Kind::cmd: {
      auto cb = std::move(op->cmd_cb);
      give_op(op);
      return cb(res, big);
    }
    case Op::Kind::timer: {
      auto task = std::move(op->task);
      give_op(op);
      if (task) task();  // empty when cancelled
      return;
    }
    default: {
      auto cb = std::move(op->cb);
      give_op(op);
      return cb(res);
    }
  }
}

// Submits what is queued and polls for completions, without sleeping, for up to spin_.
void UringLoop::spin() {
  io_uring_submit(&ring_);
  const auto until = std::chrono::steady_clock::now() + spin_;
  // The kernel raises IORING_SQ_TASKRUN when completions wait to be run (COOP_TASKRUN defers
  // them to the next system call): enter the kernel only then, not on every turn of the spin.
  for (unsigned i = 0; !io_uring_cq_ready(&ring_); ++i) {
    if (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) {
      io_uring_get_events(&ring_);
      continue;
    }
    if (i % 32 == 0 && std::chrono::steady_clock::now() >= until) break;
    __builtin_ia32_pause();
  }
}

void UringLoop::reap_ready() {
  io_uring_cqe* cqe = nullptr;
  unsigned head;
  unsigned n = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) { ++n; }
  // Reap one at a time: a callback may submit, which must not race the iteration above.
  while (n-- > 0 && io_uring_peek_cqe(&ring_, &cqe) == 0) reap(cqe);
}

Status UringLoop::run_until(const std::function<bool()>& done) {
  while (!done()) {
    if (!posted_.empty()) {
      run_posted();
      if (done() || posted_.empty()) continue;
      // Tasks that keep posting tasks (a device completing in memory, a copy pumping) must not
      // starve sockets and timers: between rounds, completions come in without sleeping.
      io_uring_submit(&ring_);
      if (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) {
        io_uring_get_events(&ring_);
      }
      reap_ready();
      continue;
    }
    if (inflight_ == 0 && jobs_pending_ == 0) {
      return Status::error(EDEADLK, "event loop: waiting for a completion that cannot come");
    }
    if (spin_.count() && !io_uring_cq_ready(&ring_)) spin();
    const int rc = io_uring_cq_ready(&ring_) ? io_uring_submit(&ring_)
                                             : io_uring_submit_and_wait(&ring_, 1);
    if (rc < 0 && rc != -EINTR) return Status::from_errno(-rc, "io_uring_submit_and_wait");
    reap_ready();
  }
  // Leave nothing queued but unsubmitted: callers may stop running the loop for a while.
  io_uring_submit(&ring_);
  return {};
}

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create(unsigned queue_depth, unsigned helpers) {
  auto loop = std::make_unique<UringLoop>();
  if (Status s = loop->init(queue_depth, helpers); !s.ok()) return std::unexpected(s);
  return loop;
}

}  // namespace blkcopy
