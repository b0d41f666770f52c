// An in-process transport: commands go straight to a TargetQueue on the target's own loop, with
// no socket and no PDUs (nvmet's loop transport). Tests drive the controller through it, and so
// does the controller fuzzer, thousands of times faster than through a socket.
#pragma once

#include <blkcopy/target.h>

#include <functional>
#include <span>
#include <vector>

#include "nvme/target/queue.h"

namespace blkcopy::nvme {

class LoopbackQueue final : public QueueTransport {
 public:
  // A queue on `target`'s own loop (Target::create's). The target must outlive it.
  explicit LoopbackQueue(Target& target);
  ~LoopbackQueue();  // waits for nothing: REQUIRES idle()

  // cqe, and the data that came back (reads, Identify...).
  using Done = std::function<void(const Cqe& cqe, std::span<const uint8_t> data)>;
  // Submits a command with `out` as the host's data (to the controller) or room for `in_len`
  // bytes back; done runs on the loop. False when the queue holds no more (its depth reached).
  // `out` must stay valid until done runs.
  bool submit(const Sqe& sqe, std::span<const uint8_t> out, uint32_t in_len, Done done);
  // The host goes away: commands still waiting are dropped, the controller let go.
  void close() { queue_.close(); }
  bool idle() const { return !queue_.busy() && pending_.empty(); }
  size_t outstanding() const { return pending_.size(); }
  TargetQueue& queue() { return queue_; }

  void complete(TargetRequest& r) override;
  void buffer_ready(TargetRequest& r) override;
  void disconnect(const std::string& why) override { disconnected_ = why; }
  const std::string& local_address() const override { return address_; }
  const std::string& peer_address() const override { return address_; }
  void dropped(TargetRequest& r) override { take_pending(r); }
  const std::string& disconnected() const { return disconnected_; }

 private:
  struct Pending {
    TargetRequest* r;
    std::span<const uint8_t> out;
    Done done;
  };
  Pending* find(TargetRequest& r);
  Done take_pending(TargetRequest& r);

  std::string address_ = "127.0.0.1";
  std::string disconnected_;
  std::vector<Pending> pending_;  // a few at a time: searched, no allocation per command
  TargetQueue queue_;
};

}  // namespace blkcopy::nvme
