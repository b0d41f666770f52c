// The target's set-up: subsystems, namespaces and their channels on every loop, the budgets,
// the loops and their threads, and the way down.
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "nvme/target/internal.h"
#include "nvme/target/tcp_connection.h"

namespace blkcopy::nvme {

TargetImpl::TargetImpl(EventLoop& loop, TargetConfig cfg)
    : home_(loop),
      cfg_(std::move(cfg)),
      data_budget_(cfg_.limits.data_budget, cfg_.limits.data_budget / 8, 256u << 10),
      copy_budget_(cfg_.limits.copy_budget, cfg_.limits.copy_budget / 8, 256u << 10) {}

Status TargetImpl::init() {
  if (Status v = validate(cfg_); !v.ok()) return v;
  auto keys = host_keys(cfg_);
  if (!keys) return keys.error();
  keys_ = std::move(*keys);
  auto tls = tls_keys(cfg_);
  if (!tls) return tls.error();
  tls_keys_ = std::move(*tls);
  // The workers' loops first: each namespace gets a channel on each.
  if (Status st = make_workers(); !st.ok()) return st;
  for (const SubsystemConfig& sc : cfg_.subsystems) {
    auto s = make_subsystem(sc);
    if (!s) return s.error();
    subsystems_.add(std::move(*s));
  }
  return {};
}

Status TargetImpl::make_workers() {
  if (!workers_.empty()) return {};
  for (unsigned i = 0; i < std::max(1u, cfg_.cores); ++i) {
    auto w = std::make_unique<Worker>();
    if (i == 0) {
      w->loop = &home_;
    } else {
      auto loop = EventLoop::create();
      if (!loop) return loop.error();
      (*loop)->set_busy_poll(std::chrono::microseconds(cfg_.busy_poll_us));
      w->owned = std::move(*loop);
      w->loop = w->owned.get();
    }
    w->data_queue = std::make_unique<BudgetQueue>(data_budget_, *w->loop);
    w->copy_queue = std::make_unique<BudgetQueue>(copy_budget_, *w->loop);
    workers_.push_back(std::move(w));
  }
  hop_copy_account_ = std::make_unique<Account>(*workers_[0]->copy_queue, copy_share());
  return {};
}

Status TargetImpl::start() {
  for (size_t i = 1; i < workers_.size(); ++i) {
    Worker* raw = workers_[i].get();
    raw->thread = std::thread([this, raw] { run_worker(*raw); });
  }
  for (const PortConfig& p : cfg_.ports) {
    auto port = listen_on(p);
    if (!port) return port.error();
    std::lock_guard lock(ports_mu_);
    ports_.push_back(std::move(*port));
  }
  if (cfg_.discovery_port && !cfg_.ports.empty()) {
    // TLS on the discovery port: required when every port requires it, offered when any does.
    auto tls = [&](PortTls t) {
      return std::any_of(cfg_.ports.begin(), cfg_.ports.end(), [t](const PortConfig& p) { return p.tls == t; });
    };
    const PortTls d = !tls(PortTls::none) && !tls(PortTls::optional) ? PortTls::required
                      : tls(PortTls::none) && !tls(PortTls::optional) && !tls(PortTls::required)
                          ? PortTls::none
                          : PortTls::optional;
    PortConfig dp{0, cfg_.ports[0].addr, cfg_.discovery_port, {}, d};
    auto port = listen_on(dp);
    if (!port) return port.error();
    discovery_listener_ = std::move(*port);
  }
  tick(*workers_[0]);
  return {};
}

std::vector<uint16_t> TargetImpl::bound_ports() const {
  std::vector<uint16_t> out;
  for (const auto& p : ports()) out.push_back(p->bound);
  if (discovery_listener_) out.push_back(discovery_listener_->bound);
  return out;
}

Result<TlsSession::Psk> TargetImpl::tls_psk(std::string_view identity) {
  auto id = auth::parse_tls_identity(identity);
  if (!id) return std::unexpected(id.error());
  std::optional<auth::TlsKey> found;
  {
    std::lock_guard lock(keys_mu_);
    if (auto it = tls_keys_.find(id->hostnqn); it != tls_keys_.end()) found = it->second;
  }
  if (!found) return fail(EACCES, fmt::format("host {} has no TLS key here", id->hostnqn));
  const auth::TlsKey& key = *found;
  if (id->subnqn != kDiscoveryNqn && !subsystems_.find(id->subnqn)) {
    return fail(EACCES, fmt::format("host {} asked for TLS to {}, which is not served here",
                                    id->hostnqn, id->subnqn));
  }
  if (id->cipher != key.cipher()) {
    return fail(EACCES, fmt::format("host {} offered {} but its key is for {}", id->hostnqn,
                                    auth::tls_cipher_name(id->cipher),
                                    auth::tls_cipher_name(key.cipher())));
  }
  return TlsSession::psk_for(key, id->hostnqn, id->subnqn);
}

void TargetImpl::run_worker(Worker& w) {
  w.loop->post([this, &w] { tick(w); });
  (void)w.loop->run_until([this] { return stopping_.load(); });
  w.tick.cancel();
  close_all(w);
  ++workers_done_;
  home_.post_remote([] {});  // the home loop waits for this count
}

// Ends every connection of one loop, on that loop: their sockets are shut so that the reads
// and sends in flight on them complete, and the requests they have on devices are waited for
// (within a time limit: device I/O cannot be cancelled, and it writes into their buffers),
// before the connections and their buffers are freed.
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
  control_.reset();  // no client is answered while the target goes
  metrics_.reset();
  stopping_ = true;
  accept_timers_.clear();
  for (const auto& p : ports()) shutdown(p->fd, SHUT_RDWR);  // ends the accepts in flight
  if (discovery_listener_) shutdown(discovery_listener_->fd, SHUT_RDWR);
  for (auto& w : workers_) {
    if (w->owned) w->loop->post_remote([] {});  // wake it to see stopping_
  }
  if (!workers_.empty()) {
    workers_[0]->tick.cancel();
    close_all(*workers_[0]);
    // Requests that hopped to this loop's devices: keep it turning until the others are done.
    const size_t others = workers_.size() - 1;
    (void)home_.run_until([&] { return workers_done_.load() == others; });
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Accepts still in flight complete (with an error) before their descriptors close.
  bool settled = false;
  home_.post([&settled] { settled = true; });
  (void)home_.run_until([&settled] { return settled; });
  ports_.clear();  // their listeners close with the last holder
  discovery_listener_.reset();
  // Channels live on the workers' loops: they go before the loops do.
  for (const auto& s : subsystems_.all()) {
    for (const auto& ns : s->namespaces()) ns->channels.clear();
  }
  for (const auto& r : retiring_) r.ns->channels.clear();
  hop_copy_account_.reset();
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
  s.open_connections = open_connections_;
  s.refused_connections = stats_.refused;
  s.stalled_connections = stats_.stalled;
  s.undrained_connections = stats_.undrained;
  s.data_budget_used = data_budget_.used();
  s.data_budget_high = data_budget_.high_water();
  s.copy_budget_used = copy_budget_.used();
  s.copy_budget_high = copy_budget_.high_water();
  s.budget_waits = stats_.budget_waits;
  s.hops = stats_.hops;
  return s;
}

Result<std::unique_ptr<Target>> Target::create(EventLoop& loop, const TargetConfig& cfg) {
  auto t = std::make_unique<TargetImpl>(loop, cfg);
  if (Status s = t->init(); !s.ok()) return std::unexpected(s);
  return std::unique_ptr<Target>(std::move(t));
}

}  // namespace blkcopy::nvme
