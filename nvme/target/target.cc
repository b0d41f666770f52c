// The target: listeners, subsystems, controllers and connections on one event loop.
//
// Connection state machine (one line a state):
//   kWaitIc     the first PDU must be ICReq; anything else ends the connection
//   kReady      PDUs are CapsuleCmd, H2CData (for a write that got an R2T) or H2CTermReq
//   kClosing    the socket is shut; the connection is freed when nothing is in flight
#include "nvme/target/target.h"

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
#include "nvme/pdu_buffer.h"
#include "nvme/spec.h"
#include "nvme/target/auth.h"

namespace blkcopy::nvme {
namespace {

constexpr uint32_t kMaxH2CData = 128 * 1024;
constexpr uint32_t kInCapsule = 8192;       // in-capsule data on I/O queues (IOCCSZ)
constexpr uint32_t kMaxTransfer = 1 << 20;  // MDTS 8 with 4 KiB pages
constexpr uint32_t kMaxPdu = 8 + 72 + kMaxH2CData + 16 + kInCapsule;
constexpr uint16_t kMaxQueueSize = 128;

// A namespace: a blkcopy device with the Identify values the host sees.
struct Namespace {
  uint32_t nsid;
  std::unique_ptr<Device> dev;
  NamespaceIdentity id;
  uint32_t lbs;
  uint8_t uuid[16] = {};
  bool has_uuid = false;
};

// 32 hex digits, dashes allowed, into 16 bytes.
bool parse_hex16(std::string hex, uint8_t out[16]) {
  std::erase(hex, '-');
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return false;
  }
  for (int i = 0; i < 16; ++i) out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return true;
}

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

uint16_t st(uint16_t code, bool dnr = true) { return cqe_status(code, dnr); }

using Clock = std::chrono::steady_clock;

}  // namespace

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
  bool idle() const { return !recv_pending_ && !send_pending_ && !in_flight_; }
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
    uint8_t* data = nullptr;  // page-aligned, data_len bytes
    uint32_t data_len = 0;
    uint32_t received = 0;
    Cqe cqe{};
    std::vector<CopySegment> copy_src;
    std::vector<uint32_t> range_bytes;  // per copy range, for DW0 on early stop
    ~Command() { free(data); }
  };

  void receive();
  void on_pdu();
  void on_icreq();
  void on_capsule();
  void on_h2cdata();
  void terminate(uint16_t fes, uint32_t fei);
  // Queues a PDU: a header, optional data (with a digest when negotiated), and for a
  // completion the command it ends (kept until the PDU has left).
  void send(std::vector<uint8_t> head, const uint8_t* data = nullptr, uint32_t len = 0,
            bool data_digest = false, std::unique_ptr<Command> done = nullptr);
  void pump_send();
  void execute(std::unique_ptr<Command> c);
  void complete(std::unique_ptr<Command> c, uint16_t status, uint32_t dw0 = 0);
  void send_data(std::unique_ptr<Command> c);
  bool alloc_data(Command& c, uint32_t len);
  void admin(std::unique_ptr<Command> c);
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
  std::map<uint16_t, std::unique_ptr<Command>> awaiting_data_;  // by TTAG (= CID)
  unsigned in_flight_ = 0;  // commands executing on devices
  unsigned outstanding_ = 0;   // commands received and not yet completed
  unsigned queue_depth_ = 1;   // SQSIZE + 1 once connected: more outstanding ends the connection
  // A PDU waiting to go out. A completion keeps its command (and the data a C2HData PDU ahead
  // of it points into) until it has left: until then the command counts as outstanding, so a
  // host that stops reading cannot make the target queue more than its queue depth.
  struct Out {
    std::vector<uint8_t> head;
    const uint8_t* data = nullptr;
    uint32_t len = 0;
    uint32_t ddgst = 0;
    bool has_ddgst = false;
    std::unique_ptr<Command> done;  // set on a command's completion
  };
  std::deque<Out> sendq_;
  bool send_pending_ = false;
  msghdr msg_{};
  iovec iov_[3]{};
  size_t sent_ = 0;
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
  Clock::time_point last_refusal_log_{};
  AtomicStats stats_;
};

// ---------------------------------------------------------------- set-up

Status TargetImpl::init() {
  if (Status v = validate(cfg_); !v.ok()) return v;
  auto keys = host_keys(cfg_);
  if (!keys) return keys.error();
  keys_ = std::move(*keys);
  uint32_t serial = 1;
  for (const SubsystemConfig& sc : cfg_.subsystems) {
    Subsystem& s = subsystems_[sc.nqn];
    s.cfg = sc;
    s.serial = sc.serial.empty() ? fmt::format("blkcopy{:08x}", serial) : sc.serial;
    ++serial;
    s.ids.min = s.ids.next = sc.cntlid_min;
    s.ids.max = sc.cntlid_max;
    for (const NamespaceConfig& nc : sc.namespaces) {
      if (!nc.enable) continue;
      if (nc.nsid == 0 || s.ns.count(nc.nsid)) {
        return Status::error(EINVAL, fmt::format("{}: namespace ID {} is zero or used twice",
                                                 sc.nqn, nc.nsid));
      }
      auto dev = open_device(home_, nc.device);
      if (!dev) return dev.error();
      Namespace ns{nc.nsid, std::move(*dev), {}, 0};
      const QueueLimits& l = ns.dev->limits();
      ns.lbs = l.logical_block_size;
      ns.id.block_size = ns.lbs;
      ns.id.blocks = l.capacity / ns.lbs;
      // Copy limits from the device's; a device without offload is emulated here, so the
      // host still gets generous limits (the copy never crosses the network).
      const uint64_t seg = l.can_offload() ? l.copy_segment_max_bytes : (16u << 20);
      const uint64_t total = l.can_offload() ? l.copy_max_bytes : (64u << 20);
      ns.id.mssrl = static_cast<uint16_t>(std::clamp<uint64_t>(seg / ns.lbs, 1, 65535));
      ns.id.mcl = static_cast<uint32_t>(std::clamp<uint64_t>(total / ns.lbs, ns.id.mssrl,
                                                             UINT32_MAX));
      const uint32_t segs = l.can_offload() ? std::min<uint32_t>(l.copy_max_src_segments, 256) : 256;
      ns.id.msrc = static_cast<uint8_t>(std::max<uint32_t>(segs, 1) - 1);
      // NGUID: given, or derived from the subsystem serial and nsid so it is unique.
      if (!nc.nguid.empty() && !parse_hex16(nc.nguid, ns.id.nguid)) {
        return Status::error(EINVAL, fmt::format("{} namespace {}: nguid '{}' is not 32 hex "
                                                 "digits",
                                                 sc.nqn, nc.nsid, nc.nguid));
      }
      if (nc.nguid.empty()) {
        std::snprintf(reinterpret_cast<char*>(ns.id.nguid), 16, "%08x", serial * 7919 + nc.nsid);
        ns.id.nguid[15] = static_cast<uint8_t>(nc.nsid);
      }
      if (!nc.uuid.empty()) {
        if (!parse_hex16(nc.uuid, ns.uuid)) {
          return Status::error(EINVAL, fmt::format("{} namespace {}: uuid '{}' is not a UUID",
                                                   sc.nqn, nc.nsid, nc.uuid));
        }
        ns.has_uuid = true;
      }
      s.ns.emplace(nc.nsid, std::move(ns));
    }
  }
  return {};
}

