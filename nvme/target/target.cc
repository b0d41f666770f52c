// The target: listeners, subsystems, controllers and connections on one event loop.
//
// Connection state machine (one line a state):
//   kWaitIc     the first PDU must be ICReq; anything else ends the connection
//   kReady      PDUs are CapsuleCmd, H2CData (for a write that got an R2T) or H2CTermReq
//   kClosing    the socket is shut; the connection is freed when nothing is in flight
#include "nvme/target/target.h"

#include <arpa/inet.h>
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <chrono>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>

#include "nvme/codec.h"
#include "nvme/pdu_buffer.h"
#include "nvme/spec.h"

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

struct Subsystem {
  SubsystemConfig cfg;
  std::map<uint32_t, Namespace> ns;
  std::string serial;
  bool allows(const std::string& host) const {
    return cfg.allow_any_host ||
           std::find(cfg.allowed_hosts.begin(), cfg.allowed_hosts.end(), host) !=
               cfg.allowed_hosts.end();
  }
};

// Shared by the connections of its queues, which may live on different loops: fields that
// change are atomic; the map of controllers is under TargetImpl::mu_.
struct Controller {
  uint16_t cntlid = 0;
  Subsystem* subsys = nullptr;  // nullptr: the discovery controller
  std::string hostnqn;
  std::atomic<uint32_t> cc{0}, csts{0};
  std::atomic<uint32_t> kato_ms{0};
  std::atomic<uint16_t> queues{1};
  std::atomic<bool> format2{false};  // Host Behavior Support: copy format 2 enabled
  std::atomic<int64_t> last_seen{0};  // steady_clock nanoseconds
  int connections = 0;                // under mu_
  void seen() {
    last_seen = std::chrono::steady_clock::now().time_since_epoch().count();
  }
};

struct AtomicStats {
  std::atomic<uint64_t> connections{0}, commands{0}, read_bytes{0}, written_bytes{0};
  std::atomic<uint64_t> copies{0}, copy_offloaded_bytes{0}, copy_emulated_bytes{0}, errors{0};
};

uint16_t st(uint16_t code, bool dnr = true) { return cqe_status(code, dnr); }

}  // namespace

class TargetImpl;

