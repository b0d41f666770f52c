// blkcopy ctl: a running `blkcopy serve`, seen and changed through its control socket
// (JSON-RPC 2.0, one request per line: nvme/target/control_server.h).
#include <blkcopy/log.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tools/commands.h"

namespace blkcopy::tools {
namespace {

using nlohmann::json;

constexpr int kWaitMs = 30000;  // for the answer

struct CtlArgs {
  std::string socket = kDefaultControlSocket;
  bool json_out = false;
  std::string method, params = "{}";
  std::string nqn, path, subsystem, dhchap_key, dhchap_ctrl_key, tls_key;
  unsigned cntlid = 0;
  // The verbs that change what is served.
  std::string device, nguid, uuid, serial, model, address, tls = "none";
  uint32_t nsid = 0;
  uint16_t port = 0, port_id = 0;
  bool any_host = false;
  std::vector<std::string> hosts, devices, subsystems;
  std::vector<uint16_t> ports;
};

// Sends one request and returns the answer's JSON, or why there is none.
Result<json> call(const std::string& socket, const std::string& method, const json& params) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (socket.empty() || socket.size() >= sizeof a.sun_path) {
    return fail(EINVAL, fmt::format("--socket '{}': not a socket path", socket));
  }
  std::memcpy(a.sun_path, socket.data(), socket.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(errno, fmt::format("socket: {}", std::strerror(errno)));
  auto done = [fd](Result<json> r) {
    ::close(fd);
    return r;
  };
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return done(fail(errno, fmt::format("{}: {} (is `blkcopy serve --rpc {}` running, and may "
                                        "you open it?)",
                                        socket, std::strerror(errno), socket)));
  }
  const std::string line =
      json{{"jsonrpc", "2.0"}, {"method", method}, {"params", params}, {"id", 1}}.dump() + "\n";
  for (size_t off = 0; off < line.size();) {
    const ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return done(fail(errno, fmt::format("{}: send: {}", socket, std::strerror(errno))));
    off += static_cast<size_t>(n);
  }
  std::string in;
  while (in.find('\n') == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, kWaitMs);
    if (r == 0) return done(fail(ETIMEDOUT, fmt::format("{}: no answer within {} s", socket, kWaitMs / 1000)));
    if (r < 0 && errno == EINTR) continue;
    char buf[4096];
    const ssize_t n = r < 0 ? -1 : ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return done(fail(ECONNRESET, fmt::format("{}: the server closed the connection", socket)));
    in.append(buf, static_cast<size_t>(n));
  }
  try {
    return done(json::parse(in.substr(0, in.find('\n'))));
  } catch (const json::exception& e) {
    return done(fail(EPROTO, fmt::format("{}: not a JSON answer: {}", socket, e.what())));
  }
}

std::string yes(bool b) { return b ? "yes" : "no"; }

// The verb a user typed for a method: add_ns -> add-ns.
std::string verb_of(std::string method) {
  std::replace(method.begin(), method.end(), '_', '-');
  return method;
}