Status TargetImpl::start() {
  auto home = std::make_unique<Worker>();
  home->loop = &home_;
  workers_.push_back(std::move(home));
  for (unsigned i = 1; i < std::max(1u, cfg_.cores); ++i) {
    auto w = std::make_unique<Worker>();
    auto loop = EventLoop::create();
    if (!loop) return loop.error();
    w->owned = std::move(*loop);
    w->loop = w->owned.get();
    Worker* raw = w.get();
    w->thread = std::thread([this, raw] {
      raw->loop->post([this, raw] { tick(*raw); });
      (void)raw->loop->run_until([this] { return stopping_.load(); });
      close_all(*raw);
      ++workers_done_;
      home_.post_remote([] {});  // the home loop waits for this count
    });
    workers_.push_back(std::move(w));
  }
  auto listen_on = [&](const std::string& addr, uint16_t port) -> Status {
    socklen_t len = 0;
    auto sa = numeric_address(addr, port, &len);
    if (!sa) return Status::error(EINVAL, fmt::format("listen address: {}", sa.error().message()));
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::from_errno(errno, "socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&*sa), len) != 0 || listen(fd, 1024) != 0) {
      Status s = Status::from_errno(errno, fmt::format("cannot listen on {}",
                                                       format_host_port(addr, port)));
      ::close(fd);
      return s;
    }
    getsockname(fd, reinterpret_cast<sockaddr*>(&*sa), &len);
    listen_fds_.push_back(fd);
    bound_.push_back(address_of(reinterpret_cast<sockaddr*>(&*sa)).port);
    accept_on(fd);
    return {};
  };
  for (const PortConfig& p : cfg_.ports) {
    if (Status s = listen_on(p.addr, p.port); !s.ok()) return s;
  }
  if (cfg_.discovery_port && !cfg_.ports.empty()) {
    if (Status s = listen_on(cfg_.ports[0].addr, cfg_.discovery_port); !s.ok()) return s;
  }
  tick(*workers_[0]);
  return {};
}

// Ends every connection of one loop, on that loop: their sockets are shut so that the reads and
// sends in flight on them complete, and the requests they have on devices are waited for
// (within a time limit), before the connections and their buffers are freed.
void TargetImpl::close_all(Worker& w) {
  for (auto& c : w.conns) c->abort();
  bool late = false;
  w.loop->after(std::chrono::seconds(30), [&late] { late = true; });
  (void)w.loop->run_until([&w, &late] {
    return late ||
           std::all_of(w.conns.begin(), w.conns.end(), [](const auto& c) { return c->idle(); });
  });
  if (late) {
    // A device that never completes: leak its connections rather than free memory it may
    // still write into.
    for (auto& c : w.conns) {
      if (!c->idle()) (void)c.release();
    }
  }
  w.conns.clear();
}

TargetImpl::~TargetImpl() {
  stopping_ = true;
  for (int fd : listen_fds_) shutdown(fd, SHUT_RDWR);  // ends the accepts in flight
  for (auto& w : workers_) {
    if (w->owned) w->loop->post_remote([] {});  // wake it to see stopping_
  }
  if (!workers_.empty()) {
    close_all(*workers_[0]);
    // The other loops' requests run on this loop's devices: keep it turning until they are done.
    const size_t others = workers_.size() - 1;
    (void)home_.run_until([&] { return workers_done_.load() == others; });
  }
  for (auto& w : workers_) {
    if (w->owned) w->thread.join();
  }
  // Accepts still in flight complete (with an error) before their descriptors close.
  bool settled = false;
  home_.post([&settled] { settled = true; });
  (void)home_.run_until([&settled] { return settled; });
  for (int fd : listen_fds_) ::close(fd);
}

TargetStats TargetImpl::stats() const {
  TargetStats s;
  s.connections = stats_.connections;
  s.commands = stats_.commands;
  s.read_bytes = stats_.read_bytes;
  s.written_bytes = stats_.written_bytes;
  s.copies = stats_.copies;
  s.copy_offloaded_bytes = stats_.copy_offloaded_bytes;
  s.copy_emulated_bytes = stats_.copy_emulated_bytes;
  s.errors = stats_.errors;
  s.open_connections = open_connections;
  s.refused_connections = stats_.refused;
  s.stalled_connections = stats_.stalled;
  return s;
}

void TargetImpl::accept_on(int fd) {
  home_.accept(fd, [this, fd](int res) {
    if (stopping_) {
      if (res >= 0) ::close(res);
      return;
    }
    if (res < 0) {
      // Out of descriptors or memory: wait before trying again (never spin); other errors
      // concern only the connection that failed.
      if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        accept_backoff_ = std::clamp(accept_backoff_ * 2, std::chrono::milliseconds(10),
                                     std::chrono::milliseconds(1000));
        log_refusal(fmt::format("cannot accept connections: {}; retrying in {} ms",
                                std::strerror(-res), accept_backoff_.count()));
        return accept_later(fd, accept_backoff_);
      }
      return accept_on(fd);
    }
    accept_backoff_ = std::chrono::milliseconds(0);
    serve_socket(res);
    accept_on(fd);
  });
}

