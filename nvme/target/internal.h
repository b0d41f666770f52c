// The target's inside, shared by its files (not a public header): subsystems, controllers,
// connections and the target itself.
//   target.cc      set-up, listeners, accept, the tick, discovery log
//   connection.cc  a connection's transport: PDUs in and out, capsules, R2T/H2CData, C2HData
//   commands.cc    fabrics (Connect, properties, authentication) and admin commands
//   io.cc          I/O commands: read, write, write zeroes, flush, deallocate, Copy
//
// Connection state machine (one line a state):
//   wait ICReq     the first PDU must be ICReq; anything else ends the connection
//   ready          PDUs are CapsuleCmd, H2CData (for a write that got an R2T) or H2CTermReq;
//                  until Connect (and DH-HMAC-CHAP where the host has keys) only those commands
//   closing        the socket is shut; the connection is freed when nothing is in flight
#pragma once

#include <blkcopy/target.h>

#include <arpa/inet.h>
#include <blkcopy/copy.h>
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <chrono>
#include <cstring>
#include <deque>
#include <set>

#include "core/checked.h"
#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/copy_ranges.h"
#include "nvme/tcp/framing.h"
#include "nvme/tcp/pdu_buffer.h"
#include "nvme/tcp/send_queue.h"
#include "nvme/spec.h"
#include "nvme/target/auth.h"


namespace blkcopy::nvme {

inline constexpr uint32_t kMaxH2CData = 128 * 1024;
inline constexpr uint32_t kInCapsule = 8192;       // in-capsule data on I/O queues (IOCCSZ)
inline constexpr uint32_t kMaxTransfer = 1 << 20;  // MDTS 8 with 4 KiB pages

// Page-aligned command buffers of at least `len` bytes (`cap` says how many), recycled per
// thread: a 128 KiB read would otherwise map, fault in and unmap fresh pages every time (glibc
// maps blocks that large anew). Whoever fills a buffer overwrites what it sends.
uint8_t* take_buffer(uint32_t len, uint32_t& cap);
void give_buffer(uint8_t* p, uint32_t cap);
inline constexpr uint32_t kMaxPdu = 8 + 72 + kMaxH2CData + 16 + kInCapsule;
inline constexpr uint16_t kMaxQueueSize = 128;

// A namespace: a blkcopy device with the Identify values the host sees.
struct Namespace {
  uint32_t nsid;
  std::unique_ptr<Device> dev;
  NamespaceIdentity id;
  uint32_t lbs;
  uint8_t uuid[16] = {};
  bool has_uuid = false;
};


// Shared by the connections of its queues, which may live on different loops: fields that
// change are atomic; `io_queues` is under TargetImpl::mu_. Connections hold it by shared_ptr,
// so it outlives the last of them even when its ID is released.
struct Controller {
  uint16_t cntlid = 0;
  struct Subsystem* subsys = nullptr;  // nullptr: the discovery controller
  std::string hostnqn;
  std::atomic<uint32_t> cc{0}, csts{0};
  std::atomic<uint32_t> kato_ms{0};
  std::atomic<uint16_t> queues{1};  // I/O queues granted (Set Features Number of Queues)
  std::atomic<bool> format2{false};  // Host Behavior Support: copy format 2 enabled
  // Features a host may read back after setting them: Arbitration (01h), Temperature Threshold
  // (04h: the composite's over and under thresholds, kelvin) and Error Recovery (05h).
  std::atomic<uint32_t> arbitration{0}, temp_over{343}, temp_under{0}, error_recovery{0};
  std::atomic<int64_t> last_seen{0};  // steady_clock nanoseconds
  std::set<uint16_t> io_queues;       // connected I/O queue IDs, under mu_
  std::atomic<bool> gone{false};      // the admin queue closed: its I/O queues close too
  void seen() {
    last_seen = std::chrono::steady_clock::now().time_since_epoch().count();
  }
};

// The controllers of one subsystem (or of discovery) by ID, under TargetImpl::mu_. IDs come from
// [min, max] and are never handed out again while their controller lives: a new host cannot
// take over another's queues by guessing or exhausting IDs.
struct ControllerIds {
  uint16_t min = 1, max = 0xFFEF;
  uint16_t next = 1;
  std::map<uint16_t, std::shared_ptr<Controller>> live;

