// The control socket's methods that change what is served (control_methods.cc lists the
// others), as nvmetcli changes Linux nvmet and rpc.py SPDK, without dropping other hosts:
//   add_subsystem    {"nqn", "allow_any_host"?, "hosts"?: [NQN], "namespaces"?: [{"device",
//                    "nsid"?}], "ports"?: [ID], "serial"?, "model"?}
//   remove_subsystem {"nqn"}: its controllers are disconnected, its namespaces freed once their
//                    commands in flight finish
//   add_ns           {"nqn", "device", "nsid"? (the first free), "nguid"?, "uuid"?}
//   remove_ns        {"nqn", "nsid"}: its commands in flight finish (with their status); new
//                    ones get Invalid Namespace
//   resize_ns        {"nqn", "nsid"}: the device opened again from its string (a file grown or
//                    shrunk); the new size is served
//   add_port         {"id"?, "address", "port", "tls"?: "none"|"optional"|"required",
//                    "subsystems"?: [NQN]}
//   remove_port      {"id"}: it stops listening; connections that came through it close
//   link_port        {"id", "nqn"}: hosts reach the subsystem through the port (and its
//                    discovery entries list it), as nvmetcli's port-subsystem link
//   unlink_port      {"id", "nqn"}: no longer; controllers that came through it are disconnected
// The namespace changes send the subsystem's controllers the Namespace Attribute Changed event.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include "nvme/target/control_server.h"
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

using nlohmann::json;