class Connection {
 public:
  Connection(TargetImpl& t, EventLoop& home, EventLoop& loop, int fd)
      : t_(t), home_(home), loop_(loop), fd_(fd) {
  }
  EventLoop& loop() const { return loop_; }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);  // the target went away: the host sees the connection end
  }
  // Ends the socket so that the reads and sends in flight on it end too (before the buffers
  // they use go away with the connection).
  void abort() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
  }
  bool idle() const { return !recv_pending_ && !send_pending_; }
  void start() { receive(); }
  bool closing() const { return closing_; }
  bool finished() const { return fd_ < 0; }
  Controller* controller() const { return ctrl_; }
  void close(const char* why);

 private:
  struct Command {
    Sqe sqe;
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
  void send(std::vector<uint8_t> head, const uint8_t* data = nullptr, uint32_t len = 0,
            bool data_digest = false);
  void pump_send();
  void execute(std::unique_ptr<Command> c);
  void complete(std::unique_ptr<Command> c, uint16_t status, uint32_t dw0 = 0);
  void send_data(std::unique_ptr<Command> c);
  bool alloc_data(Command& c, uint32_t len);
  void admin(std::unique_ptr<Command> c);
  void fabrics(std::unique_ptr<Command> c);
  void connect(std::unique_ptr<Command> c);
  void io(std::unique_ptr<Command> c);
  void copy(std::unique_ptr<Command> c, Namespace& ns);
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
  Controller* ctrl_ = nullptr;
  uint16_t qid_ = 0;
  PduBuffer rbuf_{kMaxPdu + 64 * 1024};
  const uint8_t* p_ = nullptr; // the PDU being handled, inside rbuf_
  size_t p_len_ = 0;           // bytes from p_ to the end of what was read
  bool recv_pending_ = false;
  std::map<uint16_t, std::unique_ptr<Command>> awaiting_data_;  // by TTAG (= CID)
  unsigned in_flight_ = 0;  // commands executing on devices
  unsigned outstanding_ = 0;   // commands received and not yet completed
  unsigned queue_depth_ = 1;   // SQSIZE + 1 once connected: more outstanding ends the connection
  struct Out {
    std::vector<uint8_t> head;
    const uint8_t* data;
    uint32_t len;
    uint32_t ddgst;
    bool has_ddgst;
  };
  std::deque<Out> sendq_;
  std::deque<std::unique_ptr<Command>> keep_;  // data buffers referenced by queued sends
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

  EventLoop& home() { return home_; }
  AtomicStats& mut_stats() { return stats_; }
  Subsystem* subsystem(const std::string& nqn) {
    auto it = subsystems_.find(nqn);
    return it == subsystems_.end() ? nullptr : &it->second;
  }
  Controller* new_controller(Subsystem* s, const std::string& host) {
    std::lock_guard lock(mu_);
    const uint16_t id = next_cntlid_++;
    auto [it, fresh] = controllers_.try_emplace(id);
    Controller& c = it->second;
    c.cntlid = id;
    c.subsys = s;
    c.hostnqn = host;
    c.connections = 1;
    c.seen();
    return &c;
  }
  // Adds a connection to an existing controller (an I/O queue), checking who asks.
  Controller* join_controller(uint16_t id, Subsystem* s, const std::string& host) {
    std::lock_guard lock(mu_);
    auto it = controllers_.find(id);
    if (it == controllers_.end() || it->second.subsys != s || it->second.hostnqn != host) {
      return nullptr;
    }
    ++it->second.connections;
    return &it->second;
  }
  void drop_controller(Controller* c) {
    if (!c) return;
    std::lock_guard lock(mu_);
    if (--c->connections <= 0) controllers_.erase(c->cntlid);
  }
  std::vector<uint8_t> discovery_log(const std::string& host) const;

 private:
  // One event loop and the connections that live on it.
  struct Worker {
    EventLoop* loop = nullptr;
    std::unique_ptr<EventLoop> owned;  // null for the caller's loop
    std::thread thread;
    std::vector<std::unique_ptr<Connection>> conns;  // touched on this loop only
  };
  void accept_on(int fd);
  void adopt(Worker& w, int fd);
  void tick(Worker& w);
  void close_all(Worker& w);

  EventLoop& home_;
  TargetConfig cfg_;
  std::map<std::string, Subsystem> subsystems_;  // read-only once started
  std::mutex mu_;
  std::map<uint16_t, Controller> controllers_;
  uint16_t next_cntlid_ = 1;
  std::vector<int> listen_fds_;
  std::vector<uint16_t> bound_;
  std::vector<std::unique_ptr<Worker>> workers_;  // [0]: the caller's loop
  size_t next_worker_ = 0;
  std::atomic<bool> stopping_{false};
  AtomicStats stats_;
};

// ---------------------------------------------------------------- configuration

Result<TargetConfig> parse_nvmetcli_json(std::string_view text) {
  TargetConfig cfg;
  try {
    auto j = nlohmann::json::parse(text);
    for (auto& s : j.value("subsystems", nlohmann::json::array())) {
      SubsystemConfig sc;
      sc.nqn = s.at("nqn").get<std::string>();
      sc.allow_any_host = s.value("attr", nlohmann::json::object()).value("allow_any_host", "1") == "1";
      for (auto& h : s.value("allowed_hosts", nlohmann::json::array())) {
        sc.allowed_hosts.push_back(h.get<std::string>());
      }
      for (auto& n : s.value("namespaces", nlohmann::json::array())) {
        NamespaceConfig nc;
        nc.nsid = n.at("nsid").get<uint32_t>();
        nc.device = n.at("device").at("path").get<std::string>();
        nc.nguid = n.at("device").value("nguid", "");
        nc.uuid = n.at("device").value("uuid", "");
        nc.enable = n.value("enable", 1) != 0;
        sc.namespaces.push_back(nc);
      }
      cfg.subsystems.push_back(sc);
    }
    for (auto& p : j.value("ports", nlohmann::json::array())) {
      PortConfig pc;
      pc.id = p.value("portid", 1);
      auto addr = p.at("addr");
      if (addr.value("trtype", "tcp") != "tcp") {
        return fail(EINVAL, fmt::format("port {}: only trtype tcp is served", pc.id));
      }
      pc.addr = addr.value("traddr", "127.0.0.1");
      pc.port = static_cast<uint16_t>(std::stoi(addr.value("trsvcid", "4420")));
      for (auto& s : p.value("subsystems", nlohmann::json::array())) {
        pc.subsystems.push_back(s.get<std::string>());
      }
      cfg.ports.push_back(pc);
    }
  } catch (const std::exception& e) {
    return fail(EINVAL, fmt::format("nvmetcli JSON: {}", e.what()));
  }
  return cfg;
}

