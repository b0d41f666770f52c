// One NVMe/TCP queue (a TCP connection) seen from the host, on an event loop: the ICReq
// handshake, commands with in-capsule data or R2T/H2CData, C2HData into the caller's buffer,
// digests, and byte counters so the saving of offloaded copies is visible.
//
// State machine of the connection (one line a state):
//   connecting  the TCP connect is in progress on the loop
//   tls         with a TLS PSK: the TLS handshake (never clear text once a key is given)
//   handshake   ICReq sent, waiting for ICResp
//   open        ICResp received; commands may be submitted
//   failed      the socket ended, a PDU was malformed or a time limit passed: every command
//               failed, none accepted
#pragma once

#include <blkcopy/event_loop.h>
#include <blkcopy/status.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <netinet/in.h>

#include "nvme/tcp/framing.h"
#include "nvme/tcp/pdu_buffer.h"
#include "nvme/tcp/send_queue.h"
#include "nvme/tcp/stream.h"
#include "nvme/tcp/tls_session.h"
#include "nvme/spec.h"

namespace blkcopy::nvme {

struct QueueOptions {
  bool header_digest = false;
  bool data_digest = false;
  uint32_t in_capsule = 8192;  // most bytes of data sent inside the command capsule
  uint32_t depth = 128;        // commands outstanding at most (the queue's SQSIZE + 1)
  uint32_t timeout_ms = 30000; // a command older than this fails the queue (0: never)
  uint32_t connect_timeout_ms = 10000;  // TCP connect, TLS and ICReq/ICResp together
  // TLS 1.3 with this PSK (its identity names the host and the subsystem: Controller makes it).
  std::optional<TlsSession::Psk> tls;
  bool kernel_tls = true;  // records to the kernel after the handshake where it takes them
};

class HostQueue final : EventLoop::Orphan {
  struct OpenJob;

 public:
  // Called with the completion entry, or an error when the queue failed first.
  using Done = std::function<void(Status, const Cqe&)>;

  // Ownership: destroying the handle closes the queue. Its socket is shut down and its
  // operations cancelled at once; no callback of it (commands' or on_fail) runs after that, and
  // the queue frees itself once the kernel has let go of its buffers. Safe inside the queue's
  // own callbacks.
  struct Closer {
    void operator()(HostQueue* q) const { q->close(); }
  };
  using Ptr = std::unique_ptr<HostQueue, Closer>;

  // An open_async in progress; destroying (or cancelling) it before it is done means `done`
  // never runs and the half-open queue is closed.
  class Opening {
   public:
    Opening() = default;
    Opening(Opening&&) = default;
    Opening& operator=(Opening&& o) noexcept;
    ~Opening() { cancel(); }
    void cancel();

   private:
    friend class HostQueue;
    explicit Opening(std::shared_ptr<OpenJob> j) : job_(std::move(j)) {}
    std::shared_ptr<OpenJob> job_;
  };

  using Opened = std::function<void(Result<Ptr>)>;
  // Connects on the loop without blocking it (TCP connect, then ICReq/ICResp) within
  // o.connect_timeout_ms. `done` runs later on the loop, never inside the call, with the queue
  // or an error naming the step that failed or ran out of time. `host` is a numeric address
  // or a name (resolved on a helper thread).
  [[nodiscard]] static Opening open_async(EventLoop& loop, const std::string& host, uint16_t port,
                                          const QueueOptions& o, Opened done);
  // Blocking wrapper: runs the loop until open_async is done (set-up paths and tools only).
  static Result<Ptr> open(EventLoop& loop, const std::string& host, uint16_t port,
                          const QueueOptions& o);

  // Sends a command. `out` (host to controller) or `in` (controller to host) of `len` bytes,
  // valid until `done` runs. Fails at once only when the queue has failed.
  Status submit(Sqe sqe, const void* out, void* in, uint32_t len, Done done);

  // Blocking wrapper: submits and runs the loop until the command ends (set-up paths only).
  Result<Cqe> run_sync(Sqe sqe, const void* out, void* in, uint32_t len);

  bool failed() const { return failed_; }
  // Fails the queue now (its commands fail with `why`) and ends the socket.
  void abort(Status why) { fail(std::move(why)); }
  // The time limit for each command from now on (0: none).
  void set_timeout(uint32_t ms) {
    opt_.timeout_ms = ms;
    watchdog();
  }
  // Called once when the queue fails (after its commands were failed), on the loop.
  std::function<void(const Status&)> on_fail;
  uint64_t bytes_sent() const { return sent_; }
  uint64_t bytes_received() const { return received_; }
  size_t outstanding() const { return cmds_.size(); }