  // A free ID, searched from after the last one handed out; nullopt when all are live.
  std::optional<uint16_t> take() {
    const uint32_t span = uint32_t(max) - min + 1;
    if (live.size() >= span) return std::nullopt;
    for (uint32_t i = 0; i < span; ++i) {
      const uint16_t id = static_cast<uint16_t>(min + (uint32_t(next) - min + i) % span);
      if (!live.count(id)) {
        next = static_cast<uint16_t>(min + (uint32_t(id) - min + 1) % span);
        return id;
      }
    }
    return std::nullopt;
  }
};

struct Subsystem {
  SubsystemConfig cfg;
  std::map<uint32_t, Namespace> ns;
  std::string serial;
  ControllerIds ids;
  bool allows(const std::string& host) const {
    return cfg.allow_any_host ||
           std::find(cfg.allowed_hosts.begin(), cfg.allowed_hosts.end(), host) !=
               cfg.allowed_hosts.end();
  }
};

struct AtomicStats {
  std::atomic<uint64_t> connections{0}, commands{0}, read_bytes{0}, written_bytes{0};
  std::atomic<uint64_t> copies{0}, copy_offloaded_bytes{0}, copy_emulated_bytes{0}, errors{0};
  std::atomic<uint64_t> refused{0}, stalled{0};
};

inline uint16_t st(uint16_t code, bool dnr = true) { return cqe_status(code, dnr); }

using Clock = std::chrono::steady_clock;


class TargetImpl;

class Connection {
 public:
  Connection(TargetImpl& t, EventLoop& home, EventLoop& loop, int fd, std::string local_addr)
      : t_(t), home_(home), loop_(loop), fd_(fd), local_addr_(std::move(local_addr)),
        opened_(Clock::now()) {}
  EventLoop& loop() const { return loop_; }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);  // the target went away: the host sees the connection end
  }
  // Ends the socket so that the reads and sends in flight on it end too (before the buffers
  // they use go away with the connection).
  void abort() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
  }
  // Nothing in flight that still points into the connection: no socket operation and no
  // request on a device.
  bool idle() const {
    return !recv_pending_ && !sendq_.pending() && !flush_posted_ && !in_flight_;
  }
  void start() { receive(); }
  bool closing() const { return closing_; }
  bool finished() const { return fd_ < 0; }
  Controller* controller() const { return ctrl_.get(); }
  void close(const std::string& why);
  std::function<void()> on_finished;  // runs (on its loop) once the socket is closed
  // Why a peer that stalls must go: no ICReq or no Connect in time, or a PDU (or the data an
  // R2T asked for) started and not finished in time. Empty while it is within the limits.
  std::string stalled(Clock::time_point now, const TargetLimits& l) const;
  // A closing connection whose peer does not take its last PDUs is cut off after the PDU time
  // limit.
  void cut_if_stuck(Clock::time_point now, const TargetLimits& l) {
    if (closing_ && fd_ >= 0 && now - closing_since_ > std::chrono::milliseconds(l.pdu_ms)) {
      shutdown(fd_, SHUT_RDWR);
    }
  }

 private:
  struct Command {
    Sqe sqe;
    Clock::time_point r2t_at{};  // when the data was asked for
    uint8_t* data = nullptr;  // page-aligned, data_len bytes (data_cap allocated)
    uint32_t data_len = 0, data_cap = 0;
    uint32_t received = 0;
    Cqe cqe{};
    std::vector<CopySegment> copy_src;
    std::vector<uint32_t> range_bytes;  // per copy range, for DW0 on early stop
    ~Command() { give_buffer(data, data_cap); }
  };

  void receive();
  void on_pdu();
  void on_icreq();
  void on_capsule();
  void on_h2cdata();
  void terminate(uint16_t fes, uint32_t fei);
  // Queues a PDU: a header, optional data (with a digest when negotiated), and for a
  // completion the command it ends (kept until the PDU has left).
  // An urgent PDU (an R2T) goes ahead of those only waiting (SendQueue::push).
  void send(std::vector<uint8_t> head, const uint8_t* data = nullptr, uint32_t len = 0,
            bool data_digest = false, std::unique_ptr<Command> done = nullptr, bool urgent = false);
  void pump_send();  // sends at the end of this loop turn
  void flush();
  void execute(std::unique_ptr<Command> c);
  void complete(std::unique_ptr<Command> c, uint16_t status, uint32_t dw0 = 0);
  void send_data(std::unique_ptr<Command> c);
  bool alloc_data(Command& c, uint32_t len);
  void admin(std::unique_ptr<Command> c);
  void identify(std::unique_ptr<Command> c);
  void get_log_page(std::unique_ptr<Command> c);
  void features(std::unique_ptr<Command> c);
  void keep_alive(std::unique_ptr<Command> c);
  void async_event(std::unique_ptr<Command> c);
  void abort_command(std::unique_ptr<Command> c);
  void read_write(std::unique_ptr<Command> c, Namespace& ns);
  // The commands served, as data: dispatch and the Commands Supported and Effects log both read
  // these tables (commands.cc, io.cc).
  static constexpr uint32_t kCsupp = 1u << 0, kLbcc = 1u << 1;
  struct AdminOp {
    uint8_t opcode;
    void (Connection::*run)(std::unique_ptr<Command>);
  };
  struct IoOp {
    uint8_t opcode;
    uint32_t effects;
    void (Connection::*run)(std::unique_ptr<Command>, Namespace&);
  };
  static const AdminOp kAdminOps[7];
  static const IoOp kIoOps[6];
  void fabrics(std::unique_ptr<Command> c);
  void connect(std::unique_ptr<Command> c);
  void authenticate(std::unique_ptr<Command> c, bool send);
  void io(std::unique_ptr<Command> c);
  void copy(std::unique_ptr<Command> c, Namespace& ns);
  void deallocate(std::unique_ptr<Command> c, Namespace& ns);
  void maybe_free();
  // Runs fn on the loop that owns the devices; back() wraps a callback so that it runs on this
  // connection's loop again.
  void at_home(std::function<void()> fn);
  // Hands a command to the devices: it counts as in flight, and the callback returned brings
  // the device's result back to this loop, where f(command, result) runs, unless the
  // connection is closing by then (the command is dropped). The command lives until then.
  template <class Arg, class F>
  std::function<void(Arg)> to_devices(std::unique_ptr<Command> c, F f) {
    ++in_flight_;
    Command* raw = c.release();
    return back<Arg>([this, raw, f](Arg a) {
      --in_flight_;
      std::unique_ptr<Command> cmd(raw);
      if (closing_) return maybe_free();
      f(std::move(cmd), a);
    });
  }
  template <class Arg>
  std::function<void(Arg)> back(std::function<void(Arg)> f) {
    if (&loop_ == &home_) return f;
    EventLoop* here = &loop_;
    return [here, f](Arg a) { here->post_remote([f, a] { f(a); }); };
  }

  TargetImpl& t_;
  EventLoop& home_;  // where the devices live
  EventLoop& loop_;  // where this connection lives
  int fd_;
  bool hdgst_ = false, ddgst_ = false, ic_done_ = false, closing_ = false;
  tcp::Digests digests() const { return {hdgst_, ddgst_}; }
  std::string local_addr_;  // the address the host connected to (discovery log entries)
  Clock::time_point opened_, closing_since_;
  std::optional<Clock::time_point> partial_since_;  // a PDU begun and not yet complete
  std::shared_ptr<Controller> ctrl_;
  uint16_t qid_ = 0;
  // DH-HMAC-CHAP for a host with keys: until it succeeds, only Connect and the
  // authentication commands are served on this queue.
  std::unique_ptr<AuthSession> auth_;
  bool authenticated_ = true;
  bool auth_failure_logged_ = false;
  PduBuffer rbuf_{256};  // enough for the ICReq; grows after it
  const uint8_t* p_ = nullptr; // the PDU being handled, inside rbuf_
  size_t p_len_ = 0;           // bytes from p_ to the end of what was read
  bool recv_pending_ = false;
  bool flush_posted_ = false;      // a flush() task is posted on the loop
  bool sq_flow_disabled_ = false;  // Connect's CATTR: reads may end with C2HData SUCCESS
  std::map<uint16_t, std::unique_ptr<Command>> awaiting_data_;  // by TTAG (= CID)
  unsigned in_flight_ = 0;  // commands executing on devices
  unsigned outstanding_ = 0;   // commands received and not yet completed
  unsigned queue_depth_ = 1;   // SQSIZE + 1 once connected: more outstanding ends the connection
  // PDUs waiting to go out. A completion keeps its command (and the data a C2HData PDU ahead
  // of it points into) until it has left: until then the command counts as outstanding, so a
  // host that stops reading cannot make the target queue more than its queue depth.
  SendQueue<std::unique_ptr<Command>> sendq_;
  std::vector<std::unique_ptr<Command>> aers_;  // held Async Event Requests
};