Status TargetImpl::init() {
  uint32_t serial = 1;
  for (const SubsystemConfig& sc : cfg_.subsystems) {
    if (sc.nqn.empty() || sc.nqn.size() > 223) {
      return Status::error(EINVAL, fmt::format("subsystem NQN '{}' must be 1 to 223 characters",
                                               sc.nqn));
    }
    Subsystem& s = subsystems_[sc.nqn];
    s.cfg = sc;
    s.serial = fmt::format("blkcopy{:08x}", serial++);
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
    });
    workers_.push_back(std::move(w));
  }
  auto listen_on = [&](const std::string& addr, uint16_t port) -> Status {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, addr.c_str(), &sa.sin_addr) != 1) {
      ::close(fd);
      return Status::error(EINVAL, fmt::format("listen address '{}' is not IPv4", addr));
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(fd, 64) != 0) {
      Status s = Status::from_errno(errno, fmt::format("cannot listen on {}:{}", addr, port));
      ::close(fd);
      return s;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    listen_fds_.push_back(fd);
    bound_.push_back(ntohs(sa.sin_port));
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
// sends in flight on them complete before the connections (and their buffers) are freed.
void TargetImpl::close_all(Worker& w) {
  for (auto& c : w.conns) c->abort();
  (void)w.loop->run_until([&w] {
    return std::all_of(w.conns.begin(), w.conns.end(), [](const auto& c) { return c->idle(); });
  });
  w.conns.clear();
}

TargetImpl::~TargetImpl() {
  stopping_ = true;
  if (!workers_.empty()) close_all(*workers_[0]);
  for (auto& w : workers_) {
    if (!w->owned) continue;
    w->loop->post_remote([] {});  // wake it to see stopping_
    w->thread.join();
  }
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
  return s;
}

void TargetImpl::accept_on(int fd) {
  home_.accept(fd, [this, fd](int res) {
    if (res >= 0) {
      int one = 1;
      setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ++stats_.connections;
      Worker& w = *workers_[next_worker_++ % workers_.size()];
      if (w.owned) {
        w.loop->post_remote([this, &w, res] { adopt(w, res); });
      } else {
        adopt(w, res);
      }
    }
    accept_on(fd);
  });
}

void TargetImpl::adopt(Worker& w, int fd) {
  w.conns.push_back(std::make_unique<Connection>(*this, home_, *w.loop, fd));
  w.conns.back()->start();
}

// Once a second on every loop: drop hosts whose keep-alive stopped, free closed connections.
void TargetImpl::tick(Worker& w) {
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (auto& c : w.conns) {
    Controller* ctrl = c->controller();
    if (!ctrl || !ctrl->kato_ms || c->closing()) continue;
    if (now - ctrl->last_seen > int64_t(ctrl->kato_ms) * 2'000'000) c->close("keep-alive timeout");
  }
  std::erase_if(w.conns, [](const auto& c) { return c->finished(); });
  if (!stopping_) w.loop->after(std::chrono::seconds(1), [this, &w] { tick(w); });
}

std::vector<uint8_t> TargetImpl::discovery_log(const std::string& host) const {
  std::vector<std::vector<uint8_t>> entries;
  for (size_t i = 0; i < cfg_.ports.size(); ++i) {
    const PortConfig& p = cfg_.ports[i];
    for (const std::string& nqn : p.subsystems) {
      auto it = subsystems_.find(nqn);
      if (it == subsystems_.end() || !it->second.allows(host)) continue;
      std::vector<uint8_t> e(kDiscEntrySize, 0);
      std::span<uint8_t> s(e);
      e[disc::kTrtype] = 3;  // TCP
      e[disc::kAdrfam] = 1;  // IPv4
      e[disc::kSubtype] = 2;
      e[disc::kTreq] = 0;
      put<uint16_t>(s, disc::kPortid, p.id);
      put<uint16_t>(s, disc::kCntlid, 0xFFFF);
      put<uint16_t>(s, disc::kAsqsz, 32);
      put_string(s, disc::kTrsvcid, 32, std::to_string(bound_.size() > i ? bound_[i] : p.port), ' ');
      put_string(s, disc::kSubnqn, 256, nqn, '\0');
      put_string(s, disc::kTraddr, 256, p.addr, ' ');
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
          if (h.plen >= 8 && h.plen <= kMaxPdu && h.hlen >= 8 && h.hlen <= h.plen) return true;
          terminate(h.plen > kMaxPdu ? kFesDataLimitExceeded : kFesInvalidHeaderField,
                    h.plen > kMaxPdu ? 4 : 2);
          return false;
        },
        [this](const uint8_t*) {
          on_pdu();
          return !closing_;
        });
    receive();
  });
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
  fmt::print(stderr, "blkcopy serve: ending a connection: bad PDU (type {:#04x}, error {}, "
                     "field at byte {})\n",
             p_len_ ? p_[0] : 0, fes, fei);
  TermReq term{};
  const uint32_t copied = std::min<uint32_t>(static_cast<uint32_t>(p_len_), kTermReqMaxLen - 24);
  term.hdr = {pdu::kC2HTermReq, 0, 24, 0, 24 + copied};
  term.fes = fes;
  term.fei = fei;
  std::vector<uint8_t> out(24 + copied);
  std::memcpy(out.data(), &term, 24);
  std::memcpy(out.data() + 24, p_, copied);
  ++t_.mut_stats().errors;
  send(std::move(out));
  closing_ = true;  // the socket is shut once the termination PDU is out
}