void TargetImpl::serve_socket(int fd) {
  if (stopping_ || open_connections >= cfg_.limits.max_connections) {
    ++stats_.refused;
    log_refusal(fmt::format("refusing connections: {} open, the limit (--max-connections)",
                            cfg_.limits.max_connections));
    ::close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ++stats_.connections;
  ++open_connections;
  Worker& w = *workers_[next_worker_++ % workers_.size()];
  if (w.owned) {
    w.loop->post_remote([this, &w, fd] { adopt(w, fd); });
  } else {
    adopt(w, fd);
  }
}

void TargetImpl::accept_later(int fd, std::chrono::milliseconds wait) {
  home_.after(wait, [this, fd] {
    if (!stopping_) accept_on(fd);
  });
}

// At most one line a second about refused connections, however many there are.
void TargetImpl::log_refusal(const std::string& what) {
  const auto now = Clock::now();
  if (now - last_refusal_log_ < std::chrono::seconds(1)) return;
  last_refusal_log_ = now;
  log_warning(what);
}

void TargetImpl::adopt(Worker& w, int fd) {
  if (stopping_) {
    ::close(fd);
    --open_connections;
    return;
  }
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  w.conns.push_back(std::make_unique<Connection>(
      *this, home_, *w.loop, fd, address_of(reinterpret_cast<sockaddr*>(&local)).host));
  // A connection that has ended is freed soon after, on its loop, not only at the next tick.
  w.conns.back()->on_finished = [this, &w] { w.loop->post([this, &w] { reap(w); }); };
  w.conns.back()->start();
}

// Four times a second on every loop: close connections whose peer stalls or whose keep-alive
// stopped, and free closed ones.
void TargetImpl::tick(Worker& w) {
  const auto now = Clock::now();
  const int64_t ns = now.time_since_epoch().count();
  for (auto& c : w.conns) {
    if (c->closing()) {
      c->cut_if_stuck(now, cfg_.limits);
      continue;
    }
    if (std::string why = c->stalled(now, cfg_.limits); !why.empty()) {
      ++stats_.stalled;
      c->close(why);
      continue;
    }
    Controller* ctrl = c->controller();
    if (!ctrl) continue;
    if (ctrl->gone) {
      c->close("its controller's admin queue has gone");
    } else if (ctrl->kato_ms && ns - ctrl->last_seen > int64_t(ctrl->kato_ms) * 2'000'000) {
      c->close("keep-alive timeout");
    }
  }
  reap(w);
  if (!stopping_) w.loop->after(std::chrono::milliseconds(250), [this, &w] { tick(w); });
}

void TargetImpl::reap(Worker& w) {
  const size_t before = w.conns.size();
  std::erase_if(w.conns, [](const auto& c) { return c->finished(); });
  open_connections -= static_cast<unsigned>(before - w.conns.size());
}

std::vector<uint8_t> TargetImpl::discovery_log(const std::string& host,
                                               const std::string& local_addr) const {
  std::vector<std::vector<uint8_t>> entries;
  for (size_t i = 0; i < cfg_.ports.size(); ++i) {
    const PortConfig& p = cfg_.ports[i];
    // A port listening everywhere is announced at the address this host reached.
    const bool wildcard = p.addr == "0.0.0.0" || p.addr == "::";
    const std::string addr = wildcard ? local_addr : p.addr;
    for (const std::string& nqn : p.subsystems) {
      auto it = subsystems_.find(nqn);
      if (it == subsystems_.end() || !it->second.allows(host)) continue;
      std::vector<uint8_t> e(kDiscEntrySize, 0);
      std::span<uint8_t> s(e);
      e[disc::kTrtype] = 3;  // TCP
      e[disc::kAdrfam] = addr.find(':') != std::string::npos ? 2 : 1;  // IPv6 : IPv4
      e[disc::kSubtype] = 2;
      e[disc::kTreq] = 0;
      put<uint16_t>(s, disc::kPortid, p.id);
      put<uint16_t>(s, disc::kCntlid, 0xFFFF);
      put<uint16_t>(s, disc::kAsqsz, 32);
      put_string(s, disc::kTrsvcid, 32, std::to_string(bound_.size() > i ? bound_[i] : p.port), ' ');
      put_string(s, disc::kSubnqn, 256, nqn, '\0');
      put_string(s, disc::kTraddr, 256, addr, ' ');
      entries.push_back(std::move(e));
    }
  }
  std::vector<uint8_t> log(kDiscHeaderSize + entries.size() * kDiscEntrySize, 0);
  std::span<uint8_t> s(log);
  put<uint64_t>(s, 0, 1);  // GENCTR
  put<uint64_t>(s, 8, entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    std::memcpy(log.data() + kDiscHeaderSize + i * kDiscEntrySize, entries[i].data(), kDiscEntrySize);
  }
  return log;
}

Result<std::unique_ptr<Target>> Target::create(EventLoop& loop, const TargetConfig& cfg) {
  auto t = std::make_unique<TargetImpl>(loop, cfg);
  if (Status s = t->init(); !s.ok()) return std::unexpected(s);
  return std::unique_ptr<Target>(std::move(t));
}

// ---------------------------------------------------------------- connection: transport

// Reads what the socket has and handles every whole PDU in it (nvme/pdu_buffer.h).
void Connection::receive() {
  if (closing_) return maybe_free();
  recv_pending_ = true;
  loop_.recv(fd_, rbuf_.tail(), rbuf_.room(), [this](int res) {
    recv_pending_ = false;
    if (res <= 0) return close(res == 0 ? "host closed the connection" : "receive error");
    rbuf_.consumed(
        static_cast<size_t>(res),
        [this](const PduHeader& h, const uint8_t* pdu, size_t available) {
          p_ = pdu;
          p_len_ = available;
          // Before the ICReq only an ICReq-sized PDU may be announced: a peer cannot make the
          // buffer grow before it has said it speaks NVMe/TCP.
          const uint32_t most = ic_done_ ? kMaxPdu : sizeof(ICReq);
          if (h.plen >= 8 && h.plen <= most && h.hlen >= 8 && h.hlen <= h.plen) return true;
          terminate(h.plen > most ? kFesDataLimitExceeded : kFesInvalidHeaderField,
                    h.plen > most ? 4 : 2);
          return false;
        },
        [this](const uint8_t*) {
          on_pdu();
          return !closing_;
        });
    if (!rbuf_.partial()) {
      partial_since_.reset();
    } else if (!partial_since_) {
      partial_since_ = Clock::now();
    }
    receive();
  });
}

std::string Connection::stalled(Clock::time_point now, const TargetLimits& l) const {
  using std::chrono::milliseconds;
  if (!ic_done_ && now - opened_ > milliseconds(l.handshake_ms)) {
    return fmt::format("no ICReq within {} ms", l.handshake_ms);
  }
  if (!ctrl_ && now - opened_ > milliseconds(l.connect_ms)) {
    return fmt::format("no fabrics Connect within {} ms", l.connect_ms);
  }
  if (!authenticated_ && now - opened_ > milliseconds(l.connect_ms)) {
    return fmt::format("DH-HMAC-CHAP authentication not completed within {} ms", l.connect_ms);
  }
  if (partial_since_ && now - *partial_since_ > milliseconds(l.pdu_ms)) {
    return fmt::format("a PDU begun and not finished within {} ms", l.pdu_ms);
  }
  for (const auto& [tag, c] : awaiting_data_) {
    if (now - c->r2t_at > milliseconds(l.pdu_ms)) {
      return fmt::format("the data of command {} asked for by an R2T did not arrive within {} ms",
                         tag, l.pdu_ms);
    }
  }
  return {};
}

void Connection::on_pdu() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  if (!ic_done_) {
    if (h.type != pdu::kICReq) return terminate(kFesPduSequenceError, 0);
    return on_icreq();
  }
  // Header digest: CRC32C of the header, right after it.
  if (hdgst_ && h.type != pdu::kH2CTermReq) {
    if (!(h.flags & pdu::kFlagHdgst) || h.plen < h.hlen + 4u) return terminate(kFesInvalidHeaderField, 1);
    uint32_t got;
    std::memcpy(&got, p_ + h.hlen, 4);
    if (got != crc32c(p_, h.hlen)) return terminate(kFesHeaderDigestError, 0);
  }
  switch (h.type) {
    case pdu::kCapsuleCmd: return on_capsule();
    case pdu::kH2CData: return on_h2cdata();
    case pdu::kH2CTermReq: return close("host sent a termination request");
    default: return terminate(kFesInvalidHeaderField, 0);
  }
}

