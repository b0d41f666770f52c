// The control socket's methods (control_server.h), on the target's own loop:
//   list        subsystems with their namespaces and controllers (host NQN, address, I/O
//               queues, TLS, DH-HMAC-CHAP), ports, hosts with keys, the discovery controllers
//   stats       the counters of `serve --stats`, as numbers
//   disconnect  {"nqn", "cntlid"}: ends a controller and every queue of it (within a tick)
//   save        {"path"}: the configuration as nvmetcli JSON, mode 0600 (it holds host keys)
//   trace       {"on": true, "path"} | {"on": false}: the command trace (trace.h)
//   add_host    {"nqn", "subsystem"?, "dhchap_key"?, "dhchap_ctrl_key"?, "tls_key"?}: keys for a
//               host (from its next Connect or handshake on) and/or admits it to a subsystem
//   remove_host {"nqn", "subsystem"?}: no longer admitted there (everywhere, keys too, without
//               "subsystem"); its controllers there are disconnected
//   add_subsystem, remove_subsystem, add_ns, remove_ns, resize_ns, add_port, remove_port:
//               control_config.cc
#include <blkcopy/log.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "nvme/target/control_server.h"
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

using nlohmann::json;

namespace {

const char* tls_name(PortTls t) {
  return t == PortTls::required ? "required" : t == PortTls::optional ? "optional" : "none";
}

json controllers_of(Subsystems& subs, Subsystem* s) {
  json out = json::array();
  for (const Subsystems::Live& l : subs.controllers(s)) {
    const Controller& c = *l.ctrl;
    out.push_back({{"cntlid", c.cntlid},
                   {"hostnqn", c.hostnqn},
                   {"address", c.address},
                   {"io_queues", l.io_queues},
                   {"tls", c.tls},
                   {"dhchap", c.dhchap},
                   {"authenticated", c.dhchap && !c.unproven},
                   {"enabled", (c.cc & 1) != 0},
                   {"kato_ms", c.kato_ms.load()}});
  }
  return out;
}

// Writes `text` to `path` whole or not at all: into a new file of mode 0600 beside it, synced,
// then renamed over it. Only a regular file (or nothing) may be there: not a symbolic link, a
// FIFO the loop would block on, or a device.
Status write_private(const std::string& path, const std::string& text) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return Status::error(EINVAL, fmt::format("{}: not a regular file", path));
  }
  const std::string tmp = path + ".blkcopy-new";
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::error(errno, fmt::format("{}: {}", path, std::strerror(errno)));
  auto failed = [&](int e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::error(e, fmt::format("{}: {}", path, std::strerror(e)));
  };
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return failed(n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0) return failed(errno);
  if (::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return Status::error(e, fmt::format("{}: {}", path, std::strerror(e)));
  }
  return {};
}

}  // namespace

