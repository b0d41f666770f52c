#include <blkcopy/service.h>

namespace blkcopy {

CopyService::~CopyService() = default;

size_t CopyService::queued() const {
  return queues_[0].size() + queues_[1].size() + queues_[2].size();
}

void CopyService::submit(std::vector<CopySegment> sources, Device& dst, uint64_t dst_offset,
                         Priority priority, JobDone done) {
  queues_[static_cast<int>(priority)].push_back(
      Job{std::move(sources), &dst, dst_offset, std::move(done)});
  pump();
}

void CopyService::pump() {
  using Clock = std::chrono::steady_clock;
  while (in_flight_ < opt_.max_in_flight && !rate_timer_.armed()) {
    std::deque<Job>* q = nullptr;
    for (auto& candidate : queues_) {
      if (!candidate.empty()) {
        q = &candidate;
        break;
      }
    }
    if (!q) return;
    const auto now = Clock::now();
    if (opt_.rate_bytes_per_s && budget_at_ > now) {
      // Over the rate: wait until the budget refills, then go on.
      rate_timer_ = loop_.at(budget_at_, [this] { pump(); });
      return;
    }
    Job job = std::move(q->front());
    q->pop_front();
    uint64_t bytes = 0;
    for (const CopySegment& s : job.sources) bytes += s.length;
    if (opt_.rate_bytes_per_s) {
      budget_at_ = std::max(budget_at_, now) +
                   std::chrono::nanoseconds(static_cast<int64_t>(
                       double(bytes) * 1e9 / double(opt_.rate_bytes_per_s)));
    }
    ++in_flight_;
    auto finish = [this, done = std::move(job.done)](CopyResult r) {
      --in_flight_;
      done(std::move(r));
      pump();
    };
    Status s = copy_async(std::move(job.sources), *job.dst, job.dst_offset, opt_.copy, finish);
    if (!s.ok()) {
      CopyResult r;
      r.status = std::move(s);
      r.invalid = true;
      loop_.post([finish, r] { finish(r); });
    }
  }
}

Status CopyService::drain() {
  for (auto& q : queues_) q.clear();
  rate_timer_.cancel();
  return loop_.run_until([this] { return in_flight_ == 0; });
}

}  // namespace blkcopy
