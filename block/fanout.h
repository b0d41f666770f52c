// One request made of parts (pieces on children, regions): completes the request once, with the
// first error, after every part has completed, and never inside the submitting call.
#pragma once

#include <blkcopy/device.h>

namespace blkcopy {

class Fanout {
 public:
  // Holds one reference for the submitter until submitted() is called.
  static Fanout* start(EventLoop& loop, Completion done) { return new Fanout(loop, std::move(done)); }

  // A completion for one more part.
  Completion part() {
    ++pending_;
    return [this](Status s) {
      error(std::move(s));
      release();
    };
  }
  void error(Status s) {
    if (!s.ok() && first_.ok()) first_ = std::move(s);
  }
  // Every part is out: the request completes when they have (on the loop, later).
  void submitted() {
    loop_.post([this] { release(); });
  }

 private:
  Fanout(EventLoop& loop, Completion done) : loop_(loop), done_(std::move(done)) {}
  void release() {
    if (--pending_) return;
    auto done = std::move(done_);
    Status s = std::move(first_);
    delete this;
    done(std::move(s));
  }

  EventLoop& loop_;
  Completion done_;
  unsigned pending_ = 1;
  Status first_;
};

}  // namespace blkcopy
