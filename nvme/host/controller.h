// The controller behind nvme-tcp:// devices: one admin queue and its I/O queues to one
// (address, subsystem, host NQN, secrets) on one loop, shared by the namespaces opened there.
// Set-up runs step by step on the loop (TCP connect, ICReq, Connect, DH-HMAC-CHAP,
// Identify, features, I/O queues), each step within connect_timeout; a dropped connection
// reconnects with backoff when asked to.
//
// State (one line a state):
//   up            queues open; I/O goes out
//   reconnecting  the connection dropped; requests wait for the new one
//   dead          it dropped and will not come back: requests fail at once
#pragma once

#include <fmt/format.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nvme/auth/dhchap.h"
#include "nvme/host/host_io.h"
#include "nvme/host/nvme_tcp_device.h"
#include "nvme/host/queue.h"
#include "nvme/namespace.h"
#include "nvme/status.h"

namespace blkcopy::nvme {


class NvmeTcpController {
 public:
  static Result<std::shared_ptr<NvmeTcpController>> open(EventLoop& loop, const NvmeTcpConfig& c);

  // The next I/O queue, round robin.
  HostQueue& io() { return *io_[next_io_++ % io_.size()]; }
  // Sends an I/O command; while reconnecting it waits for the new connection.
  Status submit_io(Sqe sqe, const void* out, void* in, uint32_t len, HostQueue::Done done);
  uint64_t bytes_sent() const {
    uint64_t n = admin_->bytes_sent();
    for (const auto& q : io_) n += q->bytes_sent();
    return n;
  }
  uint64_t bytes_received() const {
    uint64_t n = admin_->bytes_received();
    for (const auto& q : io_) n += q->bytes_received();
    return n;
  }
  const std::string& label() const { return label_; }

  ControllerCaps caps;  // from Identify Controller
  uint32_t max_io = 1 << 20;
  NvmeTcpConfig cfg;
  bool copy = false;
  bool format2 = false;  // cross-namespace copies enabled with Host Behavior Support
  uint16_t cntlid = 0;
  HostIoPool ios;  // before the queues: their commands' contexts outlive them
  HostQueue::Ptr admin_;
  std::vector<HostQueue::Ptr> io_;
  size_t next_io_ = 0;

 private:
  // Set-up (see connect_async below); the sync form runs the loop until it is done.
  void connect_async(std::function<void(Status)> done);
  Status connect_sync();
  void step(HostQueue& q, const char* what, Sqe sqe, const void* out, void* in, uint32_t len,
            bool must_succeed, std::function<void(const Cqe&)> next);
  void connect_queue(HostQueue& q, uint16_t qid, uint16_t id, std::function<void(const Cqe&)> next);
  struct AuthTxn;
  void authenticate(HostQueue& q, uint16_t qid, const Cqe& connected, std::function<void(const Cqe&)> next);
  void auth_reply(HostQueue& q, std::shared_ptr<AuthTxn> t);
  void auth_finish(HostQueue& q, std::shared_ptr<AuthTxn> t);
  std::optional<Status> auth_refused(const auth::Bytes& m, const char* when);
  void enable();
  void identify();
  void queues();
  void open_io();
  QueueOptions queue_options(uint32_t depth) const;  // a queue's, TLS PSK included
  void setup_finished();
  void setup_failed(Status why);
  std::function<void(Status)> setup_done_;
  unsigned granted_ = 1;
  void keep_alive();
  void dropped(const Status& why);
  void try_reconnect();

  struct Pending {
    Sqe sqe;
    const void* out;
    void* in;
    uint32_t len;
    HostQueue::Done done;
  };
  enum class State { up, reconnecting, dead } state_ = State::up;
  unsigned attempt_ = 0;
  Status last_error_;
  std::vector<Pending> pending_;

  EventLoop* loop_ = nullptr;
  std::string label_;
  bool null_group_warned_ = false;  // the null DH group is warned of once per controller
  uint32_t kato_ms_ = 0;
  // Last: cancelled first when the controller goes (then its queues close: none of their
  // callbacks, which hold `this`, runs after that).
  HostQueue::Opening opening_;  // a queue being opened
  Timer keep_alive_timer_;  // the next Keep Alive
  Timer reconnect_timer_;   // the next reconnect attempt
};


uint16_t code_of(const Cqe& cqe);
// An NVMe status as an errno-style Status (nvme::errno_for_status).
Status to_status(const Status& transport, const Cqe& cqe, const std::string& what);

}  // namespace blkcopy::nvme
