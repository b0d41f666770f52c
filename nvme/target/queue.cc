#include "nvme/target/queue.h"

#include <blkcopy/log.h>
#include <fmt/format.h>

#include <cstring>

#include "nvme/target/buffers.h"
#include "nvme/target/internal.h"
#include "nvme/target/ops.h"

namespace blkcopy::nvme {

// Async Event Requests a queue holds beyond its depth.
constexpr unsigned kMaxAers = 4;

// What a command without data points at: never written (nothing has room to be written), so
// that no path meets a null pointer, and such commands take nothing from the budget.
alignas(4096) uint8_t no_data[4096];

bool without_data(TargetRequest& r) {
  if (r.data_len) return false;
  r.data = no_data;
  r.data_cap = 0;
  return true;
}

TargetQueue::TargetQueue(TargetImpl& target, unsigned worker, EventLoop& loop,
                         QueueTransport& transport)
    : target_(target),
      worker_(worker),
      loop_(loop),
      transport_(transport),
      data_account_(target.data_queue(worker), target.data_share()),
      copy_account_(target.copy_queue(worker), target.copy_share()) {}

TargetQueue::~TargetQueue() {
  if (busy()) {
    log_error(fmt::format("serve: a queue freed with {} requests on devices (a bug)", on_devices_));
  }
}

TargetRequest* TargetQueue::take() {
  if (outstanding_ + 1 > session.depth + session.aers.size() ||
      outstanding_ >= kMaxQueueSize + kMaxAers) {
    return nullptr;
  }
  if (!free_) {
    requests_.push_back(std::make_unique<TargetRequest>());
    free_ = requests_.back().get();
  }
  TargetRequest* r = free_;
  free_ = r->next;
  r->reset();
  r->queue = this;
  r->copy_buffers.account = &copy_account_;
  ++outstanding_;
  return r;
}

void TargetQueue::release(TargetRequest& r) {
  drop_data(r);
  r.ns.reset();  // a namespace being removed is freed once no request holds it
  r.pinned.clear();
  if (r.held) {
    in_capsule_held_ -= r.held;
    data_account_.give(r.held);
    r.held = 0;
  }
  --outstanding_;
  r.next = free_;
  free_ = &r;
}

void TargetQueue::drop_data(TargetRequest& r) {
  if (!r.data || !r.data_cap) return;
  if (r.in_capsule) in_capsule_held_ -= r.data_cap;
  give_buffer(r.data, r.data_cap);
  data_account_.give(r.data_cap);
  r.data = nullptr;
}

void TargetQueue::hold(TargetRequest& r, uint32_t bytes) {
  r.held += bytes;
  in_capsule_held_ += bytes;
  data_account_.force(bytes);
}

void TargetQueue::need_buffer(TargetRequest& r) {
  if (without_data(r)) return transport_.buffer_ready(r);
  r.bytes = buffer_class(r.data_len);
  if (data_account_.take(r)) return buffer_granted(r);
  r.wait = TargetRequest::Wait::data_buffer;
  ++waiting_;
  ++target_.mut_stats().budget_waits;
}

void TargetRequest::granted() {
  queue->waiting_--;
  wait = Wait::none;
  queue->buffer_granted(*this);
}

void TargetQueue::buffer_granted(TargetRequest& r) {
  r.data = take_buffer(r.data_len, r.data_cap);
  if (!r.data) {  // out of memory: give the room back and fail the command
    data_account_.give(r.bytes);
    return complete(r, st(status::kInternal));
  }
  transport_.buffer_ready(r);
}

bool TargetQueue::copy_in(TargetRequest& r, const uint8_t* p) {
  r.in_capsule = true;
  if (without_data(r)) return true;
  r.data = take_buffer(r.data_len, r.data_cap);
  if (!r.data) return false;
  data_account_.force(r.data_cap);  // received already: counted, never waited for
  in_capsule_held_ += r.data_cap;
  std::memcpy(r.data, p, r.data_len);
  r.received = r.data_len;
  return true;
}

void TargetQueue::execute(TargetRequest& r) {
  ++target_.mut_stats().commands;
  if (target_.trace().on() || target_.counting()) r.started = Clock::now();
  r.cqe.cid = r.sqe.cid;
  r.cqe.sqid = session.qid;
  // Only a proven host's commands keep its controller alive (not a squatter's capsules).
  if (session.ctrl && session.authenticated) session.ctrl->seen();
  if (r.sqe.opcode == admin::kFabrics) return run_fabrics(r);
  if (!session.ctrl) return complete(r, st(status::kInvalidOpcode));  // Connect first
  if (!session.authenticated) return complete(r, st(status::kAuthRequired));
  const bool admin = session.qid == 0;
  const Operation* op = find_operation(admin, r.sqe.opcode);
  if (!op) return complete(r, st(status::kInvalidOpcode));
  if (!admin) {
    Subsystem* s = session.ctrl->subsys.get();
    if (!s) return complete(r, st(status::kInvalidOpcode));  // discovery has no I/O queues
    r.ns = s->ns(r.sqe.nsid);  // held until the request is released (a removal waits for it)
    if (!r.ns) return complete(r, st(status::kInvalidNamespace));
  }
  op->run(r);
}

void TargetQueue::complete(TargetRequest& r, uint16_t status, uint32_t dw0) {
  if (status) ++target_.mut_stats().errors;
  if (target_.trace().on()) target_.trace().record(*this, r, status);
  if (target_.counting()) target_.count(*this, r, status);
  r.cqe.cid = r.sqe.cid;
  r.cqe.sqid = session.qid;
  r.cqe.status = status;
  r.cqe.dw0 = dw0;
  if (status) r.c2h = 0;
  transport_.complete(r);
}

void TargetQueue::close() {
  if (closing_) return;
  closing_ = true;
  cancelled_ = true;
  // Requests waiting for room are let go: they never started.
  for (auto& r : requests_) {
    if (r->wait == TargetRequest::Wait::data_buffer && data_account_.cancel(*r)) {
      r->wait = TargetRequest::Wait::none;
      --waiting_;
      transport_.dropped(*r);
      release(*r);
    }
  }
  auto aers = std::move(session.aers);
  session.aers.clear();
  for (TargetRequest* r : aers) {
    transport_.dropped(*r);
    release(*r);
  }
  // An I/O queue that never claimed its ID (it had not authenticated) must not free another's.
  if (session.qid == 0 || session.qid_claimed) target_.subsystems().drop(session.ctrl, session.qid);
  session.ctrl.reset();
}

std::string TargetQueue::stalled(Clock::time_point opened, Clock::time_point now) const {
  const TargetLimits& l = target_.limits();
  using std::chrono::milliseconds;
  if (!session.ctrl && now - opened > milliseconds(l.connect_ms)) {
    return fmt::format("no fabrics Connect within {} ms", l.connect_ms);
  }
  if (!session.authenticated && now - opened > milliseconds(l.connect_ms)) {
    return fmt::format("DH-HMAC-CHAP authentication not completed within {} ms", l.connect_ms);
  }
  return {};
}

// ---------------------------------------------------------------- Copy's emulation buffers

std::byte* CopyBufferGrant::take(uint64_t n, std::function<void()> retry) {
  if (n > kLargestBuffer) return nullptr;  // the target's chunks are never this large
  const uint32_t cap = buffer_class(static_cast<uint32_t>(n));
  bool have = unused_ >= cap;
  if (have) {
    unused_ -= cap;
  } else {
    bytes = cap;
    retry_ = std::move(retry);
    have = account->take(*this);
    if (have) retry_ = nullptr;
  }
  if (!have) return nullptr;
  uint32_t got = 0;
  uint8_t* p = take_buffer(static_cast<uint32_t>(n), got);
  if (!p) {
    account->give(cap);
    return nullptr;
  }
  return reinterpret_cast<std::byte*>(p);
}

void CopyBufferGrant::give(std::byte* buf, uint64_t n) {
  const uint32_t cap = buffer_class(static_cast<uint32_t>(n));
  give_buffer(reinterpret_cast<uint8_t*>(buf), cap);
  account->give(cap);
}

// Runs inside whatever gave the room back (another chunk's write ending, often of this very
// copy): the copy asks again from a task of its own, as CopyBuffers promises, never from inside
// a give (the engine could end and free itself under its caller).
void CopyBufferGrant::granted() {
  unused_ += bytes;
  auto retry = std::move(retry_);
  retry_ = nullptr;
  if (retry) account->loop().post(std::move(retry));
}

void CopyBufferGrant::finish() {
  if (queued) account->cancel(*this);
  retry_ = nullptr;
  if (unused_) account->give(unused_);
  unused_ = 0;
}

}  // namespace blkcopy::nvme
