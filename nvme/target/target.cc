// The target: set-up, listeners, accepting, the tick and the discovery log (internal.h has
// the map of the files).
#include "nvme/target/internal.h"

namespace blkcopy::nvme {
namespace {

// 32 hex digits, dashes allowed, into 16 bytes.
bool parse_hex16(std::string hex, uint8_t out[16]) {
  std::erase(hex, '-');
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return false;
  }
  for (int i = 0; i < 16; ++i) out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return true;
}

}  // namespace

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
    (*loop)->set_busy_poll(std::chrono::microseconds(cfg_.busy_poll_us));
    w->owned = std::move(*loop);
    w->loop = w->owned.get();
    Worker* raw = w.get();
    w->thread = std::thread([this, raw] {
      raw->loop->post([this, raw] { tick(*raw); });
      (void)raw->loop->run_until([this] { return stopping_.load(); });
      raw->tick.cancel();
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
  Timer limit = w.loop->after(std::chrono::seconds(30), [&late] { late = true; });
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
  accept_timers_.clear();
  workers_.empty() || (workers_[0]->tick.cancel(), true);
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
  accept_timers_.push_back(home_.after(wait, [this, fd] {
    if (!stopping_) accept_on(fd);
  }));
  std::erase_if(accept_timers_, [](const Timer& t) { return !t.armed(); });
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
  if (!stopping_) w.tick = w.loop->after(std::chrono::milliseconds(250), [this, &w] { tick(w); });
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

}  // namespace blkcopy::nvme
