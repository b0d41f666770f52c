#include "nvme/target/loopback.h"

#include <cstring>

#include "nvme/target/internal.h"

namespace blkcopy::nvme {

LoopbackQueue::LoopbackQueue(Target& target)
    : queue_(static_cast<TargetImpl&>(target), 0, static_cast<TargetImpl&>(target).home(),
             *this) {}

LoopbackQueue::~LoopbackQueue() { queue_.close(); }

bool LoopbackQueue::submit(const Sqe& sqe, std::span<const uint8_t> out, uint32_t in_len,
                           Done done) {
  TargetRequest* r = queue_.take();
  if (!r) return false;
  r->sqe = sqe;
  r->data_len = out.empty() ? in_len : static_cast<uint32_t>(out.size());
  pending_.push_back(Pending{r, out, std::move(done)});
  queue_.need_buffer(*r);
  return true;
}

LoopbackQueue::Pending* LoopbackQueue::find(TargetRequest& r) {
  for (Pending& p : pending_) {
    if (p.r == &r) return &p;
  }
  return nullptr;
}

LoopbackQueue::Done LoopbackQueue::take_pending(TargetRequest& r) {
  Pending* p = find(r);
  if (!p) return nullptr;
  Done done = std::move(p->done);
  *p = std::move(pending_.back());
  pending_.pop_back();
  return done;
}

void LoopbackQueue::buffer_ready(TargetRequest& r) {
  Pending* p = find(r);
  if (!p) return queue_.release(r);
  if (!p->out.empty()) {
    std::memcpy(r.data, p->out.data(), p->out.size());
    r.received = r.data_len;
  }
  queue_.execute(r);
}

void LoopbackQueue::complete(TargetRequest& r) {
  Done done = take_pending(r);
  if (done) done(r.cqe, {r.data, r.cqe.status ? 0u : r.c2h});
  queue_.release(r);
}

}  // namespace blkcopy::nvme