void Connection::send(std::vector<uint8_t> head, const uint8_t* data, uint32_t len,
                      bool data_digest) {
  if (hdgst_ && ic_done_ && head[0] != pdu::kICResp && head[0] != pdu::kC2HTermReq) {
    PduHeader h;
    std::memcpy(&h, head.data(), 8);
    const uint32_t crc = crc32c(head.data(), h.hlen);
    head.insert(head.begin() + h.hlen, reinterpret_cast<const uint8_t*>(&crc),
                reinterpret_cast<const uint8_t*>(&crc) + 4);
  }
  Out o{std::move(head), data, len, 0, data_digest && ddgst_ && len};
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
      keep_.clear();
      return close("send error");
    }
    if (static_cast<size_t>(res) < total) {
      sent_ += static_cast<size_t>(res);
    } else {
      sent_ = 0;
      sendq_.pop_front();
      if (!keep_.empty() && sendq_.empty()) keep_.clear();
    }
    pump_send();
  });
}

void Connection::close(const char* why) {
  if (!closing_) {
    closing_ = true;
    fmt::print(stderr, "blkcopy serve: connection closed: {}\n", why);
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
    t_.drop_controller(ctrl_);
    ctrl_ = nullptr;
    aers_.clear();
    awaiting_data_.clear();
  }
}

void Connection::at_home(std::function<void()> fn) {
  if (&loop_ == &home_) return fn();
  home_.post_remote(std::move(fn));
}


// ---------------------------------------------------------------- connection: commands

bool Connection::alloc_data(Command& c, uint32_t len) {
  c.data_len = len;
  if (!len) return true;
  c.data = static_cast<uint8_t*>(aligned_alloc(4096, (len + 4095) / 4096 * 4096));
  return c.data != nullptr;
}

void Connection::on_capsule() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  if (h.hlen != 72) return terminate(kFesInvalidHeaderField, 2);
  // The host may not have more commands outstanding than its queue holds: memory stays bounded
  // (at most queue depth x the largest transfer) for every connection.
  if (outstanding_ + 1 > queue_depth_ + aers_.size()) return terminate(kFesPduSequenceError, 0);
  ++outstanding_;
  auto c = std::make_unique<Command>();
  std::memcpy(&c->sqe, p_ + 8, sizeof(Sqe));
  c->cqe.cid = c->sqe.cid;
  c->cqe.sqid = qid_;
  ++t_.mut_stats().commands;
  if (ctrl_) ctrl_->seen();
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = h.pdo ? h.pdo : 72 + hd;
  const uint32_t dd = (ddgst_ && h.plen > pdo) ? 4 : 0;
  const uint32_t in_capsule = h.plen > pdo ? h.plen - pdo - dd : 0;
  if (pdo < 72 + hd || pdo > h.plen) return terminate(kFesInvalidHeaderField, 3);
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + h.plen - 4, 4);
    if (got != crc32c(p_ + pdo, in_capsule)) {
      return terminate(kFesHeaderDigestError, 0);  // data digest error ends the connection
    }
  }
  const SglDesc& sgl = c->sqe.dptr;
  const bool host_to_ctrl = (c->sqe.opcode & 1) ||
                            (c->sqe.opcode == admin::kFabrics &&
                             (p_[8 + kFcType] == fabrics::kConnect ||
                              p_[8 + kFcType] == fabrics::kPropertySet));
  if (sgl.length > kMaxTransfer + 4096) return complete(std::move(c), st(status::kInvalidField));
  if (sgl.type == kSglInCapsule) {
    if (in_capsule < sgl.length || sgl.addr + sgl.length > in_capsule) {
      return complete(std::move(c), st(status::kSglLengthInvalid));
    }
    if (!alloc_data(*c, sgl.length)) return complete(std::move(c), st(status::kInternal));
    std::memcpy(c->data, p_ + pdo + sgl.addr, sgl.length);
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
  if (pdo + d.datal + dd != d.hdr.plen || d.datao != c.received ||
      d.datao + d.datal > c.data_len || d.datal > kMaxH2CData) {
    return terminate(kFesDataOutOfRange, 12);
  }
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + pdo + d.datal, 4);
    if (got != crc32c(p_ + pdo, d.datal)) return terminate(kFesHeaderDigestError, 0);
  }
  std::memcpy(c.data + d.datao, p_ + pdo, d.datal);
  c.received += d.datal;
  if (c.received == c.data_len) {
    auto cmd = std::move(it->second);
    awaiting_data_.erase(it);
    execute(std::move(cmd));
  }
}

