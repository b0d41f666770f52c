// What the target serves, made at start and changed while it runs (ctl add-subsystem,
// add-ns, resize-ns, add-port and their removals; a reload): subsystems, namespaces with their
// channels on every loop, ports. A namespace taken out is freed once no request holds it: its
// channels on their own loops, then its device here; the controllers of its subsystem get the
// Namespace Attribute Changed event, as Linux nvmet sends it.
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "nvme/target/internal.h"

namespace blkcopy::nvme {
namespace {

// FNV-1a over `text` from `basis`: a stable name for an identity made up (serials, NGUIDs).
uint64_t fnv1a(std::string_view text, uint64_t basis = 0xcbf29ce484222325ull) {
  for (const unsigned char c : text) basis = (basis ^ c) * 0x100000001b3ull;
  return basis;
}

// Whether opening the device's string again reaches the same data: not where RAM holds it.
bool reopens_same_data(const Device& d) {
  const DeviceInfo info = d.describe();
  if (info.kind == "mem") return false;
  return std::all_of(info.children.begin(), info.children.end(),
                     [](const auto& c) { return reopens_same_data(*c.second); });
}

}  // namespace

Result<std::shared_ptr<Subsystem>> TargetImpl::make_subsystem(const SubsystemConfig& sc) {
  auto s = std::make_shared<Subsystem>();
  s->cfg = sc;
  s->cfg.namespaces.clear();
  // Made up from the NQN where none is given: the same at every start, whatever the order.
  s->serial = sc.serial.empty() ? fmt::format("blkcopy{:012x}", fnv1a(sc.nqn) & 0xFFFFFFFFFFFFull)
                                : sc.serial;
  s->ids.min = s->ids.next = sc.cntlid_min;
  s->ids.max = sc.cntlid_max;
  for (NamespaceConfig nc : sc.namespaces) {
    if (!nc.enable) {  // kept for `ctl save`, not served
      s->keep_disabled(nc);
      continue;
    }
    auto n = make_namespace(*s, nc);
    if (n) warn_if_shared(*s, **n);
    if (!n || !s->add(*n, nc)) {  // what was opened goes as a removed namespace does
      for (const auto& made : s->namespaces()) retire(s->remove(made->nsid));
      if (n) retire(std::move(*n));
      return n ? fail(EINVAL, fmt::format("{}: namespace ID {} is used twice", sc.nqn, nc.nsid))
               : std::unexpected(n.error());
    }
  }
  return s;
}

void TargetImpl::changed(const std::string& what) {
  log_info("serve: " + what);
  if (said_ && !reloading_) said_(what);
}

Result<std::shared_ptr<Namespace>> TargetImpl::make_namespace(const Subsystem& s,
                                                              const NamespaceConfig& nc) {
  const std::string& nqn = s.cfg.nqn;
  auto dev = open_device(home_, nc.device);
  if (!dev) return fail(dev.error().code(), fmt::format("{} namespace {}: {}", nqn, nc.nsid, dev.error().message()));
  if ((*dev)->limits().capacity < (*dev)->limits().logical_block_size) {
    return fail(EINVAL, fmt::format("{} namespace {}: {} has no whole {}-byte block to serve", nqn,
                                    nc.nsid, nc.device, (*dev)->limits().logical_block_size));
  }
  auto n = std::make_shared<Namespace>();
  Namespace& ns = *n;
  ns.nsid = nc.nsid;
  ns.dev = std::move(*dev);
  const QueueLimits& l = ns.dev->limits();
  ns.lbs = l.logical_block_size;
  ns.write_zeroes = ns.dev->supports(Op::write_zeroes);
  ns.id.block_size = ns.lbs;
  ns.id.blocks = l.capacity / ns.lbs;
  // Copy limits from the device's; a device without offload is emulated here, so the
  // host still gets generous limits (the copy never crosses the network).
  const uint64_t seg = l.can_offload() ? l.copy_segment_max_bytes : (16u << 20);
  const uint64_t total = l.can_offload() ? l.copy_max_bytes : (64u << 20);
  ns.id.mssrl = static_cast<uint16_t>(std::clamp<uint64_t>(seg / ns.lbs, 1, 65535));
  ns.id.mcl = static_cast<uint32_t>(std::clamp<uint64_t>(total / ns.lbs, ns.id.mssrl, UINT32_MAX));
  const uint32_t segs = l.can_offload() ? std::min<uint32_t>(l.copy_max_src_segments, 256) : 256;
  ns.id.msrc = static_cast<uint8_t>(std::max<uint32_t>(segs, 1) - 1);
  // NGUID: given, or made up from the subsystem, the ID and the device: the same at every
  // start, and another when the ID is given to another device (a host must not take the new
  // device for the old one: Linux keeps its cache for an unchanged identity).
  if (!nc.nguid.empty() && !parse_hex16(nc.nguid, ns.id.nguid)) {
    return fail(EINVAL, fmt::format("{} namespace {}: nguid '{}' is not 32 hex digits", nqn,
                                    nc.nsid, nc.nguid));
  }
  if (nc.nguid.empty()) {
    const std::string key = fmt::format("{}\n{}\n{}", nqn, nc.nsid, nc.device);
    const uint64_t h[2] = {fnv1a(key), fnv1a(key, 0x84222325cbf29ce4ull)};
    std::memcpy(ns.id.nguid, h, 16);
  }
  if (!nc.uuid.empty()) {
    if (!parse_hex16(nc.uuid, ns.uuid)) {
      return fail(EINVAL, fmt::format("{} namespace {}: uuid '{}' is not a UUID", nqn, nc.nsid,
                                      nc.uuid));
    }
    ns.has_uuid = true;
  }
  open_channels(nqn, ns);
  return n;
}

// Every loop but the first reaches the namespace through a channel of its own; a device
// without channels (a remote namespace) is reached by a hop to the first loop. Channels are
// only made here (no loop is touched): their loops may be running.
void TargetImpl::open_channels(const std::string& nqn, Namespace& ns) {
  for (size_t w = 1; w < workers_.size(); ++w) {
    auto ch = ns.dev->channel(*workers_[w]->loop);
    if (!ch) {
      log_info(fmt::format("serve: {} namespace {}: {}; its requests from other loops go "
                           "through the first one",
                           nqn, ns.nsid, ch.error().message()));
      ns.channels.clear();
      return;
    }
    ns.channels.push_back(std::move(*ch));
  }
}

void TargetImpl::retire(std::shared_ptr<Namespace> ns) {
  if (!ns) return;
  retiring_.push_back({std::move(ns), nullptr});
  free_retired();
}

// A namespace no request holds any more (only retiring_ does: no new hold can be taken, as
// it is in no subsystem) first sends each channel to its loop to be closed there; once all
// are closed, its device closes here. use_count() is a relaxed read; it reads 1 only after the
// last holder's decrement, which (acq_rel in libstdc++) ends that request's use.
void TargetImpl::free_retired() {
  std::erase_if(retiring_, [this](Retired& r) {
    if (r.ns.use_count() > 1) return false;
    if (!r.channels_left) {
      r.channels_left = std::make_shared<std::atomic<size_t>>(r.ns->channels.size());
      for (size_t i = 0; i < r.ns->channels.size(); ++i) {
        std::shared_ptr<Device> ch(std::move(r.ns->channels[i]));
        workers_[i + 1]->loop->post_remote([ch, left = r.channels_left]() mutable {
          ch.reset();
          --*left;
        });
      }
      r.ns->channels.clear();
    }
    return r.channels_left->load() == 0;  // the device closes as r goes
  });
}

void TargetImpl::namespace_changed(Subsystem& s, uint32_t nsid) {
  for (const Subsystems::Live& l : subsystems_.controllers(&s)) l.ctrl->namespace_changed(nsid);
}

Status TargetImpl::add_subsystem(const SubsystemConfig& sc) {
  if (subsystems_.find(sc.nqn)) return Status::error(EEXIST, fmt::format("{} is served already", sc.nqn));
  TargetConfig check = current_config();
  check.subsystems.push_back(sc);
  if (Status v = validate(check); !v.ok()) return v;
  auto s = make_subsystem(sc);
  if (!s) return s.error();
  return add_subsystem(std::move(*s));
}

Status TargetImpl::add_subsystem(std::shared_ptr<Subsystem> s) {
  const std::string nqn = s->cfg.nqn;
  const size_t namespaces = s->namespaces().size();
  if (!subsystems_.add(s)) {
    for (const auto& n : s->namespaces()) retire(s->remove(n->nsid));
    return Status::error(EEXIST, fmt::format("{} is served already", nqn));
  }
  ++discovery_generation_;
  changed(fmt::format("subsystem {} added with {} namespace(s)", nqn, namespaces));
  return {};
}

Status TargetImpl::remove_subsystem(const std::string& nqn) {
  auto s = subsystems_.remove(nqn);
  if (!s) return Status::error(ENOENT, fmt::format("no subsystem {}", nqn));
  for (const auto& n : s->namespaces()) retire(s->remove(n->nsid));
  {
    std::lock_guard lock(ports_mu_);
    for (auto& p : ports_) std::erase(p->cfg.subsystems, nqn);
  }
  ++discovery_generation_;
  changed(fmt::format("subsystem {} removed; its controllers are disconnected", nqn));
  return {};
}

Result<std::shared_ptr<Namespace>> TargetImpl::open_namespace(const std::string& nqn, NamespaceConfig& nc) {
  auto s = subsystems_.find(nqn);
  if (!s) return fail(ENOENT, fmt::format("no subsystem {}", nqn));
  if (nc.nsid == 0) {  // the first ID neither served nor staged (disabled)
    const SubsystemConfig now = s->config();
    auto used = [&](uint32_t id) {
      return std::any_of(now.namespaces.begin(), now.namespaces.end(),
                         [&](const NamespaceConfig& c) { return c.nsid == id; });
    };
    while (used(++nc.nsid)) {
    }
  }
  if (nc.nsid == 0xFFFFFFFF) return fail(EINVAL, "namespace ID FFFFFFFFh is the broadcast value");
  if (s->ns(nc.nsid)) return fail(EEXIST, fmt::format("{} has a namespace {} already", nqn, nc.nsid));
  nc.enable = true;
  TargetConfig check = current_config();  // a given NGUID or UUID naming another one, say
  for (SubsystemConfig& sc : check.subsystems) {
    if (sc.nqn != nqn) continue;
    std::erase_if(sc.namespaces, [&](const NamespaceConfig& c) { return c.nsid == nc.nsid; });
    sc.namespaces.push_back(nc);
  }
  if (Status v = validate(check); !v.ok()) return std::unexpected(v);
  return make_namespace(*s, nc);
}

Result<uint32_t> TargetImpl::add_namespace(const std::string& nqn, NamespaceConfig nc) {
  auto n = open_namespace(nqn, nc);
  if (!n) return std::unexpected(n.error());
  if (Status st = add_namespace(nqn, std::move(*n), nc); !st.ok()) return std::unexpected(st);
  return nc.nsid;
}

// A namespace opened before (open_namespace) put in: a disabled entry of its ID is replaced.
Status TargetImpl::add_namespace(const std::string& nqn, std::shared_ptr<Namespace> n,
                                 const NamespaceConfig& nc) {
  auto s = subsystems_.find(nqn);
  if (!s || !s->add(n, nc)) {
    retire(std::move(n));
    return s ? Status::error(EEXIST, fmt::format("{} has a namespace {} already", nqn, nc.nsid))
             : Status::error(ENOENT, fmt::format("no subsystem {}", nqn));
  }
  namespace_changed(*s, nc.nsid);
  changed(fmt::format("{} namespace {} added: {}", nqn, nc.nsid, nc.device));
  warn_if_shared(*s, *n);
  return {};
}

void TargetImpl::warn_if_shared(const Subsystem& s, const Namespace& n) {
  if (reloading_) return;  // a reload moving a file opens it twice for a moment
  std::vector<std::pair<const Subsystem*, std::shared_ptr<Namespace>>> others;
  for (const auto& ns : s.namespaces()) others.emplace_back(&s, ns);
  for (const auto& sub : subsystems_.all()) {
    if (sub.get() == &s) continue;
    for (const auto& ns : sub->namespaces()) others.emplace_back(sub.get(), ns);
  }
  for (const auto& [sub, other] : others) {
    if (other.get() == &n || !n.dev->same_storage(*other->dev)) continue;
    log_warning(fmt::format("serve: {} namespace {} is the same storage as {} namespace {}: hosts "
                            "cache two namespaces apart, so what is written through one may not be "
                            "seen through the other; serve it once",
                            s.cfg.nqn, n.nsid, sub->cfg.nqn, other->nsid));
  }
}

Status TargetImpl::remove_namespace(const std::string& nqn, uint32_t nsid) {
  auto s = subsystems_.find(nqn);
  if (!s) return Status::error(ENOENT, fmt::format("no subsystem {}", nqn));
  const SubsystemConfig now = s->config();
  if (!s->ns(nsid)) {
    if (std::none_of(now.namespaces.begin(), now.namespaces.end(),
                     [&](const NamespaceConfig& c) { return c.nsid == nsid; })) {
      return Status::error(ENOENT, fmt::format("{} has no namespace {}", nqn, nsid));
    }
    s->remove(nsid);  // a disabled one: out of the configuration
    changed(fmt::format("{} disabled namespace {} dropped", nqn, nsid));
    return {};
  }
  retire(s->remove(nsid));
  namespace_changed(*s, nsid);
  changed(fmt::format("{} namespace {} removed (its commands in flight finish first)",
                       nqn, nsid));
  return {};
}

Result<uint64_t> TargetImpl::resize_namespace(const std::string& nqn, uint32_t nsid) {
  auto s = subsystems_.find(nqn);
  if (!s) return fail(ENOENT, fmt::format("no subsystem {}", nqn));
  auto old = s->ns(nsid);
  if (!old) return fail(ENOENT, fmt::format("{} has no namespace {}", nqn, nsid));
  if (!reopens_same_data(*old->dev)) {
    return fail(ENOTSUP, fmt::format("{} namespace {} ({}) holds its data in memory: opening it "
                                     "again would not keep it, so it cannot be resized",
                                     nqn, nsid, old->dev->name()));
  }
  // Opened again from its configured string (name() hides secrets), with its identity.
  const SubsystemConfig now = s->config();
  auto at = std::find_if(now.namespaces.begin(), now.namespaces.end(),
                         [&](const NamespaceConfig& c) { return c.nsid == nsid; });
  if (at == now.namespaces.end()) return fail(ENOENT, fmt::format("{} has no namespace {}", nqn, nsid));
  NamespaceConfig nc = *at;
  auto n = make_namespace(*s, nc);
  if (!n && n.error().code() == EBUSY) {  // a stack that claims its storage (a clone)
    return fail(EBUSY, fmt::format("{}; such a device cannot be opened twice, so it cannot be "
                                   "resized in place: remove the namespace and add it again",
                                   n.error().message()));
  }
  if (!n) return std::unexpected(n.error());
  Namespace& fresh = **n;
  const uint64_t bytes = fresh.id.blocks * fresh.lbs;
  if (fresh.lbs != old->lbs || fresh.id.blocks == old->id.blocks) {
    const uint32_t lbs = fresh.lbs;
    retire(std::move(*n));
    if (lbs == old->lbs) return bytes;  // nothing changed: no event
    return fail(EINVAL, fmt::format("{} namespace {}: its block size changed from {} to {}; "
                                    "remove it and add it again", nqn, nsid, old->lbs, lbs));
  }
  std::memcpy(fresh.id.nguid, old->id.nguid, 16);  // the same identity: the same data, resized
  std::memcpy(fresh.uuid, old->uuid, 16);
  fresh.has_uuid = old->has_uuid;
  fresh.counters = old->counters;  // the counts go on
  auto was = s->replace(*n);
  if (was != old) {  // changed while the device opened
    if (was) s->replace(was);
    retire(std::move(*n));
    return fail(EBUSY, fmt::format("{} namespace {} changed meanwhile; nothing done", nqn, nsid));
  }
  retire(std::move(was));
  namespace_changed(*s, nsid);
  changed(fmt::format("{} namespace {} resized from {} to {} bytes", nqn, nsid,
                       old->id.blocks * old->lbs, bytes));
  return bytes;
}

Result<uint16_t> TargetImpl::add_port(const PortConfig& pc) {
  TargetConfig check = current_config();
  for (const PortConfig& p : check.ports) {
    if (p.id == pc.id) return fail(EEXIST, fmt::format("port ID {} is in use ({}:{})", pc.id, p.addr, p.port));
  }
  check.ports.push_back(pc);
  if (Status v = validate(check); !v.ok()) return std::unexpected(v);
  auto port = listen_on(pc);
  if (!port) return std::unexpected(port.error());
  const uint16_t bound = (*port)->bound;
  {
    std::lock_guard lock(ports_mu_);
    ports_.push_back(std::move(*port));
  }
  ++discovery_generation_;
  changed(fmt::format("port {} added: {}:{}", pc.id, pc.addr, bound));
  return bound;
}

Status TargetImpl::remove_port(uint16_t id) {
  std::shared_ptr<Port> port;
  {
    std::lock_guard lock(ports_mu_);
    auto it = std::find_if(ports_.begin(), ports_.end(), [&](const auto& p) { return p->cfg.id == id; });
    if (it == ports_.end()) return Status::error(ENOENT, fmt::format("no port {}", id));
    port = std::move(*it);
    ports_.erase(it);
  }
  port->removed = true;
  ::shutdown(port->fd, SHUT_RDWR);  // ends the accept in flight, which lets the listener go
  ++discovery_generation_;
  changed(fmt::format("port {} ({}:{}) removed; its connections are closed", id,
                       port->cfg.addr, port->bound));
  return {};
}

Status TargetImpl::set_port_subsystems(uint16_t id, const std::vector<std::string>& nqns) {
  for (const std::string& nqn : nqns) {
    if (!subsystems_.find(nqn)) return Status::error(ENOENT, fmt::format("no subsystem {}", nqn));
  }
  std::vector<std::string> dropped;
  {
    std::lock_guard lock(ports_mu_);
    auto it = std::find_if(ports_.begin(), ports_.end(), [&](const auto& p) { return p->cfg.id == id; });
    if (it == ports_.end()) return Status::error(ENOENT, fmt::format("no port {}", id));
    for (const std::string& had : (*it)->cfg.subsystems) {
      if (std::find(nqns.begin(), nqns.end(), had) == nqns.end()) dropped.push_back(had);
    }
    (*it)->cfg.subsystems = nqns;
  }
  // As Linux nvmet: the controllers that came through the port to a subsystem it no longer
  // serves are disconnected.
  for (const std::string& nqn : dropped) {
    auto s = subsystems_.find(nqn);
    for (const Subsystems::Live& l : s ? subsystems_.controllers(s.get()) : std::vector<Subsystems::Live>{}) {
      if (l.ctrl->port_id != id) continue;
      l.ctrl->disconnected = true;
      l.ctrl->gone = true;
    }
  }
  ++discovery_generation_;
  return {};
}

bool TargetImpl::port_serves(const std::weak_ptr<Port>& port, const std::string& nqn) const {
  auto p = port.lock();
  if (!p || p->removed) return false;
  std::lock_guard lock(ports_mu_);
  return std::find(p->cfg.subsystems.begin(), p->cfg.subsystems.end(), nqn) != p->cfg.subsystems.end();
}

TargetConfig TargetImpl::current_config() const {
  TargetConfig now = cfg_;  // hosts as ctl add-host and remove-host left them
  now.subsystems.clear();
  for (const auto& s : subsystems_.all()) now.subsystems.push_back(s->config());
  now.ports.clear();
  std::lock_guard lock(ports_mu_);
  for (const auto& p : ports_) {
    now.ports.push_back(p->cfg);
    now.ports.back().port = p->bound;
  }
  return now;
}

}  // namespace blkcopy::nvme