void Connection::on_icreq() {
  ICReq req;
  std::memcpy(&req, p_, sizeof req);
  if (req.hdr.plen != 128 || req.hdr.hlen != 128 || req.pfv != 0) {
    return terminate(kFesInvalidHeaderField, req.pfv != 0 ? 8 : 4);
  }
  hdgst_ = req.dgst & 1;
  ddgst_ = req.dgst & 2;
  ic_done_ = true;
  rbuf_.reserve(64 * 1024);  // many PDUs per receive from now on
  std::vector<uint8_t> out(sizeof(ICResp), 0);
  ICResp r{};
  r.hdr = {pdu::kICResp, 0, 128, 0, 128};
  r.pfv = 0;
  r.cpda = 0;
  r.dgst = req.dgst & 3;
  r.maxh2cdata = kMaxH2CData;
  std::memcpy(out.data(), &r, sizeof r);
  send(std::move(out));
}

void Connection::terminate(uint16_t fes, uint32_t fei) {
  log_warning(fmt::format("serve: ending a connection: bad PDU (type {:#04x}, error {}, field at "
                          "byte {})",
                          p_len_ ? p_[0] : 0, fes, fei));
  TermReq term{};
  const uint32_t copied = std::min<uint32_t>(static_cast<uint32_t>(p_len_), kTermReqMaxLen - 24);
  term.hdr = {pdu::kC2HTermReq, 0, 24, 0, 24 + copied};
  term.fes = fes;
  term.fei = fei;
  std::vector<uint8_t> out(24 + copied);
  std::memcpy(out.data(), &term, 24);
  if (copied) std::memcpy(out.data() + 24, p_, copied);
  ++t_.mut_stats().errors;
  send(std::move(out));
  closing_ = true;  // the socket is shut once the termination PDU is out
  closing_since_ = Clock::now();
}

void Connection::send(std::vector<uint8_t> head, const uint8_t* data, uint32_t len,
                      bool data_digest, std::unique_ptr<Command> done) {
  if (hdgst_ && ic_done_ && head[0] != pdu::kICResp && head[0] != pdu::kC2HTermReq) {
    PduHeader h;
    std::memcpy(&h, head.data(), 8);
    const uint32_t crc = crc32c(head.data(), h.hlen);
    head.insert(head.begin() + h.hlen, reinterpret_cast<const uint8_t*>(&crc),
                reinterpret_cast<const uint8_t*>(&crc) + 4);
  }
  Out o{std::move(head), data, len, 0, data_digest && ddgst_ && len, std::move(done)};
  if (o.has_ddgst) o.ddgst = crc32c(data, len);
  sendq_.push_back(std::move(o));
  pump_send();
}

void Connection::pump_send() {
  if (send_pending_ || sendq_.empty()) {
    if (!send_pending_ && sendq_.empty() && closing_) maybe_free();
    return;
  }
  Out& o = sendq_.front();
  size_t n = 0;
  iov_[n++] = {o.head.data(), o.head.size()};
  if (o.len) iov_[n++] = {const_cast<uint8_t*>(o.data), o.len};
  if (o.has_ddgst) iov_[n++] = {&o.ddgst, 4};
  // Skip what a short send already took.
  size_t skip = sent_;
  size_t first = 0;
  while (skip && skip >= iov_[first].iov_len) skip -= iov_[first++].iov_len;
  iov_[first].iov_base = static_cast<uint8_t*>(iov_[first].iov_base) + skip;
  iov_[first].iov_len -= skip;
  msg_ = {};
  msg_.msg_iov = iov_ + first;
  msg_.msg_iovlen = n - first;
  size_t total = 0;
  for (size_t i = first; i < n; ++i) total += iov_[i].iov_len;
  send_pending_ = true;
  loop_.sendmsg(fd_, &msg_, [this, total](int res) {
    send_pending_ = false;
    if (res < 0) {
      sendq_.clear();
      return close("send error");
    }
    if (static_cast<size_t>(res) < total) {
      sent_ += static_cast<size_t>(res);
    } else {
      sent_ = 0;
      // A completion that has left frees its queue entry (and the data sent before it).
      if (sendq_.front().done && outstanding_) --outstanding_;
      sendq_.pop_front();
    }
    pump_send();
  });
}

void Connection::close(const std::string& why) {
  if (!closing_) {
    closing_ = true;
    closing_since_ = Clock::now();
    log_info(fmt::format("serve: connection closed: {}", why));
  }
  shutdown(fd_, SHUT_RDWR);
  maybe_free();
}

void Connection::maybe_free() {
  if (!closing_ || recv_pending_ || send_pending_ || in_flight_) return;
  if (!sendq_.empty()) return pump_send();
  if (fd_ >= 0) {
    shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
    t_.drop_controller(ctrl_, qid_);
    ctrl_.reset();
    aers_.clear();
    awaiting_data_.clear();
    if (on_finished) on_finished();
  }
}

void Connection::at_home(std::function<void()> fn) {
  if (&loop_ == &home_) return fn();
  home_.post_remote(std::move(fn));
}


// ---------------------------------------------------------------- connection: commands

// Every command gets a buffer, one page at least, so that no path meets a null pointer for an
// empty transfer (the fuzzer found Get Log Page with no data doing memset(nullptr, 0, 0)).
bool Connection::alloc_data(Command& c, uint32_t len) {
  c.data_len = len;
  c.data = static_cast<uint8_t*>(aligned_alloc(4096, std::max<uint32_t>(4096, (len + 4095) / 4096 * 4096)));
  return c.data != nullptr;
}

