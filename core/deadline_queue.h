// Tasks that run on a loop at their deadlines, with one timer for all of them (armed for the
// earliest). The owner holds the queue: destroying it cancels the timer and drops the tasks that
// have not run. For devices that model latency (mem) or delay requests on purpose (dm flakey):
// many requests waiting cost one timer, not one each.
#pragma once

#include <blkcopy/event_loop.h>

#include <chrono>
#include <cstdint>
#include <queue>
#include <vector>

namespace blkcopy {

class DeadlineQueue {
 public:
  using Clock = std::chrono::steady_clock;
  explicit DeadlineQueue(EventLoop& loop) : loop_(loop) {}
  DeadlineQueue(const DeadlineQueue&) = delete;
  DeadlineQueue& operator=(const DeadlineQueue&) = delete;

  // Runs task on the loop at `deadline`; tasks with the same deadline run in the order given.
  void at(Clock::time_point deadline, EventLoop::Task task) {
    heap_.push(Entry{deadline, seq_++, std::move(task)});
    if (!timer_.armed() || deadline < armed_for_) arm();
  }
  size_t size() const { return heap_.size(); }

 private:
  struct Entry {
    Clock::time_point deadline;
    uint64_t seq;
    EventLoop::Task task;
    bool operator>(const Entry& o) const {
      return deadline != o.deadline ? deadline > o.deadline : seq > o.seq;
    }
  };
  void arm() {
    armed_for_ = heap_.top().deadline;
    timer_ = loop_.at(armed_for_, [this] { fire(); });
  }
  void fire() {
    const auto now = Clock::now();
    while (!heap_.empty() && heap_.top().deadline <= now) {
      EventLoop::Task t = std::move(const_cast<Entry&>(heap_.top()).task);
      heap_.pop();
      t();  // may add tasks (and re-arm); the loop below looks at the heap again
    }
    if (!heap_.empty() && (!timer_.armed() || heap_.top().deadline < armed_for_)) arm();
  }

  EventLoop& loop_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  uint64_t seq_ = 0;
  Clock::time_point armed_for_{};
  Timer timer_;  // last member: cancelled first when the queue goes
};

}  // namespace blkcopy