void print_list(const json& r) {
  for (const json& s : r["subsystems"]) {
    fmt::print("subsystem {} (serial {}, {})\n", s["nqn"].get<std::string>(),
               s["serial"].get<std::string>(),
               s["allow_any_host"].get<bool>() ? "any host"
                                               : fmt::format("hosts: {}", s["allowed_hosts"].dump()));
    for (const json& n : s["namespaces"]) {
      if (!n.value("enabled", true)) {
        fmt::print("  namespace {}: {} (disabled: not served)\n", n["nsid"].get<uint32_t>(),
                   n["device"].get<std::string>());
        continue;
      }
      fmt::print("  namespace {}: {} ({} bytes, {}-byte blocks, NGUID {})\n", n["nsid"].get<uint32_t>(),
                 n["device"].get<std::string>(), n["bytes"].get<uint64_t>(),
                 n["block_size"].get<uint32_t>(), n.value("nguid", ""));
    }
    for (const json& c : s["controllers"]) {
      fmt::print("  controller {}: host {} at {}, I/O queues {}, TLS {}, DH-HMAC-CHAP {}\n",
                 c["cntlid"].get<unsigned>(), printable(c["hostnqn"].get<std::string>()),
                 printable(c["address"].get<std::string>()), c["io_queues"].dump(), yes(c["tls"]),
                 c["dhchap"].get<bool>() ? (c["authenticated"].get<bool>() ? "authenticated" : "not yet")
                                         : "no");
    }
  }
  for (const json& p : r["ports"]) {
    fmt::print("port {}: {}:{} (TLS {}) serves {}\n", p["id"].get<unsigned>(),
               p["address"].get<std::string>(), p["port"].get<unsigned>(),
               p["tls"].get<std::string>(), p["subsystems"].dump());
  }
  for (const json& h : r["hosts"]) {
    fmt::print("host {}: DH-HMAC-CHAP {}, controller key {}, TLS key {}\n",
               printable(h["nqn"].get<std::string>()), yes(h["dhchap"]), yes(h["dhchap_ctrl"]), yes(h["tls"]));
  }
  const json& d = r["discovery"];
  const unsigned dport = d["port"].get<unsigned>();
  fmt::print("discovery: {}, {} controllers; {} connections open\n",
             dport ? fmt::format("port {}", dport) : std::string("no port of its own"),
             d["controllers"].size(), r["open_connections"].get<unsigned>());
}

int run_ctl(const CtlArgs& a, const std::string& method, const json& params) {
  auto answer = call(a.socket, method, params);
  if (!answer) {
    const int code = answer.error().code() == EINVAL ? kBadInput : kUnreachable;
    if (a.json_out) {
      fmt::print("{}\n", json{{"error", {{"code", -32000}, {"message", answer.error().message()}}}}.dump(2));
      return code;
    }
    return report_error(code, fmt::format("ctl: {}", answer.error().message()));
  }
  const json& r = *answer;
  if (r.contains("error")) {
    const int rpc = r["error"].value("code", -32000);
    // The caller's mistakes: a bad request, an unknown method or controller, a file it named
    // that cannot be written there.
    const std::string data = r["error"].value("data", "");
    const bool bad = rpc == -32602 || rpc == -32601 || rpc == -32600 ||
                     data == "ENOENT" || data == "EISDIR" || data == "ENOTDIR" || data == "EACCES" ||
                     data == "EPERM" || data == "EROFS" || data == "ENAMETOOLONG" ||
                     data == "EINVAL" || data == "EEXIST" || data == "ENOTSUP" || data == "EOPNOTSUPP" || data == "EADDRINUSE" ||
                     data == "EADDRNOTAVAIL";
    if (a.json_out) {
      fmt::print("{}\n", json{{"error", r["error"]}}.dump(2));
      return bad ? kBadInput : kIoError;
    }
    return report_error(bad ? kBadInput : kIoError,
                        fmt::format("ctl {}: {}", verb_of(method), r["error"].value("message", "failed")));
  }
  const json& result = r.contains("result") ? r["result"] : json();
  if (a.json_out) {
    fmt::print("{}\n", result.dump(2));
  } else if (method == "list") {
    print_list(result);
  } else if (method == "stats") {
    for (const auto& [k, v] : result.items()) fmt::print("{:22} {}\n", k, v.dump());
  } else if (method == "disconnect") {
    fmt::print("controller {} (host {}) disconnected\n", result["disconnected"].get<unsigned>(),
               printable(result["hostnqn"].get<std::string>()));
  } else if (method == "add_host") {
    fmt::print("host {}{}\n", printable(result["nqn"].get<std::string>()),
               result["admitted"].get<bool>() ? " admitted" : ": keys set");
  } else if (method == "remove_host") {
    fmt::print("host {} removed from {} subsystem(s), {} controller(s) disconnected{}\n",
               printable(result["nqn"].get<std::string>()), result["subsystems"].get<size_t>(),
               result["disconnected"].get<size_t>(), result["keys_removed"].get<bool>() ? ", keys removed" : "");
  } else if (method == "trace") {
    fmt::print("trace {}{}\n", result["on"].get<bool>() ? "on: " : "off",
               result["on"].get<bool>() ? result["path"].get<std::string>() : "");
  } else if (method == "save" && result.contains("config")) {
    fmt::print("{}\n", result["config"].dump(2));  // `save -`: nvmetcli JSON on stdout
  } else if (method == "save") {
    fmt::print("saved {}\n", result["saved"].get<std::string>());
  } else if (method == "add_subsystem") {
    fmt::print("subsystem {} added with {} namespace(s), on ports {}\n", a.nqn,
               result["namespaces"].get<size_t>(), result["ports"].dump());
    if (result.contains("note")) fmt::print("note: {}\n", result["note"].get<std::string>());
  } else if (method == "add_ns") {
    fmt::print("namespace {} of {} added: {}\n", result["nsid"].get<uint32_t>(), a.nqn,
               result["device"].get<std::string>());  // as serve took it (paths made absolute)
  } else if (method == "resize_ns") {
    fmt::print("namespace {} of {}: {} bytes\n", a.nsid, a.nqn, result["bytes"].get<uint64_t>());
  } else if (method == "link_port" || method == "unlink_port") {
    fmt::print("port {} serves {}\n", result["id"].get<unsigned>(), result["subsystems"].dump());
  } else if (method == "add_port") {
    fmt::print("port {} listening on {}:{}\n", result["id"].get<unsigned>(), a.address,
               result["port"].get<unsigned>());
  } else if (method.starts_with("remove_")) {
    fmt::print("removed\n");
  } else {
    fmt::print("{}\n", result.dump(2));
  }
  return kOk;
}

