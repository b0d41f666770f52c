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

std::shared_ptr<Controller> Subsystems::create(Subsystem* s, const std::string& host,
                                               bool unproven, const std::string& address,
                                               bool tls) {
  std::lock_guard lock(mu_);
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
