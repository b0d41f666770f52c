// The control socket's host methods (control_methods.cc lists them): hosts admitted and keyed
// while the target runs, as nvmetcli's hosts and allowed_hosts change Linux nvmet. A change
// holds from the next Connect (admission, DH-HMAC-CHAP) or TLS handshake on; a removed host's
// controllers are disconnected, as Linux nvmet drops them when the link is removed.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include "nvme/codec.h"
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

using nlohmann::json;


Result<json> TargetImpl::add_host(const json& p) {
  const std::string nqn = text_param(p, "nqn"), sub = text_param(p, "subsystem");
  if (Status s = check_nqn(nqn, "nqn"); !s.ok()) return std::unexpected(s);
  auto s = sub.empty() ? nullptr : subsystems_.find(sub);
  if (!sub.empty() && !s) return fail(ENOENT, fmt::format("no subsystem {}", sub));
  // The keys, checked as a configuration file's are (config_check.cc), before anything changes.
  TargetConfig one;
  HostConfig h;
  h.nqn = nqn;
  h.key = text_param(p, "dhchap_key");
  h.ctrl_key = text_param(p, "dhchap_ctrl_key");
  h.tls_key = text_param(p, "tls_key");
  if (!h.key.empty() || !h.ctrl_key.empty() || !h.tls_key.empty()) {
    one.hosts.push_back(h);
    one.subsystems = current_config().subsystems;
    auto dh = host_keys(one);
    if (!dh) return std::unexpected(dh.error());
    auto tls = tls_keys(one);
    if (!tls) return std::unexpected(tls.error());
    std::lock_guard lock(keys_mu_);
    if (dh->count(nqn)) keys_[nqn] = dh->at(nqn);
    if (tls->count(nqn)) tls_keys_[nqn] = tls->at(nqn);
    auto it = std::find_if(cfg_.hosts.begin(), cfg_.hosts.end(), [&](const auto& c) { return c.nqn == nqn; });
    if (it == cfg_.hosts.end()) it = cfg_.hosts.insert(cfg_.hosts.end(), HostConfig{nqn});
    if (!h.key.empty()) std::tie(it->key, it->ctrl_key) = std::tie(h.key, h.ctrl_key);
    if (!h.tls_key.empty()) it->tls_key = h.tls_key;
  } else if (!s) {
    return fail(EINVAL, "add_host takes a subsystem to admit the host to, or keys for it");
  }
  bool admitted = false;
  if (s) {
    admitted = s->allow(nqn, true);
    ++discovery_generation_;
  }
  changed(fmt::format("host {}{}{} (ctl add-host)", nqn, admitted ? " admitted to " + sub : "",
                       h.key.empty() && h.tls_key.empty() ? "" : ", keys set"));
  return json{{"nqn", nqn}, {"admitted", admitted}};
}

Result<json> TargetImpl::remove_host(const json& p) {
  const std::string nqn = text_param(p, "nqn"), sub = text_param(p, "subsystem");
  if (nqn.empty()) return fail(EINVAL, "remove_host takes {\"nqn\": HOST NQN, \"subsystem\"?: NQN}");
  if (!sub.empty() && !subsystems_.find(sub)) return fail(ENOENT, fmt::format("no subsystem {}", sub));
  size_t removed = 0, disconnected = 0;
  for (const auto& s : subsystems_.all()) {
    if (!sub.empty() && s->cfg.nqn != sub) continue;
    if (s->allow(nqn, false)) ++removed;
    for (const Subsystems::Live& l : subsystems_.controllers(s.get())) {
      if (l.ctrl->hostnqn != nqn) continue;
      l.ctrl->disconnected = true;
      l.ctrl->gone = true;
      ++disconnected;
    }
  }
  bool keys = false;
  if (sub.empty()) {
    std::lock_guard lock(keys_mu_);
    keys = keys_.erase(nqn) + tls_keys_.erase(nqn) > 0;
    std::erase_if(cfg_.hosts, [&](const HostConfig& h) { return h.nqn == nqn; });
  }
  ++discovery_generation_;
  if (!removed && !keys && !disconnected) return fail(ENOENT, fmt::format("host {} is not admitted or keyed here", nqn));
  changed(fmt::format("host {} removed{} (ctl remove-host): {} controller{} disconnected", nqn,
                       sub.empty() ? "" : " from " + sub, disconnected, disconnected == 1 ? "" : "s"));
  return json{{"nqn", nqn}, {"subsystems", removed}, {"keys_removed", keys}, {"disconnected", disconnected}};
}

}  // namespace blkcopy::nvme
