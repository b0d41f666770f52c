#include "nvme/target/subsystem.h"

#include <blkcopy/log.h>
#include <fmt/format.h>

namespace blkcopy::nvme {

std::optional<uint16_t> ControllerIds::take() {
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

void Controller::namespace_changed(uint32_t nsid) {
  std::lock_guard lock(events_mu_);
  auto at = std::lower_bound(changed_.begin(), changed_.end(), nsid);
  if (at == changed_.end() || *at != nsid) {
    if (changed_.size() < 1024) {
      changed_.insert(at, nsid);
    } else {
      changed_overflow_ = true;
    }
  }
  if (!event_masked_) event_waiting_ = true;
}

bool Controller::take_namespace_event() {
  if (!(aen_config & kAenNamespaceAttribute)) return false;
  std::lock_guard lock(events_mu_);
  if (!event_waiting_) return false;
  event_waiting_ = false;
  event_masked_ = true;
  return true;
}

std::vector<uint32_t> Controller::changed_namespaces(bool clear) {
  std::lock_guard lock(events_mu_);
  std::vector<uint32_t> out = changed_overflow_ ? std::vector<uint32_t>{0xFFFFFFFF} : changed_;
  if (clear) {
    changed_.clear();
    changed_overflow_ = event_waiting_ = event_masked_ = false;
  }
  return out;
}

bool Subsystem::allows(const std::string& host) const {
  std::lock_guard lock(hosts_mu_);
  return cfg.allow_any_host || std::find(cfg.allowed_hosts.begin(), cfg.allowed_hosts.end(),
                                         host) != cfg.allowed_hosts.end();
}

bool Subsystem::allow(const std::string& host, bool yes) {
  std::lock_guard lock(hosts_mu_);
  auto it = std::find(cfg.allowed_hosts.begin(), cfg.allowed_hosts.end(), host);
  if (yes == (it != cfg.allowed_hosts.end())) return false;
  if (yes) {
    cfg.allowed_hosts.push_back(host);
  } else {
    cfg.allowed_hosts.erase(it);
  }
  return true;
}

bool Subsystem::allows_any_host() const {
  std::lock_guard lock(hosts_mu_);
  return cfg.allow_any_host;
}

std::vector<std::string> Subsystem::allowed_hosts() const {
  std::lock_guard lock(hosts_mu_);
  return cfg.allowed_hosts;
}

std::shared_ptr<Namespace> Subsystem::ns(uint32_t nsid) const {
  std::lock_guard lock(ns_mu_);
  auto it = ns_.find(nsid);
  return it == ns_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Namespace>> Subsystem::namespaces() const {
  std::lock_guard lock(ns_mu_);
  std::vector<std::shared_ptr<Namespace>> out;
  for (const auto& [id, n] : ns_) out.push_back(n);
  return out;
}

uint32_t Subsystem::largest_nsid() const {
  std::lock_guard lock(ns_mu_);
  return ns_.empty() ? 0 : ns_.rbegin()->first;
}

namespace {

// `nc` in place of the entry of its ID, in ID order.
void put_config(std::vector<NamespaceConfig>& all, const NamespaceConfig& nc) {
  std::erase_if(all, [&](const NamespaceConfig& c) { return c.nsid == nc.nsid; });
  all.insert(std::upper_bound(all.begin(), all.end(), nc,
                              [](const auto& a, const auto& b) { return a.nsid < b.nsid; }),
             nc);
}

}  // namespace

bool Subsystem::add(std::shared_ptr<Namespace> n, const NamespaceConfig& nc) {
  std::lock_guard lock(ns_mu_);
  const uint32_t nsid = n->nsid;
  if (!ns_.emplace(nsid, std::move(n)).second) return false;
  put_config(cfg.namespaces, nc);
  return true;
}

bool Subsystem::keep_disabled(const NamespaceConfig& nc) {
  std::lock_guard lock(ns_mu_);
  if (ns_.count(nc.nsid)) return false;
  put_config(cfg.namespaces, nc);
  return true;
}

std::shared_ptr<Namespace> Subsystem::replace(std::shared_ptr<Namespace> n) {
  std::lock_guard lock(ns_mu_);
  auto it = ns_.find(n->nsid);
  if (it == ns_.end()) return nullptr;
  std::swap(it->second, n);
  return n;
}

std::shared_ptr<Namespace> Subsystem::remove(uint32_t nsid) {
  std::lock_guard lock(ns_mu_);
  std::erase_if(cfg.namespaces, [&](const NamespaceConfig& c) { return c.nsid == nsid; });
  auto it = ns_.find(nsid);
  if (it == ns_.end()) return nullptr;
  auto n = std::move(it->second);
  ns_.erase(it);
  return n;
}

SubsystemConfig Subsystem::config() const {
  std::scoped_lock lock(hosts_mu_, ns_mu_);
  return cfg;
}

std::vector<std::shared_ptr<Subsystem>> Subsystems::all() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Subsystem>> out;
  for (const auto& [nqn, s] : subsystems_) out.push_back(s);
  return out;
}

std::shared_ptr<Subsystem> Subsystems::find(const std::string& nqn) const {
  std::lock_guard lock(mu_);
  auto it = subsystems_.find(nqn);
  return it == subsystems_.end() ? nullptr : it->second;
}

bool Subsystems::add(std::shared_ptr<Subsystem> s) {
  std::lock_guard lock(mu_);
  const std::string nqn = s->cfg.nqn;
  return subsystems_.emplace(nqn, std::move(s)).second;
}

std::shared_ptr<Subsystem> Subsystems::remove(const std::string& nqn) {
  std::lock_guard lock(mu_);
  auto it = subsystems_.find(nqn);
  if (it == subsystems_.end()) return nullptr;
  auto s = std::move(it->second);
  subsystems_.erase(it);
  s->removed = true;
  for (auto& [id, c] : s->ids.live) {
    c->disconnected = true;
    c->gone = true;
  }
  return s;
}

std::shared_ptr<Controller> Subsystems::create(const std::shared_ptr<Subsystem>& s,
                                               const std::string& host, bool unproven,
                                               const std::string& address, bool tls) {
  std::lock_guard lock(mu_);
  if (s && s->removed) return nullptr;
  ControllerIds& ids = s ? s->ids : discovery_ids_;
  auto id = ids.take();
  if (!id) {
    // Every ID is live: one held by a controller nobody has authenticated goes (its queues
    // close on the next tick), the one that has waited longest.
    auto victim = ids.live.end();
    for (auto it = ids.live.begin(); it != ids.live.end(); ++it) {
      if (it->second->unproven && !it->second->authenticating && (victim == ids.live.end() ||
                                   it->second->last_seen < victim->second->last_seen)) {
        victim = it;
      }
    }
    if (victim == ids.live.end()) return nullptr;
    log_warning(fmt::format("serve: controller {} of host {} gives its ID up: every ID is in use "
                            "and it has not begun to authenticate",
                            victim->first, victim->second->hostnqn));
    victim->second->gone = true;
    id = victim->first;
    ids.live.erase(victim);
  }
  auto c = std::make_shared<Controller>();
  c->cntlid = *id;
  c->subsys = s;
  c->hostnqn = host;
  c->address = address;
  c->tls = tls;
  c->dhchap = unproven;
  c->queues = s ? s->cfg.qid_max : 0;
  c->unproven = unproven;
  c->seen();
  ids.live.emplace(*id, c);
  return c;
}

Subsystems::Join Subsystems::join(uint16_t id, Subsystem* s, const std::string& host,
                                  uint16_t qid, std::shared_ptr<Controller>& out, bool claim) {
  std::lock_guard lock(mu_);
  ControllerIds& ids = s ? s->ids : discovery_ids_;
  auto it = ids.live.find(id);
  if (it == ids.live.end() || it->second->hostnqn != host) return Join::no_controller;
  Controller& c = *it->second;
  if (qid > c.queues) return Join::bad_qid;
  if (claim ? !c.io_queues.insert(qid).second : c.io_queues.count(qid) > 0) {
    return Join::duplicate_qid;
  }
  out = it->second;
  return Join::ok;
}

std::vector<Subsystems::Live> Subsystems::controllers(Subsystem* s) {
  std::lock_guard lock(mu_);
  std::vector<Live> out;
  for (const auto& [id, c] : (s ? s->ids : discovery_ids_).live) {
    out.push_back({c, std::vector<uint16_t>(c->io_queues.begin(), c->io_queues.end())});
  }
  return out;
}

bool Subsystems::claim(Controller& c, uint16_t qid) {
  std::lock_guard lock(mu_);
  return c.io_queues.insert(qid).second;
}

void Subsystems::drop(const std::shared_ptr<Controller>& c, uint16_t qid) {
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

}  // namespace blkcopy::nvme