void Connection::on_capsule() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  if (h.hlen != 72) return terminate(kFesInvalidHeaderField, 2);
  // The host may not have more commands outstanding than its queue holds: memory stays bounded
  // (at most queue depth x the largest transfer, counting what waits to be sent) for every
  // connection.
  if (outstanding_ + 1 > queue_depth_ + aers_.size()) return terminate(kFesPduSequenceError, 0);
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = h.pdo ? h.pdo : 72 + hd;
  if (pdo < 72 + hd || pdo > h.plen) return terminate(kFesInvalidHeaderField, 3);
  const uint32_t dd = (ddgst_ && h.plen > pdo) ? 4 : 0;
  if (h.plen - pdo < dd) return terminate(kFesInvalidHeaderField, 4);
  // plen >= pdo + dd from here, so this cannot wrap.
  const uint32_t in_capsule = h.plen - pdo - dd;
  ++outstanding_;
  auto c = std::make_unique<Command>();
  std::memcpy(&c->sqe, p_ + 8, sizeof(Sqe));
  c->cqe.cid = c->sqe.cid;
  c->cqe.sqid = qid_;
  ++t_.mut_stats().commands;
  if (ctrl_) ctrl_->seen();
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + h.plen - 4, 4);
    if (got != crc32c(p_ + pdo, in_capsule)) {
      return terminate(kFesHeaderDigestError, 0);  // data digest error ends the connection
    }
  }
  const SglDesc& sgl = c->sqe.dptr;
  // Fabrics commands give the direction of their data in FCTYPE bits 1:0 (01b: to the
  // controller); other commands in the opcode's bit 0.
  const bool host_to_ctrl = c->sqe.opcode == admin::kFabrics ? (p_[8 + kFcType] & 3) == 1
                                                             : (c->sqe.opcode & 1) != 0;
  if (sgl.length > kMaxTransfer + 4096) return complete(std::move(c), st(status::kInvalidField));
  if (sgl.type == kSglInCapsule) {
    // The offset is the host's: checked without wrap-around against what the capsule holds.
    if (!in_bounds(sgl.addr, sgl.length, in_capsule)) {
      return complete(std::move(c), st(status::kSglLengthInvalid));
    }
    if (!alloc_data(*c, sgl.length)) return complete(std::move(c), st(status::kInternal));
    if (sgl.length) std::memcpy(c->data, p_ + pdo + sgl.addr, sgl.length);
    c->received = sgl.length;
    return execute(std::move(c));
  }
  if (in_capsule) return terminate(kFesDataOutOfRange, 0);
  if (!alloc_data(*c, sgl.length)) return complete(std::move(c), st(status::kInternal));
  if (host_to_ctrl && sgl.length) {
    // Ask for the data: one R2T for all of it (the host splits it into H2CData PDUs).
    if (awaiting_data_.count(c->sqe.cid)) return complete(std::move(c), st(status::kCidConflict));
    std::vector<uint8_t> out(sizeof(R2T), 0);
    R2T r{};
    r.hdr = {pdu::kR2T, 0, 24, 0, 24 + (hdgst_ ? 4u : 0u)};
    if (hdgst_) r.hdr.flags |= pdu::kFlagHdgst;
    r.cccid = c->sqe.cid;
    r.ttag = c->sqe.cid;
    r.r2to = 0;
    r.r2tl = sgl.length;
    std::memcpy(out.data(), &r, sizeof r);
    c->r2t_at = Clock::now();
    awaiting_data_[c->sqe.cid] = std::move(c);
    return send(std::move(out));
  }
  execute(std::move(c));
}

void Connection::on_h2cdata() {
  DataPdu d;
  std::memcpy(&d, p_, sizeof d);
  auto it = awaiting_data_.find(d.ttag);
  if (it == awaiting_data_.end() || d.hdr.hlen != 24) return terminate(kFesInvalidHeaderField, 10);
  Command& c = *it->second;
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = d.hdr.pdo ? d.hdr.pdo : 24 + hd;
  const uint32_t dd = ddgst_ ? 4 : 0;
  // Every length is the host's: sums in 64 bits cannot wrap.
  if (pdo < 24 + hd || uint64_t(pdo) + d.datal + dd != d.hdr.plen || d.datao != c.received ||
      !in_bounds(d.datao, d.datal, c.data_len) || d.datal > kMaxH2CData) {
    return terminate(kFesDataOutOfRange, 12);
  }
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + pdo + d.datal, 4);
    if (got != crc32c(p_ + pdo, d.datal)) return terminate(kFesHeaderDigestError, 0);
  }
  if (d.datal) std::memcpy(c.data + d.datao, p_ + pdo, d.datal);
  c.received += d.datal;
  if (c.received == c.data_len) {
    auto cmd = std::move(it->second);
    awaiting_data_.erase(it);
    execute(std::move(cmd));
  }
}

void Connection::complete(std::unique_ptr<Command> c, uint16_t status, uint32_t dw0) {
  if (status) ++t_.mut_stats().errors;
  c->cqe.status = status;
  c->cqe.dw0 = dw0;
  std::vector<uint8_t> out(sizeof(CapsuleResp), 0);
  CapsuleResp r{};
  r.hdr = {pdu::kCapsuleResp, static_cast<uint8_t>(hdgst_ ? pdu::kFlagHdgst : 0), 24, 0,
           24u + (hdgst_ ? 4u : 0u)};
  r.cqe = c->cqe;
  std::memcpy(out.data(), &r, sizeof r);
  // The command (and its data, which a C2HData PDU ahead may point into) stays until the
  // completion has left.
  send(std::move(out), nullptr, 0, false, std::move(c));
}

// Sends the command's data to the host (C2HData), then the completion.
void Connection::send_data(std::unique_ptr<Command> c) {
  const uint32_t len = std::min(c->data_len, c->sqe.dptr.length);
  if (len) {
    std::vector<uint8_t> out(sizeof(DataPdu), 0);
    DataPdu d{};
    const uint32_t hd = hdgst_ ? 4 : 0, dd = ddgst_ ? 4 : 0;
    d.hdr = {pdu::kC2HData, static_cast<uint8_t>(pdu::kFlagLast | (hdgst_ ? pdu::kFlagHdgst : 0) |
                                                 (ddgst_ ? pdu::kFlagDdgst : 0)),
             24, static_cast<uint8_t>(24 + hd), 24 + hd + len + dd};
    d.cccid = c->sqe.cid;
    d.datao = 0;
    d.datal = len;
    std::memcpy(out.data(), &d, sizeof d);
    send(std::move(out), c->data, len, true);
  }
  complete(std::move(c), 0);
}

void Connection::execute(std::unique_ptr<Command> c) {
  if (c->sqe.opcode == admin::kFabrics) return fabrics(std::move(c));
  if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));  // Connect first
  if (!authenticated_) return complete(std::move(c), st(status::kAuthRequired));
  if (qid_ == 0) return admin(std::move(c));
  io(std::move(c));
}