class TargetImpl final : public Target {
 public:
  TargetImpl(EventLoop& loop, TargetConfig cfg) : home_(loop), cfg_(std::move(cfg)) {}
  ~TargetImpl() override;

  Status init();
  Status start() override;
  TargetStats stats() const override;
  std::vector<uint16_t> bound_ports() const override { return bound_; }
  void serve_socket(int fd) override;

  EventLoop& home() { return home_; }
  AtomicStats& mut_stats() { return stats_; }
  Subsystem* subsystem(const std::string& nqn) {
    auto it = subsystems_.find(nqn);
    return it == subsystems_.end() ? nullptr : &it->second;
  }
  // A new controller for `host` (on the admin queue's Connect); nullptr when every controller
  // ID of the subsystem is in use.
  std::shared_ptr<Controller> new_controller(Subsystem* s, const std::string& host) {
    std::lock_guard lock(mu_);
    ControllerIds& ids = s ? s->ids : discovery_ids_;
    auto id = ids.take();
    if (!id) return nullptr;
    auto c = std::make_shared<Controller>();
    c->cntlid = *id;
    c->subsys = s;
    c->hostnqn = host;
    c->queues = s ? s->cfg.qid_max : 0;
    c->seen();
    ids.live.emplace(*id, c);
    return c;
  }
  enum class Join { ok, no_controller, bad_qid, duplicate_qid };
  // Adds I/O queue `qid` to an existing controller of `s` that belongs to `host`.
  Join join_controller(uint16_t id, Subsystem* s, const std::string& host, uint16_t qid,
                       std::shared_ptr<Controller>& out) {
    std::lock_guard lock(mu_);
    ControllerIds& ids = s ? s->ids : discovery_ids_;
    auto it = ids.live.find(id);
    if (it == ids.live.end() || it->second->hostnqn != host) return Join::no_controller;
    Controller& c = *it->second;
    if (qid > c.queues) return Join::bad_qid;
    if (!c.io_queues.insert(qid).second) return Join::duplicate_qid;
    out = it->second;
    return Join::ok;
  }
  // A connection lets go of its controller: an I/O queue frees its ID; the admin queue ends
  // the controller (its ID may be handed out again once no connection holds it).
  void drop_controller(const std::shared_ptr<Controller>& c, uint16_t qid) {
    if (!c) return;
    std::lock_guard lock(mu_);
    if (qid) {
      c->io_queues.erase(qid);
      return;
    }
    c->gone = true;
    ControllerIds& ids = c->subsys ? c->subsys->ids : discovery_ids_;
    auto it = ids.live.find(c->cntlid);
    if (it != ids.live.end() && it->second == c) ids.live.erase(it);
  }
  const TargetLimits& limits() const { return cfg_.limits; }
  // The keys a host must authenticate with, or nullptr when it need not.
  const HostKeys* keys_for(const std::string& hostnqn) const {
    auto it = keys_.find(hostnqn);
    return it == keys_.end() ? nullptr : &it->second;
  }
  // Connections open now, on all loops.
  std::atomic<unsigned> open_connections{0};
  // The discovery log page for `host`; `local_addr` is the address its connection reached,
  // reported for ports that listen on every address.
  std::vector<uint8_t> discovery_log(const std::string& host, const std::string& local_addr) const;

