// A copy service, like the kernel's dm-kcopyd: a queue of copy jobs with priorities, a bound on
// the jobs in flight and a rate limit, on one event loop. Each job runs through the copy engine,
// so it is offloaded where the devices allow and emulated elsewhere. Stacking targets (clone)
// use it for background work; anything else may.
#pragma once

#include <blkcopy/copy.h>

#include <chrono>
#include <deque>
#include <functional>

namespace blkcopy {

class CopyService {
 public:
  enum class Priority { high, normal, low };
  struct Options {
    unsigned max_in_flight = 4;
    uint64_t rate_bytes_per_s = 0;  // 0 = unlimited
    CopyOptions copy;               // options for every job
  };
  using JobDone = std::function<void(CopyResult)>;

  CopyService(EventLoop& loop, Options options) : loop_(loop), opt_(std::move(options)) {}
  ~CopyService();  // REQUIRES: idle() (drain() first)

  // Queues a job; `done` runs on the loop when it ends (also when it fails validation).
  void submit(std::vector<CopySegment> sources, Device& dst, uint64_t dst_offset,
              Priority priority, JobDone done);

  bool idle() const { return in_flight_ == 0 && queued() == 0 && !rate_timer_.armed(); }
  size_t queued() const;
  unsigned in_flight() const { return in_flight_; }
  // Drops the jobs not started yet (their `done` never runs) and the rate limit's wait, and runs
  // the loop until the jobs in flight have ended.
  Status drain();

 private:
  struct Job {
    std::vector<CopySegment> sources;
    Device* dst;
    uint64_t dst_offset;
    JobDone done;
  };
  void pump();

  EventLoop& loop_;
  Options opt_;
  std::deque<Job> queues_[3];
  unsigned in_flight_ = 0;
  std::chrono::steady_clock::time_point budget_at_{};  // the rate limit's next free moment
  Timer rate_timer_;  // armed while over the rate: pump() again at budget_at_
};

}  // namespace blkcopy