void Connection::fabrics(std::unique_ptr<Command> c) {
  const uint8_t fctype = reinterpret_cast<const uint8_t*>(&c->sqe)[kFcType];
  const auto* raw = reinterpret_cast<const uint8_t*>(&c->sqe);
  std::span<const uint8_t> sq(raw, 64);
  switch (fctype) {
    case fabrics::kConnect: return connect(std::move(c));
    case fabrics::kAuthSend: return authenticate(std::move(c), true);
    case fabrics::kAuthReceive: return authenticate(std::move(c), false);
    case fabrics::kPropertyGet: {
      if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));
      if (!authenticated_) return complete(std::move(c), st(status::kAuthRequired));
      const uint32_t off = get<uint32_t>(sq, kPropOffset);
      uint64_t v = 0;
      if (off == kPropCap) {
        // MQES 15:0 (0-based), CQR bit 16, TO 31:24 (500 ms units), CSS NVM bit 37.
        v = (kMaxQueueSize - 1) | (1ull << 16) | (20ull << 24) | (1ull << 37);
      } else if (off == kPropVs) {
        v = 0x00010400;
      } else if (off == kPropCc) {
        v = ctrl_->cc;
      } else if (off == kPropCsts) {
        v = ctrl_->csts;
      } else {
        return complete(std::move(c), st(status::kInvalidField));
      }
      c->cqe.dw1 = static_cast<uint32_t>(v >> 32);
      return complete(std::move(c), 0, static_cast<uint32_t>(v));
    }
    case fabrics::kPropertySet: {
      if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));
      if (!authenticated_) return complete(std::move(c), st(status::kAuthRequired));
      const uint32_t off = get<uint32_t>(sq, kPropOffset);
      const uint32_t v = static_cast<uint32_t>(get<uint64_t>(sq, kPropValue));
      if (off != kPropCc) return complete(std::move(c), st(status::kInvalidField));
      ctrl_->cc = v;
      ctrl_->csts = (v & 1) ? 1 : 0;                // RDY follows EN
      if ((v >> 14) & 3) ctrl_->csts |= (2u << 2);  // shutdown requested: complete at once
      return complete(std::move(c), 0);
    }
    default: return complete(std::move(c), st(status::kInvalidField));
  }
}

void Connection::connect(std::unique_ptr<Command> c) {
  std::span<const uint8_t> sq(reinterpret_cast<const uint8_t*>(&c->sqe), 64);
  if (c->data_len < kConnectDataSize) return complete(std::move(c), st(status::kSglLengthInvalid));
  std::span<const uint8_t> d(c->data, c->data_len);
  const uint16_t qid = get<uint16_t>(sq, kConnectQid);
  const uint16_t sqsize = get<uint16_t>(sq, kConnectSqsize);
  const std::string subnqn = get_nqn(d, kCdSubnqn), hostnqn = get_nqn(d, kCdHostnqn);
  if (ctrl_ || sqsize == 0 || sqsize >= kMaxQueueSize) {
    return complete(std::move(c), st(status::kConnectInvalidParam), kConnectSqsize);
  }
  const bool discovery = subnqn == kDiscoveryNqn;
  Subsystem* s = discovery ? nullptr : t_.subsystem(subnqn);
  if (!discovery && !s) {
    return complete(std::move(c), st(status::kConnectInvalidParam), (1u << 16) | kCdSubnqn);
  }
  if (s && !s->allows(hostnqn)) {
    log_warning(fmt::format("serve: host {} refused for {}: not an allowed host", hostnqn, subnqn));
    return complete(std::move(c), st(status::kConnectInvalidHost));
  }
  // Connect Invalid Parameters says where the bad value is: IATTR (bit 16: in the data) and
  // IPO (the byte offset).
  auto invalid = [&](bool in_data, uint32_t offset) {
    const uint32_t where = (in_data ? 1u << 16 : 0) | offset;
    complete(std::move(c), st(status::kConnectInvalidParam), where);
  };
  if (qid == 0) {
    ctrl_ = t_.new_controller(s, hostnqn);
    if (!ctrl_) {
      log_warning(fmt::format("serve: host {} refused for {}: every controller ID is in use",
                              hostnqn, subnqn));
      return complete(std::move(c), st(status::kConnectControllerBusy));
    }
    ctrl_->kato_ms = c->sqe.cdw12;
  } else {
    switch (t_.join_controller(get<uint16_t>(d, kCdCntlid), s, hostnqn, qid, ctrl_)) {
      case TargetImpl::Join::ok: break;
      case TargetImpl::Join::no_controller: return invalid(true, kCdCntlid);
      case TargetImpl::Join::bad_qid:
      case TargetImpl::Join::duplicate_qid: return invalid(false, kConnectQid);
    }
  }
  qid_ = qid;
  queue_depth_ = sqsize + 1u;
  c->cqe.sqid = qid;
  uint32_t dw0 = ctrl_->cntlid;
  if (const HostKeys* keys = t_.keys_for(hostnqn)) {
    auth_ = std::make_unique<AuthSession>(*keys, hostnqn, subnqn);
    authenticated_ = false;
    dw0 |= 1u << 17;  // ATR: authentication required before anything else
  }
  complete(std::move(c), 0, dw0);
}

// Auth Send (a message from the host) and Auth Receive (the next one for it).
void Connection::authenticate(std::unique_ptr<Command> c, bool send) {
  if (!ctrl_ || !auth_) return complete(std::move(c), st(status::kCommandSequenceError));
  const uint32_t length = c->sqe.cdw11;  // TL or AL
  if (c->sqe.cdw10 != auth::kAuthCdw10 || length == 0 || length > c->data_len) {
    return complete(std::move(c), st(status::kInvalidField));
  }
  if (send) {
    auth_->send({c->data, length});
  } else {
    std::memset(c->data, 0, c->data_len);  // nothing but the message goes back
    if (!auth_->receive({c->data, length})) {
      return complete(std::move(c), st(status::kCommandSequenceError));
    }
  }
  if (!auth_failure_logged_ && !auth_->failure().empty()) {
    auth_failure_logged_ = true;
    log_warning(fmt::format("serve: host {} failed DH-HMAC-CHAP authentication on queue {} of "
                            "{}: {}",
                            ctrl_->hostnqn, qid_,
                            ctrl_->subsys ? ctrl_->subsys->cfg.nqn : kDiscoveryNqn, auth_->failure()));
  }
  if (!authenticated_ && auth_->authenticated()) {
    authenticated_ = true;
    log_info(fmt::format("serve: host {} authenticated on queue {}", ctrl_->hostnqn, qid_));
  }
  if (send) return complete(std::move(c), 0);
  send_data(std::move(c));
}