namespace {

std::vector<std::string> texts_param(const json& p, const char* name) {
  std::vector<std::string> out;
  if (!p.contains(name)) return out;
  if (!p[name].is_array()) throw json::type_error::create(302, fmt::format("{} must be an array", name), nullptr);
  for (const json& v : p[name]) {
    if (!v.is_string()) throw json::type_error::create(302, fmt::format("{} must hold strings", name), nullptr);
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<PortTls> tls_param(const json& p) {
  const std::string t = text_param(p, "tls");
  if (t.empty() || t == "none") return PortTls::none;
  if (t == "optional") return PortTls::optional;
  if (t == "required") return PortTls::required;
  return fail(EINVAL, fmt::format("tls '{}': none, optional or required", t));
}

constexpr uint64_t kMostNsid = 0xFFFFFFFE;

}  // namespace

void TargetImpl::add_config_methods(std::map<std::string, ControlServer::Method>& m) {
  m["add_subsystem"] = [this](const json& p) -> Result<json> {
    SubsystemConfig sc;
    sc.nqn = text_param(p, "nqn", true);
    sc.allow_any_host = p.value("allow_any_host", false);
    sc.allowed_hosts = texts_param(p, "hosts");
    if (std::string v = text_param(p, "serial"); !v.empty()) sc.serial = v;
    if (std::string v = text_param(p, "model"); !v.empty()) sc.model = v;
    if (p.contains("namespaces")) {
      if (!p["namespaces"].is_array()) return fail(EINVAL, "namespaces must be an array");
      for (const json& n : p["namespaces"]) {
        if (!n.is_object()) return fail(EINVAL, "each namespace is {\"device\": DEV, \"nsid\"?: N}");
        NamespaceConfig nc;
        nc.device = text_param(n, "device", true);
        nc.nsid = static_cast<uint32_t>(number_param(n, "nsid", kMostNsid, 0));
        sc.namespaces.push_back(nc);
      }
      // Those without an ID get the first ones no other takes.
      uint32_t next = 0;
      for (NamespaceConfig& nc : sc.namespaces) {
        auto taken = [&](uint32_t id) {
          return std::any_of(sc.namespaces.begin(), sc.namespaces.end(),
                             [&](const NamespaceConfig& c) { return c.nsid == id; });
        };
        if (nc.nsid) continue;
        while (taken(++next)) {
        }
        nc.nsid = next;
      }
    }
    std::vector<uint16_t> on;
    if (p.contains("ports")) {
      if (!p["ports"].is_array()) return fail(EINVAL, "ports must be an array of port IDs");
      for (const json& id : p["ports"]) on.push_back(static_cast<uint16_t>(number_param({{"port", id}}, "port", 65535)));
      std::sort(on.begin(), on.end());
      on.erase(std::unique(on.begin(), on.end()), on.end());
    }
    for (uint16_t id : on) {  // checked before anything changes
      auto all = ports();
      if (std::none_of(all.begin(), all.end(), [&](const auto& x) { return x->cfg.id == id; })) {
        return fail(ENOENT, fmt::format("no port {}", id));
      }
    }
    if (Status s = add_subsystem(sc); !s.ok()) return std::unexpected(s);
    for (uint16_t id : on) {
      for (const PortConfig& pc : current_config().ports) {
        if (pc.id != id) continue;
        std::vector<std::string> nqns = pc.subsystems;
        nqns.push_back(sc.nqn);
        (void)set_port_subsystems(id, nqns);
      }
    }
    json out{{"nqn", sc.nqn}, {"namespaces", sc.namespaces.size()}, {"ports", on}};
    if (on.empty()) {
      out["note"] = "no port serves it yet: ctl link-port ID " + sc.nqn;
    } else if (!sc.allow_any_host && sc.allowed_hosts.empty()) {
      out["note"] = "no host may connect yet: ctl add-host NQN --subsystem " + sc.nqn;
    }
    return out;
  };
  m["remove_subsystem"] = [this](const json& p) -> Result<json> {
    const std::string nqn = text_param(p, "nqn", true);
    if (Status s = remove_subsystem(nqn); !s.ok()) return std::unexpected(s);
    return json{{"removed", nqn}};
  };
  m["add_ns"] = [this](const json& p) -> Result<json> {
    const std::string nqn = text_param(p, "nqn", true);
    NamespaceConfig nc;
    nc.device = text_param(p, "device", true);
    nc.nsid = static_cast<uint32_t>(number_param(p, "nsid", kMostNsid, 0));
    nc.nguid = text_param(p, "nguid");
    nc.uuid = text_param(p, "uuid");
    auto nsid = add_namespace(nqn, nc);
    if (!nsid) return std::unexpected(nsid.error());
    return json{{"nqn", nqn}, {"nsid", *nsid}, {"device", nc.device}};
  };
  m["remove_ns"] = [this](const json& p) -> Result<json> {
    const std::string nqn = text_param(p, "nqn", true);
    const auto nsid = static_cast<uint32_t>(number_param(p, "nsid", kMostNsid));
    if (Status s = remove_namespace(nqn, nsid); !s.ok()) return std::unexpected(s);
    return json{{"nqn", nqn}, {"removed", nsid}};
  };
  m["resize_ns"] = [this](const json& p) -> Result<json> {
    const std::string nqn = text_param(p, "nqn", true);
    const auto nsid = static_cast<uint32_t>(number_param(p, "nsid", kMostNsid));
    auto bytes = resize_namespace(nqn, nsid);
    if (!bytes) return std::unexpected(bytes.error());
    return json{{"nqn", nqn}, {"nsid", nsid}, {"bytes", *bytes}};
  };
  m["add_port"] = [this](const json& p) -> Result<json> {
    PortConfig pc;
    uint16_t free_id = 1;
    for (const auto& port : ports()) free_id = std::max<uint16_t>(free_id, port->cfg.id + 1);
    pc.id = static_cast<uint16_t>(number_param(p, "id", 65535, free_id));
    pc.addr = text_param(p, "address", true);
    // Port 0 picks a free one (the answer says which).
    pc.port = p.value("port", json()) == 0 ? 0 : static_cast<uint16_t>(number_param(p, "port", 65535));
    auto tls = tls_param(p);
    if (!tls) return std::unexpected(tls.error());
    pc.tls = *tls;
    pc.subsystems = texts_param(p, "subsystems");
    auto bound = add_port(pc);
    if (!bound) return std::unexpected(bound.error());
    return json{{"id", pc.id}, {"address", pc.addr}, {"port", *bound}};
  };
  for (const bool link : {true, false}) {
    m[link ? "link_port" : "unlink_port"] = [this, link](const json& p) -> Result<json> {
      const auto id = static_cast<uint16_t>(number_param(p, "id", 65535));
      const std::string nqn = text_param(p, "nqn", true);
      for (PortConfig& pc : current_config().ports) {
        if (pc.id != id) continue;
        const bool listed = std::find(pc.subsystems.begin(), pc.subsystems.end(), nqn) != pc.subsystems.end();
        if (link == listed) {
          return fail(EEXIST, fmt::format("port {} {} {} already", id, listed ? "serves" : "does not serve", nqn));
        }
        if (link) pc.subsystems.push_back(nqn);
        if (!link) std::erase(pc.subsystems, nqn);
        if (Status s = set_port_subsystems(id, pc.subsystems); !s.ok()) return std::unexpected(s);
        changed(fmt::format("port {} {} {}", id, link ? "serves" : "no longer serves", nqn));
        return json{{"id", id}, {"subsystems", pc.subsystems}};
      }
      return fail(ENOENT, fmt::format("no port {}", id));
    };
  }
  m["remove_port"] = [this](const json& p) -> Result<json> {
    const auto id = static_cast<uint16_t>(number_param(p, "id", 65535));
    if (Status s = remove_port(id); !s.ok()) return std::unexpected(s);
    return json{{"removed", id}};
  };
}

}  // namespace blkcopy::nvme