 private:
  struct Cmd {
    Sqe sqe;
    const uint8_t* out;
    uint8_t* in;
    uint32_t len;
    Done done;
    std::chrono::steady_clock::time_point started{};
    uint32_t received = 0;  // C2HData bytes so far
    // Writes: the caller's `out` is read by the socket until every PDU pointing into it has
    // left, so the command may not end before (a target that answers early is lying).
    uint32_t r2t_next = 0;  // R2Ts must ask for the data in order: the next offset
    uint16_t unsent = 0;    // PDUs with this command's data queued or in the send in flight
    bool in_capsule = false;
  };
  // Commands in flight by CID, a slot per queue entry: starting and ending a command allocates
  // nothing. The CID is the slot's index + 1; freed CIDs are reused oldest first, so a late
  // duplicate answer from a broken target is unlikely to meet a new command of the same CID.
  class CmdTable {
   public:
    explicit CmdTable(size_t n) : slots_(n), used_(n, false) {
      for (size_t i = 1; i <= n; ++i) free_.push_back(static_cast<uint16_t>(i));
    }
    bool full() const { return free_.empty(); }
    bool empty() const { return free_.size() == slots_.size(); }
    size_t size() const { return slots_.size() - free_.size(); }
    uint16_t add(Cmd c) {
      const uint16_t cid = free_.front();
      free_.pop_front();
      c.sqe.cid = cid;
      slots_[cid - 1] = std::move(c);
      used_[cid - 1] = true;
      return cid;
    }
    Cmd* find(uint16_t cid) {
      return cid && cid <= slots_.size() && used_[cid - 1] ? &slots_[cid - 1] : nullptr;
    }
    Cmd take(uint16_t cid) {  // cid must be in use
      used_[cid - 1] = false;
      free_.push_back(cid);
      return std::move(slots_[cid - 1]);
    }
    template <class F>
    void for_each(F f) const {
      for (size_t i = 0; i < slots_.size(); ++i) {
        if (used_[i]) f(slots_[i]);
      }
    }

   private:
    std::vector<Cmd> slots_;
    std::vector<bool> used_;
    std::deque<uint16_t> free_;
  };
  HostQueue(EventLoop& loop, int fd, const QueueOptions& o)
      : loop_(loop), fd_(fd), stream_(loop, fd), opt_(o) {}
  ~HostQueue() override;
  void close();
  // Held while the queue runs code from the loop (a completion, a task, a timer): a close()
  // inside it frees the queue only once the outermost one ends.
  class Entry {
   public:
    explicit Entry(HostQueue& q) : q_(q) { ++q_.entered_; }
    ~Entry() {
      if (--q_.entered_ == 0) q_.free_if_idle();
    }

   private:
    HostQueue& q_;
  };
  void free_if_idle();
  enum class State { connecting, tls, handshake, open, failed };
  void connected();  // TLS first when there is a key, then the ICReq
  void handshake();
  void opened(Status s);  // the open_async step ends: hand the queue (or the error) over
  void receive();
  void on_pdu();
  void fail(Status s);
  void end_failed();  // fails the commands once no send in flight reads their buffers
  // urgent: a command capsule, sent ahead of H2CData PDUs that are only waiting. `cid`: the
  // command whose data the PDU carries (0: none), counted in its `unsent` until it has left.
  void send(const tcp::Header& head, const uint8_t* data, uint32_t len, bool urgent = false,
            uint16_t cid = 0);
  void pump_send();  // sends at the end of this loop turn
  void flush();
  tcp::Digests digests() const { return {opt_.header_digest, opt_.data_digest}; }

  EventLoop& loop_;
  int fd_;
  Stream stream_;
  QueueOptions opt_;
  bool ic_done_ = false, failed_ = false, recv_pending_ = false;
  bool connect_pending_ = false;
  bool flush_posted_ = false;
  State state_ = State::connecting;
  sockaddr_storage peer_{};
  uint32_t peer_len_ = 0;
  std::string where_;  // "HOST:PORT" for messages
  std::function<void(Status)> on_open_;  // set while open_async is in progress
  uint32_t maxh2c_ = 4096;  // MAXH2CDATA from ICResp
  PduBuffer rbuf_{64 * 1024};  // grows to the longest PDU
  const uint8_t* p_ = nullptr;  // the PDU being handled, inside rbuf_
  void start(Cmd c);
  void watchdog();
  Timer watchdog_;  // at the oldest command's deadline while commands are outstanding
  CmdTable cmds_{std::clamp<uint32_t>(opt_.depth, 1, 65535)};
  std::deque<Cmd> waiting_;  // beyond the queue depth: sent as completions free entries
  SendQueue<uint16_t> sendq_;  // owner: the CID whose data a PDU carries
  Status fail_status_;          // why the queue failed, for end_failed()
  bool fail_pending_ = false;   // failed, commands not yet ended (a send was in flight)
  uint64_t sent_ = 0, received_ = 0;
  bool closing_ = false;  // closed by its owner: frees itself when idle
  unsigned entered_ = 0;  // Entry depth
  OpId connect_op_{};
};

}  // namespace blkcopy::nvme