void Connection::admin(std::unique_ptr<Command> c) {
  Controller& ctrl = *ctrl_;
  Subsystem* s = ctrl.subsys;
  const uint32_t cdw10 = c->sqe.cdw10, cdw11 = c->sqe.cdw11;
  switch (c->sqe.opcode) {
    case admin::kIdentify: {
      if (c->data_len < 4096) return complete(std::move(c), st(status::kSglLengthInvalid));
      std::span<uint8_t, 4096> out(c->data, 4096);
      const uint8_t cns = cdw10 & 0xFF;
      if (cns == kCnsController) {
        ControllerIdentity id;
        id.cntlid = ctrl.cntlid;
        id.discovery = !s;
        id.subnqn = s ? s->cfg.nqn : kDiscoveryNqn;
        id.serial = s ? s->serial : "blkcopy-discovery";
        id.nn = s && !s->ns.empty() ? s->ns.rbegin()->first : 0;
        id.ioccsz = (64 + kInCapsule) / 16;
        id.kas = 1;
        build_identify_controller(id, out);
      } else if (cns == kCnsNamespace && s) {
        auto it = s->ns.find(c->sqe.nsid);
        if (it == s->ns.end()) {
          if (c->sqe.nsid == 0 || c->sqe.nsid == 0xFFFFFFFF) {
            return complete(std::move(c), st(status::kInvalidNamespace));
          }
          std::fill(out.begin(), out.end(), 0);  // an inactive namespace: all zeroes
        } else {
          build_identify_namespace(it->second.id, out);
        }
      } else if (cns == kCnsActiveNsList && s) {
        std::fill(out.begin(), out.end(), 0);
        size_t i = 0;
        for (auto& [nsid, ns] : s->ns) {
          if (nsid > c->sqe.nsid && i < 1024) put<uint32_t>(out, 4 * i++, nsid);
        }
      } else if (cns == kCnsNsDescriptors && s && s->ns.count(c->sqe.nsid)) {
        std::fill(out.begin(), out.end(), 0);
        const Namespace& n = s->ns.at(c->sqe.nsid);
        out[0] = 2;   // NIDT: NGUID
        out[1] = 16;  // NIDL
        std::memcpy(out.data() + 4, n.id.nguid, 16);
        if (n.has_uuid) {
          out[20] = 3;  // NIDT: UUID
          out[21] = 16;
          std::memcpy(out.data() + 24, n.uuid, 16);
        }
      } else {
        return complete(std::move(c), st(status::kInvalidField));
      }
      return send_data(std::move(c));
    }
    case admin::kGetLogPage: {
      const uint8_t lid = cdw10 & 0xFF;
      const uint64_t numd = ((cdw10 >> 16) | (uint64_t(cdw11 & 0xFFFF) << 16)) + 1;
      const uint64_t offset = c->sqe.cdw12 | (uint64_t(c->sqe.cdw13) << 32);
      const uint64_t len = std::min<uint64_t>(numd * 4, c->data_len);
      std::vector<uint8_t> page;
      if (lid == kLogDiscovery && !s) {
        page = t_.discovery_log(ctrl.hostnqn, local_addr_);
      } else if (lid == kLogCmdEffects && s) {
        page.assign(4096, 0);
        std::span<uint8_t> p(page);
        for (uint8_t op : {admin::kGetLogPage, admin::kIdentify, admin::kAbort,
                           admin::kSetFeatures, admin::kGetFeatures, admin::kAsyncEvent,
                           admin::kKeepAlive}) {
          put<uint32_t>(p, op * 4, 1);  // CSUPP
        }
        for (uint8_t op : {io::kFlush, io::kWrite, io::kRead, io::kWriteZeroes, io::kDsm,
                           io::kCopy}) {
          put<uint32_t>(p, 1024 + op * 4, (op & 1) || op == io::kDsm ? 0x3 : 0x1);  // LBCC
        }
      } else if ((lid == kLogError || lid == kLogSmart) && s) {
        page.assign(lid == kLogError ? 64 : 512, 0);
      } else {
        return complete(std::move(c), st(status::kInvalidLogPage));
      }
      std::memset(c->data, 0, c->data_len);
      if (offset < page.size()) {
        std::memcpy(c->data, page.data() + offset, std::min<uint64_t>(len, page.size() - offset));
      }
      return send_data(std::move(c));
    }
    case admin::kSetFeatures:
    case admin::kGetFeatures: {
      const bool set = c->sqe.opcode == admin::kSetFeatures;
      const uint8_t fid = cdw10 & 0xFF;
      uint32_t dw0 = 0;
      if (fid == kFeatNumQueues) {
        if (set) ctrl.queues = static_cast<uint16_t>(std::min<uint32_t>((cdw11 & 0xFFFF) + 1, 8));
        dw0 = uint32_t(ctrl.queues - 1) | (uint32_t(ctrl.queues - 1) << 16);
      } else if (fid == kFeatKato) {
        if (set) ctrl.kato_ms = cdw11;
        dw0 = ctrl.kato_ms;
      } else if (fid == kFeatAsyncEvent) {
        dw0 = 0;
      } else if (fid == kFeatHostBehavior && s) {
        if (set) {
          if (c->data_len < 512) return complete(std::move(c), st(status::kSglLengthInvalid));
          const uint16_t cdfe = get<uint16_t>(std::span<const uint8_t>(c->data, 512), kHostBehaviorCdfe);
          ctrl.format2 = cdfe & (1u << 2);
        } else {
          if (c->data_len < 512) return complete(std::move(c), st(status::kSglLengthInvalid));
          std::memset(c->data, 0, c->data_len);
          put<uint16_t>(std::span<uint8_t>(c->data, 512), kHostBehaviorCdfe, ctrl.format2 ? 4 : 0);
          return send_data(std::move(c));
        }
      } else {
        return complete(std::move(c), st(status::kInvalidField));
      }
      return complete(std::move(c), 0, dw0);
    }
    case admin::kKeepAlive: return complete(std::move(c), 0);
    case admin::kAsyncEvent:
      if (aers_.size() >= 4) return complete(std::move(c), cqe_status(0x105, true));  // AER limit
      aers_.push_back(std::move(c));  // held: no events are raised yet
      return;
    case admin::kAbort: return complete(std::move(c), 0, 1);  // not aborted
    default: return complete(std::move(c), st(status::kInvalidOpcode));
  }
}

namespace {
uint16_t io_status(const Status& s, bool read) {
  if (s.ok()) return 0;
  if (s.code() == EROFS) return st(status::kReadOnlyRange);
  return st(read ? status::kUnrecoveredRead : status::kWriteFault, false);
}
}  // namespace

void Connection::io(std::unique_ptr<Command> c) {
  Subsystem* s = ctrl_->subsys;
  if (!s) return complete(std::move(c), st(status::kInvalidOpcode));
  auto it = s->ns.find(c->sqe.nsid);
  if (it == s->ns.end()) return complete(std::move(c), st(status::kInvalidNamespace));
  Namespace& ns = it->second;
  const uint8_t op = c->sqe.opcode;
  if (op == io::kCopy) return copy(std::move(c), ns);
  const uint64_t slba = c->sqe.cdw10 | (uint64_t(c->sqe.cdw11) << 32);
  const uint64_t blocks = (c->sqe.cdw12 & 0xFFFF) + 1ull;
  Request req;
  switch (op) {
    case io::kFlush: req.op = Op::flush; break;
    case io::kRead:
    case io::kWrite:
    case io::kWriteZeroes:
      if (!in_bounds(slba, blocks, ns.id.blocks)) {
        return complete(std::move(c), st(status::kLbaOutOfRange));
      }
      req.op = op == io::kRead ? Op::read : op == io::kWrite ? Op::write : Op::write_zeroes;
      req.offset = slba * ns.lbs;
      req.length = blocks * ns.lbs;
      if (op != io::kWriteZeroes) {
        if (c->data_len != req.length) return complete(std::move(c), st(status::kSglLengthInvalid));
        req.buf = c->data;
      }
      break;
    case io::kDsm: return deallocate(std::move(c), ns);
    default: return complete(std::move(c), st(status::kInvalidOpcode));
  }
  ++in_flight_;
  auto* raw = c.release();
  auto done = back<Status>([this, raw, op, req](Status r) {
    --in_flight_;
    std::unique_ptr<Command> cmd(raw);
    if (closing_) return maybe_free();
    if (r.ok() && op == io::kRead) {
      t_.mut_stats().read_bytes += req.length;
      return send_data(std::move(cmd));
    }
    if (r.ok() && op == io::kWrite) t_.mut_stats().written_bytes += req.length;
    complete(std::move(cmd), io_status(r, op == io::kRead));
  });
  at_home([dev = ns.dev.get(), req, done] {
    Status sub = dev->submit(req, done);
    if (!sub.ok()) done(sub);
  });
}

