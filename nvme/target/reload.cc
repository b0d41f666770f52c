// A new configuration applied to a running target as the difference from what it serves
// (serve's SIGHUP: the configuration file read again), through the same changes as the control
// socket's verbs. Every new device is opened first (one that does not open changes nothing),
// but a device that claims its storage (a clone stack) moved from one namespace to another,
// which opens only once its old namespace is gone; then what went is removed and what is new
// added, so an address moved from one port to another is free when it is taken again.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include <algorithm>

#include "nvme/target/internal.h"

namespace blkcopy::nvme {
namespace {

template <typename T, typename Key>
const T* by(const std::vector<T>& v, Key T::*key, const Key& want) {
  auto it = std::find_if(v.begin(), v.end(), [&](const T& x) { return x.*key == want; });
  return it == v.end() ? nullptr : &*it;
}

template <typename T>
Status status_of(const Result<T>& r) {
  return r ? Status() : r.error();
}

bool same_listener(const PortConfig& a, const PortConfig& b) {
  return a.addr == b.addr && a.tls == b.tls && (b.port == 0 || a.port == b.port);
}

}  // namespace

void Subsystem::set_hosts(bool any, std::vector<std::string> hosts) {
  std::lock_guard lock(hosts_mu_);
  cfg.allow_any_host = any;
  cfg.allowed_hosts = std::move(hosts);
}

void TargetImpl::reload_failed(const std::string& why) {
  ++reloads_;
  ++reload_failures_;
  last_reload_ = "failed: " + why;
}

Result<Target::ReloadReport> TargetImpl::reconfigure(const TargetConfig& next) {
  Result<ReloadReport> done;
  if (changing_) {
    done = fail(EBUSY, "a ctl change is in progress; reload again");
  } else {
    changing_ = reloading_ = true;
    struct Done {
      bool& flag;
      ~Done() { flag = false; }
    } reset{changing_}, reset_reload{reloading_};
    done = apply(next);
  }
  if (!done) {
    reload_failed(done.error().message());
  } else if (!done->failures.empty()) {
    reload_failed(fmt::format("{} change(s) made, {} failed: {}", done->changes.size(),
                              done->failures.size(), fmt::join(done->failures, "; ")));
  } else {
    ++reloads_;
    last_reload_ = fmt::format("ok: {} change(s)", done->changes.size());
  }
  return done;
}

Result<Target::ReloadReport> TargetImpl::apply(const TargetConfig& next) {
  // Checked whole, and every new device opened, before anything changes.
  if (Status v = validate(next); !v.ok()) return std::unexpected(v);
  auto dh = host_keys(next);
  if (!dh) return std::unexpected(dh.error());
  auto tls = tls_keys(next);
  if (!tls) return std::unexpected(tls.error());
  const TargetConfig now = current_config();
  std::vector<std::shared_ptr<Subsystem>> new_subsystems;
  std::vector<SubsystemConfig> later_subsystems;  // opened once what they take over is removed
  struct Opened {
    std::string nqn;
    NamespaceConfig nc;
    std::shared_ptr<Namespace> ns;  // nullptr: opened once what it takes over is removed
  };
  std::vector<Opened> new_namespaces;
  auto moved = [](const NamespaceConfig* had, const NamespaceConfig& want) {
    return want.enable && (!had || !had->enable || had->device != want.device);
  };
  // Whether a served device goes with this reload (its namespace removed, disabled or moved to
  // another device): one that claims its storage (a clone stack) can be opened anew only then.
  auto freed = [&](const std::string& device) {
    for (const SubsystemConfig& s : now.subsystems) {
      const SubsystemConfig* w = by(next.subsystems, &SubsystemConfig::nqn, s.nqn);
      for (const NamespaceConfig& n : s.namespaces) {
        const NamespaceConfig* k = w ? by(w->namespaces, &NamespaceConfig::nsid, n.nsid) : nullptr;
        if (n.enable && n.device == device && (!k || !k->enable || k->device != n.device)) return true;
      }
    }
    return false;
  };
  for (const SubsystemConfig& want : next.subsystems) {
    const SubsystemConfig* had = by(now.subsystems, &SubsystemConfig::nqn, want.nqn);
    Status failed;
    if (!had) {
      auto s = make_subsystem(want);
      if (s) new_subsystems.push_back(std::move(*s));
      const bool takes_over = std::any_of(want.namespaces.begin(), want.namespaces.end(),
                                          [&](const NamespaceConfig& n) { return freed(n.device); });
      if (!s && s.error().code() == EBUSY && takes_over) later_subsystems.push_back(want);
      if (!s && !(s.error().code() == EBUSY && takes_over)) failed = s.error();
    }
    auto s = had ? subsystems_.find(want.nqn) : nullptr;
    for (size_t i = 0; s && i < want.namespaces.size(); ++i) {
      const NamespaceConfig& w = want.namespaces[i];
      if (!moved(by(had->namespaces, &NamespaceConfig::nsid, w.nsid), w)) continue;
      auto n = make_namespace(*s, w);
      if (!n && n.error().code() == EBUSY && freed(w.device)) {
        new_namespaces.push_back({want.nqn, w, nullptr});
        continue;
      }
      if (!n) {
        failed = n.error();
        break;
      }
      new_namespaces.push_back({want.nqn, w, std::move(*n)});
    }
    if (!failed.ok()) {
      for (const auto& made : new_subsystems) {
        for (const auto& n : made->namespaces()) retire(made->remove(n->nsid));
      }
      for (Opened& o : new_namespaces) retire(std::move(o.ns));
      return fail(failed.code(), fmt::format("{}: {}; nothing changed", want.nqn, failed.message()));
    }
  }

  std::vector<std::string> done, failed;
  auto note = [&](std::string what) { done.push_back(std::move(what)); };
  auto check = [&](const Status& s) {
    if (s.ok()) return true;
    log_warning("serve: reload: " + s.message());
    failed.push_back(s.message());
    return false;
  };
  if (next.discovery_port != now.discovery_port || next.cores != now.cores ||
      next.kernel_tls != now.kernel_tls || next.busy_poll_us != now.busy_poll_us ||
      std::tie(next.limits.data_budget, next.limits.copy_budget, next.limits.max_connections) !=
          std::tie(now.limits.data_budget, now.limits.copy_budget, now.limits.max_connections)) {
    note("the discovery port, cores, kTLS, busy polling and limits change only with a restart: kept");
  }

  // Hosts' keys: from the next Connect or handshake on; a host whose keys changed or went
  // is disconnected (as ctl remove-host does), so a revoked key ends its sessions.
  std::vector<std::string> rekeyed;
  {
    std::lock_guard lock(keys_mu_);
    for (const HostConfig& h : cfg_.hosts) {
      const HostConfig* k = by(next.hosts, &HostConfig::nqn, h.nqn);
      if (!k || *k != h) rekeyed.push_back(h.nqn);
    }
    if (cfg_.hosts != next.hosts) note("hosts and their keys replaced");
    keys_ = std::move(*dh);
    tls_keys_ = std::move(*tls);
    cfg_.hosts = next.hosts;
  }
  for (const std::string& host : rekeyed) {
    size_t cut = 0;
    for (const auto& s : subsystems_.all()) {
      for (const Subsystems::Live& l : subsystems_.controllers(s.get())) {
        if (l.ctrl->hostnqn != host) continue;
        l.ctrl->disconnected = true;
        l.ctrl->gone = true;
        ++cut;
      }
    }
    if (cut) note(fmt::format("host {}: keys changed, {} controller(s) disconnected", host, cut));
  }

  // What went, or changed beyond changing in place, first.
  for (const PortConfig& p : now.ports) {
    const PortConfig* q = by(next.ports, &PortConfig::id, p.id);
    if (!q || !same_listener(p, *q)) {
      if (check(remove_port(p.id))) note(fmt::format("port {} removed", p.id));
    }
  }
  for (const SubsystemConfig& s : now.subsystems) {
    if (!by(next.subsystems, &SubsystemConfig::nqn, s.nqn)) {
      if (check(remove_subsystem(s.nqn))) note(fmt::format("subsystem {} removed", s.nqn));
    }
  }
  for (auto& s : new_subsystems) {
    const std::string nqn = s->cfg.nqn;
    if (check(add_subsystem(std::move(s)))) note(fmt::format("subsystem {} added", nqn));
  }
  for (const SubsystemConfig& sc : later_subsystems) {
    if (check(add_subsystem(sc))) note(fmt::format("subsystem {} added", sc.nqn));
  }
  for (const SubsystemConfig& want : next.subsystems) {
    const SubsystemConfig* had = by(now.subsystems, &SubsystemConfig::nqn, want.nqn);
    auto s = had ? subsystems_.find(want.nqn) : nullptr;
    if (!s) continue;
    const std::string& serial = want.serial.empty() ? had->serial : want.serial;  // none: as made
    if (std::tie(serial, want.model, want.cntlid_min, want.cntlid_max, want.qid_max) !=
        std::tie(had->serial, had->model, had->cntlid_min, had->cntlid_max, had->qid_max)) {
      note(fmt::format("subsystem {}: serial, model, controller IDs and queues change only with "
                       "a restart: kept", want.nqn));
    }
    if (want.allow_any_host != had->allow_any_host || want.allowed_hosts != had->allowed_hosts) {
      s->set_hosts(want.allow_any_host, want.allowed_hosts);
      size_t cut = 0;
      for (const Subsystems::Live& l : subsystems_.controllers(s.get())) {
        if (s->allows(l.ctrl->hostnqn)) continue;
        l.ctrl->disconnected = true;
        l.ctrl->gone = true;
        ++cut;
      }
      ++discovery_generation_;
      note(fmt::format("subsystem {}: allowed hosts changed, {} controller(s) disconnected",
                       want.nqn, cut));
    }
    // Namespaces gone, disabled or moved to another device; then the new ones (opened above).
    for (const NamespaceConfig& n : had->namespaces) {
      const NamespaceConfig* w = by(want.namespaces, &NamespaceConfig::nsid, n.nsid);
      if (!w || (n.enable && (!w->enable || w->device != n.device))) {
        if (check(remove_namespace(want.nqn, n.nsid))) {
          note(fmt::format("{} namespace {} {}", want.nqn, n.nsid, w && !w->enable ? "disabled" : "removed"));
        }
      }
      if (w && !w->enable) s->keep_disabled(*w);
    }
    for (const NamespaceConfig& w : want.namespaces) {
      if (!w.enable && !by(had->namespaces, &NamespaceConfig::nsid, w.nsid)) s->keep_disabled(w);
    }
  }
  for (Opened& o : new_namespaces) {
    if (check(o.ns ? add_namespace(o.nqn, std::move(o.ns), o.nc) : status_of(add_namespace(o.nqn, o.nc)))) {
      note(fmt::format("{} namespace {} added: {}", o.nqn, o.nc.nsid, o.nc.device));
    }
  }

  for (const PortConfig& p : next.ports) {
    const PortConfig* had = by(now.ports, &PortConfig::id, p.id);
    if (!had || !same_listener(*had, p)) {
      auto bound = add_port(p);
      if (check(status_of(bound))) note(fmt::format("port {} added: {}:{}", p.id, p.addr, *bound));
    } else if (had->subsystems != p.subsystems) {
      if (check(set_port_subsystems(p.id, p.subsystems))) {
        note(fmt::format("port {}: subsystems {}", p.id, fmt::join(p.subsystems, ", ")));
      }
    }
  }
  if (done.empty() && failed.empty()) note("nothing changed");
  return ReloadReport{std::move(done), std::move(failed)};
}

}  // namespace blkcopy::nvme
