// nvmetcli's JSON from a TargetConfig: what `blkcopy ctl save` writes. parse_nvmetcli_json
// reads it back to the same configuration, and its keys are the ones `nvmetcli restore` takes
// (values as strings, the way nvmetcli saves configfs attributes). What peers may cost, when
// it is not the default, goes into blkcopy's own "blkcopy" key (nvmetcli restore ignores it), as
// does the discovery port when it is not 8009.
// What nvmetcli has no key for otherwise (the discovery port, cores, --tls-libnvme1) is not in it.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <set>

#include <blkcopy/target.h>

namespace blkcopy::nvme {

using nlohmann::json;

std::string to_nvmetcli_json(const TargetConfig& cfg) {
  json hosts = json::array();
  std::set<std::string> listed;
  for (const HostConfig& h : cfg.hosts) {
    json j = {{"nqn", h.nqn}};
    if (!h.key.empty()) {
      j["dhchap"] = {{"key", h.key}, {"hash", h.hash}, {"dhgroup", h.dhgroup}};
      if (!h.ctrl_key.empty()) j["dhchap"]["ctrl_key"] = h.ctrl_key;
    }
    if (!h.tls_key.empty()) j["tls_key"] = h.tls_key;
    hosts.push_back(std::move(j));
    listed.insert(h.nqn);
  }
  // nvmetcli links allowed hosts to host entries: every allowed host has one.
  for (const SubsystemConfig& s : cfg.subsystems) {
    for (const std::string& h : s.allowed_hosts) {
      if (listed.insert(h).second) hosts.push_back({{"nqn", h}});
    }
  }
  json subsystems = json::array();
  for (const SubsystemConfig& s : cfg.subsystems) {
    json ns = json::array();
    for (const NamespaceConfig& n : s.namespaces) {
      json dev = {{"path", n.device}};
      if (!n.nguid.empty()) dev["nguid"] = n.nguid;
      if (!n.uuid.empty()) dev["uuid"] = n.uuid;
      ns.push_back({{"nsid", n.nsid}, {"enable", n.enable ? 1 : 0}, {"device", std::move(dev)}});
    }
    json attr = {{"allow_any_host", s.allow_any_host ? "1" : "0"},
                 {"model", s.model},
                 {"cntlid_min", std::to_string(s.cntlid_min)},
                 {"cntlid_max", std::to_string(s.cntlid_max)},
                 {"qid_max", std::to_string(s.qid_max)}};
    if (!s.serial.empty()) attr["serial"] = s.serial;
    subsystems.push_back({{"nqn", s.nqn},
                          {"allowed_hosts", s.allowed_hosts},
                          {"attr", std::move(attr)},
                          {"namespaces", std::move(ns)}});
  }
  json ports = json::array();
  for (const PortConfig& p : cfg.ports) {
    json addr = {{"trtype", "tcp"},
                 {"adrfam", p.addr.find(':') != std::string::npos ? "ipv6" : "ipv4"},
                 {"traddr", p.addr},
                 {"trsvcid", std::to_string(p.port)}};
    if (p.tls != PortTls::none) {
      addr["tsas"] = "tls1.3";
      addr["treq"] = p.tls == PortTls::required ? "required" : "not required";
    }
    ports.push_back({{"portid", p.id}, {"addr", std::move(addr)}, {"subsystems", p.subsystems},
                     {"referrals", json::array()}});
  }
  json out{{"hosts", std::move(hosts)}, {"ports", std::move(ports)},
           {"subsystems", std::move(subsystems)}};
  const TargetLimits d, &l = cfg.limits;
  json limits = json::object();
  if (l.data_budget != d.data_budget) limits["data_budget"] = l.data_budget;
  if (l.copy_budget != d.copy_budget) limits["copy_budget"] = l.copy_budget;
  if (l.drain_ms != d.drain_ms) limits["drain_ms"] = l.drain_ms;
  if (l.max_connections != d.max_connections) limits["max_connections"] = l.max_connections;
  if (cfg.discovery_port != TargetConfig{}.discovery_port) limits["discovery_port"] = cfg.discovery_port;
  if (!limits.empty()) out["blkcopy"] = std::move(limits);
  return out.dump(2);
}

}  // namespace blkcopy::nvme