// Dataset Management: only the deallocate attribute acts. Every range is checked before any
// is discarded, so a bad range changes nothing; then the ranges are discarded one after
// another on the devices' loop, and the first error is the answer.
void Connection::deallocate(std::unique_ptr<Command> c, Namespace& ns) {
  if (!(c->sqe.cdw11 & (1u << 2))) return complete(std::move(c), 0);
  const uint32_t nr = (c->sqe.cdw10 & 0xFF) + 1;
  if (c->data_len < nr * sizeof(DsmRange)) {
    return complete(std::move(c), st(status::kSglLengthInvalid));
  }
  std::vector<Request> discards;
  for (uint32_t i = 0; i < nr; ++i) {
    DsmRange r;
    std::memcpy(&r, c->data + i * sizeof r, sizeof r);
    if (r.nlb == 0) continue;
    if (!in_bounds(r.slba, r.nlb, ns.id.blocks)) {
      return complete(std::move(c), st(status::kLbaOutOfRange));
    }
    discards.push_back(Request{Op::discard, r.slba * ns.lbs, uint64_t(r.nlb) * ns.lbs});
  }
  ++in_flight_;
  auto* raw = c.release();
  auto finish = back<uint16_t>([this, raw](uint16_t code) {
    --in_flight_;
    std::unique_ptr<Command> cmd(raw);
    if (closing_) return maybe_free();
    complete(std::move(cmd), code);
  });
  // The job frees itself when the last range is done.
  struct Job {
    Device* dev;
    std::vector<Request> left;
    std::function<void(uint16_t)> finish;
    size_t next = 0;
    void step() {
      if (next == left.size()) return end({});
      Status sub = dev->submit(left[next++], [this](Status r) {
        if (!r.ok()) return end(r);
        step();
      });
      if (!sub.ok()) end(sub);
    }
    void end(const Status& r) {
      // A device that cannot deallocate has nothing to free: deallocation is advisory.
      const uint16_t code = r.ok() || r.code() == EOPNOTSUPP ? 0 : io_status(r, false);
      auto f = std::move(finish);
      delete this;
      f(code);
    }
  };
  auto* job = new Job{ns.dev.get(), std::move(discards), std::move(finish)};
  at_home([job] { job->step(); });
}

// Copy: every check the specification asks for, then the copy engine runs it here, offloaded
// into the backing device where it can, emulated on the target otherwise.
void Connection::copy(std::unique_ptr<Command> c, Namespace& ns) {
  Subsystem& s = *ctrl_->subsys;
  const uint64_t sdlba = c->sqe.cdw10 | (uint64_t(c->sqe.cdw11) << 32);
  const uint32_t nr = (c->sqe.cdw12 & 0xFF) + 1;
  const uint8_t fmt = (c->sqe.cdw12 >> 8) & 0xF;
  if (fmt != 0 && !(fmt == 2 && ctrl_->format2)) return complete(std::move(c), st(status::kInvalidField));
  if (nr > ns.id.msrc + 1u) return complete(std::move(c), st(status::kCommandSizeLimit));
  auto ranges = decode_copy_ranges({c->data, c->data_len}, nr, fmt);
  if (!ranges) return complete(std::move(c), st(status::kSglLengthInvalid));
  uint64_t total = 0;
  for (uint32_t i = 0; i < nr; ++i) {
    const CopySource& r = (*ranges)[i];
    Namespace* src = &ns;
    if (fmt == 2) {
      auto it = s.ns.find(r.snsid);
      if (it == s.ns.end()) return complete(std::move(c), st(status::kInvalidNamespace), i);
      src = &it->second;
      if (src->lbs != ns.lbs) return complete(std::move(c), st(status::kIncompatibleNamespace), i);
    }
    if (r.blocks > ns.id.mssrl) return complete(std::move(c), st(status::kCommandSizeLimit), i);
    if (!in_bounds(r.slba, r.blocks, src->id.blocks)) {
      return complete(std::move(c), st(status::kLbaOutOfRange), i);
    }
    c->copy_src.push_back({src->dev.get(), r.slba * src->lbs, uint64_t(r.blocks) * src->lbs});
    c->range_bytes.push_back(r.blocks * src->lbs);
    total += r.blocks;
  }
  if (total > ns.id.mcl) return complete(std::move(c), st(status::kCommandSizeLimit));
  if (!in_bounds(sdlba, total, ns.id.blocks)) {
    return complete(std::move(c), st(status::kLbaOutOfRange));
  }
  ++in_flight_;
  auto* raw = c.release();
  auto done = back<CopyResult>([this, raw](CopyResult r) {
    --in_flight_;
    std::unique_ptr<Command> cmd(raw);
    if (closing_) return maybe_free();
    auto& stats = t_.mut_stats();
    ++stats.copies;
    stats.copy_offloaded_bytes += r.offloaded_bytes;
    stats.copy_emulated_bytes += r.emulated_bytes;
    if (r.status.ok()) return complete(std::move(cmd), 0);
    if (r.invalid) {
      const uint16_t code = r.status.code() == ERANGE   ? st(status::kLbaOutOfRange)
                            : r.status.code() == EINVAL ? st(status::kOverlappingRange)
                                                        : st(status::kInternal);
      return complete(std::move(cmd), code);
    }
    // DW0: the first range not (fully) copied.
    uint64_t left = r.bytes;
    uint32_t first = 0;
    while (first < cmd->range_bytes.size() && left >= cmd->range_bytes[first]) {
      left -= cmd->range_bytes[first++];
    }
    complete(std::move(cmd), io_status(r.status, false), first);
  });
  at_home([raw, dev = ns.dev.get(), at = sdlba * ns.lbs, done] {
    Status sub = copy_async(raw->copy_src, *dev, at, CopyOptions{}, done);
    if (!sub.ok()) {
      CopyResult r;
      r.status = sub;
      r.invalid = true;
      done(r);
    }
  });
}

}  // namespace blkcopy::nvme