void Connection::complete(std::unique_ptr<Command> c, uint16_t status, uint32_t dw0) {
  if (outstanding_) --outstanding_;
  if (status) ++t_.mut_stats().errors;
  c->cqe.status = status;
  c->cqe.dw0 = dw0;
  std::vector<uint8_t> out(sizeof(CapsuleResp), 0);
  CapsuleResp r{};
  r.hdr = {pdu::kCapsuleResp, static_cast<uint8_t>(hdgst_ ? pdu::kFlagHdgst : 0), 24, 0,
           24u + (hdgst_ ? 4u : 0u)};
  r.cqe = c->cqe;
  std::memcpy(out.data(), &r, sizeof r);
  send(std::move(out));
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
  auto* raw = c.get();
  keep_.push_back(std::move(c));  // the data stays until the send queue drains
  auto copy = std::make_unique<Command>();
  copy->sqe = raw->sqe;
  copy->cqe = raw->cqe;
  complete(std::move(copy), 0);
}

void Connection::execute(std::unique_ptr<Command> c) {
  if (c->sqe.opcode == admin::kFabrics) return fabrics(std::move(c));
  if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));  // Connect first
  if (qid_ == 0) return admin(std::move(c));
  io(std::move(c));
}

void Connection::fabrics(std::unique_ptr<Command> c) {
  const uint8_t fctype = reinterpret_cast<const uint8_t*>(&c->sqe)[kFcType];
  const auto* raw = reinterpret_cast<const uint8_t*>(&c->sqe);
  std::span<const uint8_t> sq(raw, 64);
  switch (fctype) {
    case fabrics::kConnect: return connect(std::move(c));
    case fabrics::kPropertyGet: {
      if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));
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
  if (ctrl_ || sqsize >= kMaxQueueSize) {
    return complete(std::move(c), st(status::kConnectInvalidParam));
  }
  const bool discovery = subnqn == kDiscoveryNqn;
  Subsystem* s = discovery ? nullptr : t_.subsystem(subnqn);
  if (!discovery && !s) {
    c->cqe.dw0 = (1u << 16) | 256;  // IATTR 1 (data), IPO: SUBNQN
    return complete(std::move(c), st(status::kConnectInvalidParam), (1u << 16) | 256);
  }
  if (s && !s->allows(hostnqn)) {
    fmt::print(stderr, "blkcopy serve: host {} refused for {}\n", hostnqn, subnqn);
    return complete(std::move(c), st(status::kConnectInvalidHost));
  }
  if (qid == 0) {
    ctrl_ = t_.new_controller(s, hostnqn);
    ctrl_->kato_ms = c->sqe.cdw12;
  } else {
    ctrl_ = t_.join_controller(get<uint16_t>(d, kCdCntlid), s, hostnqn);
    if (!ctrl_) return complete(std::move(c), st(status::kConnectInvalidParam), (1u << 16) | 16);
  }
  qid_ = qid;
  queue_depth_ = sqsize + 1u;
  c->cqe.sqid = qid;
  complete(std::move(c), 0, ctrl_->cntlid);
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
        page = t_.discovery_log(ctrl.hostnqn);
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
      if (slba + blocks > ns.id.blocks) return complete(std::move(c), st(status::kLbaOutOfRange));
      req.op = op == io::kRead ? Op::read : op == io::kWrite ? Op::write : Op::write_zeroes;
      req.offset = slba * ns.lbs;
      req.length = blocks * ns.lbs;
      if (op != io::kWriteZeroes) {
        if (c->data_len != req.length) return complete(std::move(c), st(status::kSglLengthInvalid));
        req.buf = c->data;
      }
      break;
    case io::kDsm: {
      if (!(c->sqe.cdw11 & (1u << 2))) return complete(std::move(c), 0);  // only deallocate acts
      const uint32_t nr = (c->sqe.cdw10 & 0xFF) + 1;
      if (c->data_len < nr * 16) return complete(std::move(c), st(status::kSglLengthInvalid));
      // One discard per range, one after another, on the devices' loop.
      auto* raw = c.release();
      ++in_flight_;
      auto finish = back<uint16_t>([this, raw](uint16_t code) {
        --in_flight_;
        complete(std::unique_ptr<Command>(raw), code);
      });
      // The ranges one after another; the job frees itself at the end.
      struct Dsm {
        Command* cmd;
        uint32_t nr;
        Namespace* ns;
        std::function<void(uint16_t)> finish;
        void step(uint32_t i) {
          std::span<const uint8_t> d(cmd->data, cmd->data_len);
          for (; i < nr; ++i) {
            const uint32_t nlb = get<uint32_t>(d, i * 16 + 4);
            const uint64_t lba = get<uint64_t>(d, i * 16 + 8);
            if (nlb == 0) continue;
            if (lba + nlb > ns->id.blocks) return end(st(status::kLbaOutOfRange));
            Status sub = ns->dev->submit(Request{Op::discard, lba * ns->lbs, uint64_t(nlb) * ns->lbs},
                                         [this, i](Status) { step(i + 1); });
            if (sub.ok()) return;
          }
          end(0);
        }
        void end(uint16_t code) {
          auto f = std::move(finish);
          delete this;
          f(code);
        }
      };
      auto* job = new Dsm{raw, nr, &ns, finish};
      at_home([job] { job->step(0); });
      return;
    }
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

// Copy: every check the specification asks for, then the copy engine runs it here, offloaded
// into the backing device where it can, emulated on the target otherwise.
void Connection::copy(std::unique_ptr<Command> c, Namespace& ns) {
  Subsystem& s = *ctrl_->subsys;
  const uint64_t sdlba = c->sqe.cdw10 | (uint64_t(c->sqe.cdw11) << 32);
  const uint32_t nr = (c->sqe.cdw12 & 0xFF) + 1;
  const uint8_t fmt = (c->sqe.cdw12 >> 8) & 0xF;
  if (fmt != 0 && !(fmt == 2 && ctrl_->format2)) return complete(std::move(c), st(status::kInvalidField));
  if (c->data_len != nr * 32u) return complete(std::move(c), st(status::kSglLengthInvalid));
  if (nr > ns.id.msrc + 1u) return complete(std::move(c), st(status::kCommandSizeLimit));
  std::span<const uint8_t> d(c->data, c->data_len);
  uint64_t total = 0;
  for (uint32_t i = 0; i < nr; ++i) {
    const uint64_t slba = get<uint64_t>(d, i * 32 + 8);
    const uint64_t nlb = get<uint16_t>(d, i * 32 + 16) + 1ull;
    Namespace* src = &ns;
    if (fmt == 2) {
      auto it = s.ns.find(get<uint32_t>(d, i * 32));
      if (it == s.ns.end()) return complete(std::move(c), st(status::kInvalidNamespace), i);
      src = &it->second;
      if (src->lbs != ns.lbs) return complete(std::move(c), st(status::kIncompatibleNamespace), i);
    }
    if (nlb > ns.id.mssrl) return complete(std::move(c), st(status::kCommandSizeLimit), i);
    if (slba + nlb > src->id.blocks || slba + nlb < slba) {
      return complete(std::move(c), st(status::kLbaOutOfRange), i);
    }
    c->copy_src.push_back({src->dev.get(), slba * src->lbs, nlb * src->lbs});
    c->range_bytes.push_back(static_cast<uint32_t>(nlb * src->lbs));
    total += nlb;
  }
  if (total > ns.id.mcl) return complete(std::move(c), st(status::kCommandSizeLimit));
  if (sdlba + total > ns.id.blocks || sdlba + total < sdlba) {
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