 private:
  // One event loop and the connections that live on it.
  struct Worker {
    EventLoop* loop = nullptr;
    std::unique_ptr<EventLoop> owned;  // null for the caller's loop
    std::thread thread;
    std::vector<std::unique_ptr<Connection>> conns;  // touched on this loop only
    Timer tick;  // the next tick on this loop
  };
  void accept_on(int fd);
  void accept_later(int fd, std::chrono::milliseconds wait);
  void log_refusal(const std::string& what);
  void adopt(Worker& w, int fd);
  void tick(Worker& w);
  void reap(Worker& w);  // frees the connections of w that have ended
  void close_all(Worker& w);

  EventLoop& home_;
  TargetConfig cfg_;
  std::map<std::string, Subsystem> subsystems_;  // read-only once started
  std::map<std::string, HostKeys> keys_;         // by host NQN; read-only once started
  std::mutex mu_;
  ControllerIds discovery_ids_;  // controllers of the discovery subsystem
  std::vector<int> listen_fds_;
  std::vector<uint16_t> bound_;
  std::vector<std::unique_ptr<Worker>> workers_;  // [0]: the caller's loop
  size_t next_worker_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<unsigned> workers_done_{0};  // threads whose connections are all closed
  std::chrono::milliseconds accept_backoff_{0};
  std::vector<Timer> accept_timers_;  // accepts retried after running out of descriptors
  Clock::time_point last_refusal_log_{};
  AtomicStats stats_;
};

}  // namespace blkcopy::nvme