// The verbs that change what is served: subsystems, namespaces, ports.
template <typename Run>
void add_config_verbs(CLI::App* cmd, const std::shared_ptr<CtlArgs>& a, Run run) {
  auto* as = cmd->add_subcommand("add-subsystem", "serve a new subsystem (no host may connect "
                                                  "until admitted: --host, --allow-any-host or "
                                                  "add-host)");
  as->add_option("NQN", a->nqn, "the subsystem")->required();
  as->add_flag("--allow-any-host", a->any_host, "admit every host");
  as->add_option("--host", a->hosts, "admit this host (repeatable)");
  as->add_option("--ns", a->devices, "a device as its next namespace, IDs from 1 (repeatable)");
  as->add_option("--port", a->ports, "serve it on this port: hosts connect through it, its "
                                     "discovery entries list it (repeatable; later: link-port)");
  as->add_option("--serial", a->serial, "its serial number (default: made up)");
  as->add_option("--model", a->model, "its model number (default blkcopy)");
  as->callback([run, a] {
    json ns = json::array();
    for (const auto& d : a->devices) ns.push_back({{"device", absolute_device(d)}});
    json p = {{"nqn", a->nqn}, {"allow_any_host", a->any_host}, {"hosts", a->hosts},
              {"namespaces", ns}, {"ports", a->ports}};
    if (!a->serial.empty()) p["serial"] = a->serial;
    if (!a->model.empty()) p["model"] = a->model;
    run("add_subsystem", p);
  });
  auto* rs = cmd->add_subcommand("remove-subsystem", "stop serving a subsystem: its controllers "
                                                     "are disconnected");
  rs->add_option("NQN", a->nqn, "the subsystem")->required();
  rs->callback([run, a] { run("remove_subsystem", {{"nqn", a->nqn}}); });
  auto* an = cmd->add_subcommand("add-ns", "add a namespace: connected hosts are told (Namespace "
                                           "Attribute Changed)");
  an->add_option("NQN", a->nqn, "the subsystem")->required();
  an->add_option("DEV", a->device, "a device string (blkcopy --help lists them; a relative "
                                   "file path is made absolute)")->required();
  an->add_option("--nsid", a->nsid, "its ID (default: the first free)");
  an->add_option("--nguid", a->nguid, "32 hex digits (default: made up)");
  an->add_option("--uuid", a->uuid, "a UUID for its identification descriptors");
  an->callback([run, a] {
    json p = {{"nqn", a->nqn}, {"device", absolute_device(a->device)}};
    if (a->nsid) p["nsid"] = a->nsid;
    if (!a->nguid.empty()) p["nguid"] = a->nguid;
    if (!a->uuid.empty()) p["uuid"] = a->uuid;
    run("add_ns", p);
  });
  auto* rn = cmd->add_subcommand("remove-ns", "remove a namespace: its commands in flight finish, "
                                              "new ones fail; hosts are told");
  rn->add_option("NQN", a->nqn, "the subsystem")->required();
  rn->add_option("NSID", a->nsid, "the namespace ID")->required();
  rn->callback([run, a] { run("remove_ns", {{"nqn", a->nqn}, {"nsid", a->nsid}}); });
  auto* zn = cmd->add_subcommand("resize-ns", "serve a namespace's new size (a file grown or "
                                              "shrunk): its device is opened again; hosts are told");
  zn->add_option("NQN", a->nqn, "the subsystem")->required();
  zn->add_option("NSID", a->nsid, "the namespace ID")->required();
  zn->callback([run, a] { run("resize_ns", {{"nqn", a->nqn}, {"nsid", a->nsid}}); });
  auto* ap = cmd->add_subcommand("add-port", "listen on another address and port");
  ap->add_option("ADDRESS", a->address, "a numeric IPv4 or IPv6 address ([::1] or ::1)")->required();
  ap->add_option("PORT", a->port, "the TCP port (0: a free one)")->required();
  ap->add_option("--id", a->port_id, "its port ID (default: one above the largest)");
  ap->add_option("--tls", a->tls, "none (the default), optional or required")
      ->check(CLI::IsMember({"none", "optional", "required"}));
  ap->add_option("--subsystem", a->subsystems, "list this subsystem on it (repeatable)");
  ap->callback([run, a] {
    std::string addr = a->address;  // [::1] as --listen writes it, or ::1
    if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
    json p = {{"address", addr}, {"port", a->port}, {"tls", a->tls}, {"subsystems", a->subsystems}};
    if (a->port_id) p["id"] = a->port_id;
    run("add_port", p);
  });
  for (const bool link : {true, false}) {
    auto* lp = cmd->add_subcommand(link ? "link-port" : "unlink-port",
                                   link ? "serve a subsystem on a port too (hosts connect to it "
                                          "through the port; its discovery entries list it)"
                                        : "no longer serve a subsystem on a port: its hosts "
                                          "that came through it are disconnected");
    lp->add_option("ID", a->port_id, "the port ID (ctl list shows them)")->required();
    lp->add_option("NQN", a->nqn, "the subsystem")->required();
    lp->callback([run, a, link] { run(link ? "link_port" : "unlink_port", {{"id", a->port_id}, {"nqn", a->nqn}}); });
  }
  auto* rp = cmd->add_subcommand("remove-port", "stop listening on a port: connections that came "
                                                "through it close");
  rp->add_option("ID", a->port_id, "the port ID (ctl list shows them)")->required();
  rp->callback([run, a] { run("remove_port", {{"id", a->port_id}}); });
}

}  // namespace

