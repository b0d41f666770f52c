// What the JSON parser and the flags cannot check alone (validate, blkcopy/target.h), and the
// keys of a configuration as the target uses them: DH-HMAC-CHAP (host_keys) and TLS (tls_keys),
// each checked, every error naming its JSON path.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/target/auth.h"
#include <blkcopy/target.h>

namespace blkcopy::nvme {

Result<std::map<std::string, HostKeys>> host_keys(const TargetConfig& cfg) {
  std::map<std::string, HostKeys> out;
  for (size_t i = 0; i < cfg.hosts.size(); ++i) {
    const HostConfig& h = cfg.hosts[i];
    auto named = [&](std::string_view field, const Status& s) {
      return fail(EINVAL, fmt::format("hosts[{}].dhchap.{} ({}): {}", i, field, h.nqn, s.message()));
    };
    if (Status st = check_nqn(h.nqn, fmt::format("hosts[{}].nqn", i)); !st.ok()) return std::unexpected(st);
    if (h.key.empty()) continue;  // a host with a TLS key only
    HostKeys k;
    auto key = auth::parse_secret(h.key);
    if (!key) return named("key", key.error());
    k.key = *key;
    if (!h.ctrl_key.empty()) {
      auto ck = auth::parse_secret(h.ctrl_key);
      if (!ck) return named("ctrl_key", ck.error());
      k.ctrl_key = *ck;
    }
    auto hash = auth::parse_hash(h.hash);
    if (!hash) return named("hash", hash.error());
    k.hash = *hash;
    auto group = auth::parse_dhgroup(h.dhgroup);
    if (!group) return named("dhgroup", group.error());
    k.dhgroup = *group;
    if (!out.emplace(h.nqn, k).second) {
      return fail(EINVAL, fmt::format("hosts[{}].nqn: {} has keys twice", i, h.nqn));
    }
  }
  return out;
}

Result<std::map<std::string, auth::TlsKey>> tls_keys(const TargetConfig& cfg) {
  std::map<std::string, auth::TlsKey> out;
  for (size_t i = 0; i < cfg.hosts.size(); ++i) {
    const HostConfig& h = cfg.hosts[i];
    if (h.tls_key.empty()) continue;
    auto key = auth::parse_tls_key(h.tls_key);
    if (!key) return fail(EINVAL, fmt::format("hosts[{}].tls_key ({}): {}", i, h.nqn, key.error().message()));
    key->libnvme1 = h.tls_libnvme1;
    if (!out.emplace(h.nqn, *key).second) {
      return fail(EINVAL, fmt::format("hosts[{}].nqn: {} has a TLS key twice", i, h.nqn));
    }
    // The identity names the host and a subsystem; TLS holds 255 bytes of it.
    for (const std::string& sub : [&] {
           std::vector<std::string> nqns{std::string(kDiscoveryNqn)};
           for (const SubsystemConfig& sc : cfg.subsystems) nqns.push_back(sc.nqn);
           return nqns;
         }()) {
      const std::string id = auth::tls_identity(key->cipher(), h.nqn, sub);
      if (id.size() > 255) {
        return fail(EINVAL, fmt::format("hosts[{}].tls_key ({}): the TLS PSK identity for {} "
                                        "would be {} bytes, TLS allows 255: use shorter NQNs",
                                        i, h.nqn, sub, id.size()));
      }
    }
  }
  return out;
}

Status validate(const TargetConfig& cfg) {
  if (auto keys = host_keys(cfg); !keys) return keys.error();
  auto tls = tls_keys(cfg);
  if (!tls) return tls.error();
  for (size_t i = 0; i < cfg.ports.size(); ++i) {
    if (cfg.ports[i].tls != PortTls::none && tls->empty()) {
      return Status::error(EINVAL, fmt::format("ports[{}] offers TLS but no host has a TLS key "
                                               "(--tls-key HOSTNQN=KEY, hosts[].tls_key; Linux keeps "
                                               "them in its .nvme keyring, so nvmetcli's file has "
                                               "none: add hosts[].tls_key)",
                                               i));
    }
  }
  // A connection's share (an eighth) must hold the largest buffer (2 MiB) or it would wait
  // for ever. Named by both its flag and its JSON key: either may have set it.
  for (auto [flag, key, v, why] :
       {std::tuple{"--data-budget", "blkcopy.data_budget", cfg.limits.data_budget,
                   "a data buffer of up to 2 MiB"},
        {"--copy-budget", "blkcopy.copy_budget", cfg.limits.copy_budget,
         "two of an emulated Copy's 1 MiB chunks"}}) {
    if (v < kLeastBudget) {
      return Status::error(EINVAL, fmt::format("{} ({}): {} bytes is below the least, 16M (a "
                                               "connection may hold an eighth, which must hold "
                                               "{})",
                                               flag, key, v, why));
    }
  }
  std::set<std::string> nqns, ids_given;  // NGUIDs and UUIDs: each names one namespace
  // Identify's fields: printable ASCII of at most `most` bytes (nvmetcli refuses others too).
  auto text_field = [](const std::string& v, size_t most) {
    return v.size() <= most && std::all_of(v.begin(), v.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
  };
  for (size_t i = 0; i < cfg.subsystems.size(); ++i) {
    const SubsystemConfig& s = cfg.subsystems[i];
    const std::string at = fmt::format("subsystems[{}]", i);
    if (Status st = check_nqn(s.nqn, at + ".nqn"); !st.ok()) return st;
    if (s.nqn == kDiscoveryNqn) {
      return Status::error(EINVAL, fmt::format("{}.nqn: {} is the discovery subsystem's name", at, s.nqn));
    }
    if (!nqns.insert(s.nqn).second) {
      return Status::error(EINVAL, fmt::format("{}.nqn: {} is configured twice", at, s.nqn));
    }
    if (!text_field(s.serial, 20)) {
      return Status::error(EINVAL, fmt::format("{}.attr.serial '{}': at most 20 printable ASCII characters", at, s.serial));
    }
    if (!text_field(s.model, 40)) {
      return Status::error(EINVAL, fmt::format("{}.attr.model '{}': at most 40 printable ASCII characters", at, s.model));
    }
    std::set<uint32_t> ids;
    for (size_t k = 0; k < s.namespaces.size(); ++k) {
      const NamespaceConfig& n = s.namespaces[k];
      const std::string nat = fmt::format("{}.namespaces[{}]", at, k);
      uint8_t bytes[16];
      if (n.nsid == 0 || n.nsid == 0xFFFFFFFF) {
        return Status::error(EINVAL, fmt::format("{}.nsid: expected a number from 1 to 4294967294", nat));
      }
      if (!ids.insert(n.nsid).second) {
        return Status::error(EINVAL, fmt::format("{}.nsid: {} is used twice", nat, n.nsid));
      }
      if (!n.nguid.empty() && !parse_hex16(n.nguid, bytes)) {
        return Status::error(EINVAL, fmt::format("{}.device.nguid: '{}' is not 32 hex digits", nat, n.nguid));
      }
      if (!n.nguid.empty() && !ids_given.insert("g" + std::string(reinterpret_cast<char*>(bytes), 16)).second) {
        return Status::error(EINVAL, fmt::format("{}.device.nguid: {} names another namespace too", nat, n.nguid));
      }
      if (!n.uuid.empty() && !parse_hex16(n.uuid, bytes)) {
        return Status::error(EINVAL, fmt::format("{}.device.uuid: '{}' is not a UUID", nat, n.uuid));
      }
      if (!n.uuid.empty() && !ids_given.insert("u" + std::string(reinterpret_cast<char*>(bytes), 16)).second) {
        return Status::error(EINVAL, fmt::format("{}.device.uuid: {} names another namespace too", nat, n.uuid));
      }
    }
    for (size_t h = 0; h < s.allowed_hosts.size(); ++h) {
      if (Status st = check_nqn(s.allowed_hosts[h], fmt::format("{}.allowed_hosts[{}]", at, h));
          !st.ok()) {
        return st;
      }
    }
  }
  std::set<uint16_t> port_ids;
  for (size_t i = 0; i < cfg.ports.size(); ++i) {
    const PortConfig& p = cfg.ports[i];
    if (!port_ids.insert(p.id).second) {
      return Status::error(EINVAL, fmt::format("ports[{}].portid: {} is used twice", i, p.id));
    }
    socklen_t len = 0;
    if (auto a = numeric_address(p.addr, p.port, &len); !a) {
      return Status::error(EINVAL, fmt::format("ports[{}].addr.traddr: {}", i, a.error().message()));
    }
    for (size_t k = 0; k < p.subsystems.size(); ++k) {
      if (!nqns.count(p.subsystems[k])) {
        return Status::error(EINVAL, fmt::format("ports[{}].subsystems[{}]: no subsystem named {}",
                                                 i, k, p.subsystems[k]));
      }
    }
  }
  return {};
}

}  // namespace blkcopy::nvme