std::map<std::string, ControlServer::Method> TargetImpl::control_methods() {
  std::map<std::string, ControlServer::Method> m;
  m["list"] = [this](const json&) -> Result<json> {
    json subs = json::array();
    for (const auto& s : subsystems_.all()) {
      json ns = json::array();
      for (const auto& n : s->namespaces()) {
        ns.push_back({{"nsid", n->nsid}, {"device", n->dev->name()}, {"bytes", n->id.blocks * n->lbs},
                      {"block_size", n->lbs}, {"enabled", true},
                      {"nguid", fmt::format("{:02x}", fmt::join(n->id.nguid, ""))}});
      }
      for (const NamespaceConfig& c : s->config().namespaces) {  // staged, not served
        if (!c.enable) ns.push_back({{"nsid", c.nsid}, {"device", c.device}, {"enabled", false}});
      }
      subs.push_back({{"nqn", s->cfg.nqn},
                      {"serial", s->serial},
                      {"allow_any_host", s->allows_any_host()},
                      {"allowed_hosts", s->allowed_hosts()},
                      {"namespaces", std::move(ns)},
                      {"controllers", controllers_of(subsystems_, s.get())}});
    }
    json ports = json::array();
    for (const PortConfig& p : current_config().ports) {
      ports.push_back({{"id", p.id},
                       {"address", p.addr},
                       {"port", p.port},
                       {"tls", tls_name(p.tls)},
                       {"subsystems", p.subsystems}});
    }
    json hosts = json::array();
    for (const HostConfig& h : cfg_.hosts) {
      hosts.push_back({{"nqn", h.nqn},
                       {"dhchap", !h.key.empty()},
                       {"dhchap_ctrl", !h.ctrl_key.empty()},
                       {"tls", !h.tls_key.empty()}});
    }
    return json{{"subsystems", std::move(subs)},
                {"ports", std::move(ports)},
                {"hosts", std::move(hosts)},
                {"discovery", {{"port", cfg_.discovery_port},
                               {"controllers", controllers_of(subsystems_, nullptr)}}},
                {"open_connections", open_connections_.load()},
                {"pid", ::getpid()}};
  };
  m["stats"] = [this](const json&) -> Result<json> {
    const TargetStats s = stats();
    return json{{"connections", s.connections},
                {"open_connections", s.open_connections},
                {"refused_connections", s.refused_connections},
                {"commands", s.commands},
                {"errors", s.errors},
                {"read_bytes", s.read_bytes},
                {"written_bytes", s.written_bytes},
                {"copies", s.copies},
                {"copy_offloaded_bytes", s.copy_offloaded_bytes},
                {"copy_emulated_bytes", s.copy_emulated_bytes},
                {"reloads", reloads_.load()},
                {"reload_failures", reload_failures_.load()},
                {"last_reload", last_reload()}};
  };
  m["disconnect"] = [this](const json& p) -> Result<json> {
    if (!p.contains("nqn") || !p["nqn"].is_string() || !p.contains("cntlid") ||
        !p["cntlid"].is_number_unsigned()) {
      return fail(EINVAL, "disconnect takes {\"nqn\": SUBSYSTEM NQN, \"cntlid\": N}");
    }
    const std::string nqn = p["nqn"];
    const uint64_t id = p["cntlid"];
    auto s = nqn == kDiscoveryNqn ? nullptr : subsystems_.find(nqn);
    if (!s && nqn != kDiscoveryNqn) return fail(ENOENT, fmt::format("no subsystem {}", nqn));
    for (const Subsystems::Live& l : subsystems_.controllers(s.get())) {
      if (l.ctrl->cntlid != id) continue;
      l.ctrl->disconnected = true;
      l.ctrl->gone = true;  // every queue of it closes on its loop's next tick
      changed(fmt::format("controller {} of {} (host {}) disconnected by the operator",
                           id, nqn, l.ctrl->hostnqn));
      return json{{"disconnected", id}, {"hostnqn", l.ctrl->hostnqn}};
    }
    return fail(ENOENT, fmt::format("no controller {} in {}", id, nqn));
  };
  m["trace"] = [this](const json& p) -> Result<json> {
    if (!p.contains("on") || !p["on"].is_boolean()) {
      return fail(EINVAL, "trace takes {\"on\": true, \"path\": FILE} or {\"on\": false}");
    }
    if (!p["on"].get<bool>()) {
      const std::string was = trace_.path();
      trace_.stop();
      return json{{"on", false}, {"path", was}};
    }
    std::string path = p.value("path", std::string());
    if (path.empty()) path = trace_.path();
    if (path.empty()) {
      return fail(EINVAL, "trace on needs a file the first time (ctl trace on --file FILE; params "
                          "{\"on\": true, \"path\": FILE})");
    }
    if (Status st = trace_.start(path); !st.ok()) return std::unexpected(st);
    changed(fmt::format("command trace into {}", path));
    return json{{"on", true}, {"path", path}};
  };
  m["add_host"] = [this](const json& p) -> Result<json> { return add_host(p); };
  m["remove_host"] = [this](const json& p) -> Result<json> { return remove_host(p); };
  add_config_methods(m);
  for (const char* change : {"add_host", "remove_host", "add_subsystem", "remove_subsystem", "add_ns",
                             "remove_ns", "resize_ns", "add_port", "remove_port", "link_port",
                             "unlink_port"}) {
    m[change] = one_at_a_time(std::move(m[change]));
  }
  m["save"] = [this](const json& p) -> Result<json> {
    // {"to_caller": true}: the configuration comes back in the answer (`ctl save -`).
    if (p.contains("to_caller") && p["to_caller"] == true) {
      return json{{"config", json::parse(to_nvmetcli_json(current_config()))}};
    }
    if (!p.contains("path") || !p["path"].is_string() || p["path"].get<std::string>().empty()) {
      return fail(EINVAL, "save takes {\"path\": FILE} or {\"to_caller\": true}");
    }
    const std::string path = p["path"];
    if (Status st = write_private(path, to_nvmetcli_json(current_config()) + "\n"); !st.ok()) {
      return std::unexpected(st);
    }
    return json{{"saved", path}};
  };
  return m;
}

ControlServer::Method TargetImpl::one_at_a_time(ControlServer::Method m) {
  return [this, m = std::move(m)](const json& p) -> Result<json> {
    if (changing_) return fail(EBUSY, "another change (ctl or a reload) is in progress; try again");
    changing_ = true;
    struct Done {
      bool& flag;
      ~Done() { flag = false; }
    } done{changing_};
    return m(p);
  };
}

Status TargetImpl::serve_control(const std::string& path) {
  auto s = ControlServer::listen(home_, path, control_methods());
  if (!s) return s.error();
  control_ = std::move(*s);
  return {};
}

}  // namespace blkcopy::nvme