void add_ctl_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("ctl", "See and change a running `blkcopy serve` through its control socket");
  auto a = std::make_shared<CtlArgs>();
  cmd->add_option("-s,--socket", a->socket, fmt::format("the control socket (default {})", kDefaultControlSocket));
  cmd->add_flag("--json", a->json_out, "print the answer as JSON");
  cmd->require_subcommand(1);
  auto run = [a, &exit_code](const std::string& method, json params) {
    exit_code = run_ctl(*a, method, params);
  };
  cmd->add_subcommand("list", "subsystems, namespaces, controllers (host, address, queues, "
                              "authentication), ports and hosts")
      ->callback([run] { run("list", json::object()); });
  cmd->add_subcommand("stats", "the target's counters")->callback([run] { run("stats", json::object()); });
  auto* disc = cmd->add_subcommand("disconnect", "end a controller and every queue of it");
  disc->add_option("NQN", a->nqn, "the subsystem")->required();
  disc->add_option("CNTLID", a->cntlid, "the controller ID (ctl list shows them)")->required();
  disc->callback([run, a] { run("disconnect", {{"nqn", a->nqn}, {"cntlid", a->cntlid}}); });
  auto* save = cmd->add_subcommand("save", "write the configuration as nvmetcli JSON (serve "
                                           "--config and nvmetcli restore read it; mode 0600: it "
                                           "holds host keys)");
  save->add_option("FILE", a->path, "where (a relative path is taken from here; - prints it: "
                                     "keys included)")->required();
  save->callback([run, a] {
    if (a->path == "-") return run("save", {{"to_caller", true}});
    run("save", {{"path", std::filesystem::absolute(a->path).string()}});
  });
  auto* add = cmd->add_subcommand("add-host", "admit a host to a subsystem and/or give it keys, "
                                             "from its next Connect on");
  add->add_option("NQN", a->nqn, "the host")->required();
  add->add_option("--subsystem", a->subsystem, "admit it to this subsystem");
  add->add_option("--dhchap-key", a->dhchap_key, "DHHC-1:..: (or @FILE): it must authenticate");
  add->add_option("--dhchap-ctrl-key", a->dhchap_ctrl_key, "DHHC-1:..: (or @FILE): the controller's");
  add->add_option("--tls-key", a->tls_key, "NVMeTLSkey-1:..: (or @FILE): its TLS PSK");
  add->callback([a, &exit_code] {
    json p = {{"nqn", a->nqn}};
    if (!a->subsystem.empty()) p["subsystem"] = a->subsystem;
    for (const auto& [name, value] : {std::pair{"dhchap_key", &a->dhchap_key},
                                      {"dhchap_ctrl_key", &a->dhchap_ctrl_key},
                                      {"tls_key", &a->tls_key}}) {
      if (value->empty()) continue;
      auto text = value->starts_with("@") ? read_secret_file(value->substr(1)) : Result<std::string>(*value);
      if (!text) {
        exit_code = report_error(kBadInput, fmt::format("ctl add-host --{}: {}", name, text.error().message()));
        return;
      }
      p[name] = *text;
    }
    exit_code = run_ctl(*a, "add_host", p);
  });
  auto* rm = cmd->add_subcommand("remove-host", "no longer admit a host (to one subsystem, or "
                                                "anywhere, with its keys) and disconnect it");
  rm->add_option("NQN", a->nqn, "the host")->required();
  rm->add_option("--subsystem", a->subsystem, "only from this subsystem");
  rm->callback([run, a] {
    json p = {{"nqn", a->nqn}};
    if (!a->subsystem.empty()) p["subsystem"] = a->subsystem;
    run("remove_host", p);
  });
  auto* trace = cmd->add_subcommand("trace", "the command trace: one JSON line per command "
                                             "(time, host, cntlid, qid, opcode, LBAs, Copy "
                                             "ranges, status, offloaded/emulated bytes, latency)");
  trace->add_option("STATE", a->method, "on or off")->required()->check(CLI::IsMember({"on", "off"}));
  trace->add_option("--file", a->path, "where (appended); default: the file it last used");
  trace->callback([run, a] {
    json p = {{"on", a->method == "on"}};
    if (!a->path.empty()) p["path"] = std::filesystem::absolute(a->path).string();
    run("trace", p);
  });
  add_config_verbs(cmd, a, run);
  auto* raw = cmd->add_subcommand("call", "any method with JSON params, its result as JSON");
  raw->add_option("METHOD", a->method)->required();
  raw->add_option("PARAMS", a->params, "a JSON object (default {})");
  raw->callback([a, &exit_code] {
    json params;
    try {
      params = json::parse(a->params);
    } catch (const json::exception& e) {
      exit_code = report_error(kBadInput, fmt::format("ctl call: PARAMS is not JSON: {}", e.what()));
      return;
    }
    CtlArgs b = *a;
    b.json_out = true;
    exit_code = run_ctl(b, a->method, params);
  });
}

}  // namespace blkcopy::tools
