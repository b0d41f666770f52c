// One queue of a controller, as the controller sees it (nvmet's nvmet_sq): who the host is once
// it has connected, its requests, and the memory they may take. Transport-neutral: a transport
// (TCP, or the in-process loopback of tests and fuzzing) hands it requests and sends what it
// answers. Commands run from the opcode table (ops.h); their handlers live in fabrics.cc,
// admin.cc, io.cc and copy.cc.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/budget.h"
#include "nvme/target/auth.h"
#include "nvme/target/auth_gate.h"
#include "nvme/target/request.h"
#include "nvme/target/subsystem.h"

namespace blkcopy::nvme {

class TargetImpl;

// What a queue needs of the transport that carries it. Every call is on the queue's loop.
struct Port;

class QueueTransport {
 public:
  // The controller is done with r (status in r.cqe): send r.c2h bytes of r.data (on success),
  // then the completion, and hand r back with TargetQueue::release() once that has left.
  virtual void complete(TargetRequest& r) = 0;
  // r's data buffer is there (r.data): move the host's data into it (R2T), or execute r.
  virtual void buffer_ready(TargetRequest& r) = 0;
  // The controller ends the queue (its admin queue went away, authentication failed for good).
  virtual void disconnect(const std::string& why) = 0;
  // The address the host reached (discovery log entries of ports that listen everywhere).
  virtual const std::string& local_address() const = 0;
  // The host's address (IP without port), for authentication's back-off and the log.
  virtual const std::string& peer_address() const = 0;
  // The host and subsystem the TLS PSK of the connection names, or nullptr without TLS: such
  // a queue connects as that host to that subsystem only.
  virtual const auth::TlsIdentity* tls_identity() const { return nullptr; }
  // The port the connection came through, or nullptr (served directly: every subsystem).
  virtual const std::weak_ptr<Port>* came_through() const { return nullptr; }
  // close() let r go without an answer (it waited for room, or was a held AER).
  virtual void dropped(TargetRequest&) {}

 protected:
  ~QueueTransport() = default;
};

// What Connect and authentication establish on a queue.
struct QueueSession {
  std::shared_ptr<Controller> ctrl;
  uint16_t qid = 0;
  unsigned depth = 1;             // SQSIZE + 1 once connected; only Connect before
  bool sq_flow_disabled = false;  // Connect's CATTR: reads may end with C2HData SUCCESS
  // DH-HMAC-CHAP for a host with keys: until it succeeds only Connect and the authentication
  // commands are served on this queue.
  std::unique_ptr<AuthSession> auth;
  bool authenticated = true;
  unsigned auth_failures = 0;  // failed transactions seen (logged) on this queue
  AuthGate::Ticket handshake;  // the handshake in progress, counted by the target's AuthGate
  bool auth_refused = false;   // the last failure was the gate's refusal, not a wrong answer
  bool log_refusal = false;    // ... and worth a log line
  bool qid_claimed = false;    // an I/O queue holds its queue ID in the controller
  std::vector<TargetRequest*> aers;  // held Asynchronous Event Requests, oldest first
};

class TargetQueue {
 public:
  TargetQueue(TargetImpl& target, unsigned worker, EventLoop& loop, QueueTransport& transport);
  ~TargetQueue();  // REQUIRES: !busy()
  TargetQueue(const TargetQueue&) = delete;
  TargetQueue& operator=(const TargetQueue&) = delete;

  // A request for a new command, or nullptr when the host has more outstanding than its queue
  // holds (a protocol error: the transport ends the connection).
  TargetRequest* take();
  // The answer has left (or the connection is gone): the buffer and the entry are free again.
  void release(TargetRequest& r);
  unsigned outstanding() const { return outstanding_; }

  // r needs a data buffer of r.data_len bytes from the data budget: transport.buffer_ready(r)
  // runs now or, when the budget has no room, once it has (the request waits; it never fails).
  void need_buffer(TargetRequest& r);
  // Data that came inside the capsule: copied into a buffer counted in the budget, at once
  // (it has been received already). False when no memory could be had.
  bool copy_in(TargetRequest& r, const uint8_t* p);
  // Bytes of in-capsule data its requests hold, and what long Copies decoded it into (the
  // transport stops reading above a bound).
  uint64_t in_capsule_held() const { return in_capsule_held_; }
  // r keeps `bytes` of memory that came from the host's capsule in another form (a long Copy's
  // decoded range list): counted as in-capsule data (and in the data budget) until released.
  void hold(TargetRequest& r, uint32_t bytes);
  // The command has read its data (a Copy's ranges are decoded): the buffer goes back now, not
  // when the answer has left, so that a Copy waiting for the copy budget holds no data buffer.
  void drop_data(TargetRequest& r);

  // Runs r; it ends in complete() (now or when its device answers).
  void execute(TargetRequest& r);
  // Ends r with `status` (a CQE status field, 0 for success) and DW0.
  void complete(TargetRequest& r, uint16_t status, uint32_t dw0 = 0);

  // Device work in flight: counted so that the transport waits for it before freeing the queue.
  void device_started() { ++on_devices_; }
  void device_ended() { --on_devices_; }
  // Requests on devices or waiting for budget: the queue must not be freed yet.
  bool busy() const { return on_devices_ > 0 || waiting_ > 0; }
  // The transport is closing: waits for budget are cancelled (their requests released), held
  // Async Event Requests let go, the controller dropped.
  void close();
  // Why a host that stalls must go: no Connect, or no authentication, in time; empty otherwise.
  std::string stalled(std::chrono::steady_clock::time_point opened,
                      std::chrono::steady_clock::time_point now) const;

  TargetImpl& target() const { return target_; }
  unsigned worker() const { return worker_; }
  EventLoop& loop() const { return loop_; }
  QueueTransport& transport() const { return transport_; }
  Account& copy_account() { return copy_account_; }
  bool closing() const { return closing_; }
  // Set by close(): Copies still running stop at their next chunk (the host is gone).
  const std::atomic<bool>& cancelled() const { return cancelled_; }

  QueueSession session;

 private:
  friend struct TargetRequest;
  void buffer_granted(TargetRequest& r);

  TargetImpl& target_;
  const unsigned worker_;
  EventLoop& loop_;
  QueueTransport& transport_;
  Account data_account_, copy_account_;
  std::vector<std::unique_ptr<TargetRequest>> requests_;  // every request made; pooled
  TargetRequest* free_ = nullptr;
  unsigned outstanding_ = 0;  // taken and not released
  unsigned on_devices_ = 0;
  unsigned waiting_ = 0;      // for the data budget
  uint64_t in_capsule_held_ = 0;
  bool closing_ = false;
  std::atomic<bool> cancelled_{false};
};

// Every command handler: runs r and ends in r.queue->complete().
using Handler = void (*)(TargetRequest& r);

}  // namespace blkcopy::nvme
