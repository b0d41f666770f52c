// blkcopy serve: the NVMe/TCP target, with Copy.
#include <blkcopy/units.h>
#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <atomic>
#include <cctype>
#include <csignal>
#include <fstream>
#include <sstream>

#include "core/net.h"
#include "nvme/auth/tls_psk.h"
#include "nvme/codec.h"
#include "nvme/tcp/kernel_tls.h"
#include <blkcopy/target.h>
#include "tools/commands.h"
#include "tools/sd_notify.h"

namespace blkcopy::tools {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_stats{false};

struct Args {
  std::string listen = "127.0.0.1:4420";
  std::string nqn = "nqn.2024-01.io.blkcopy:target";
  std::vector<std::string> ns, hosts;
  std::string config;
  int discovery_port = 8009;
  int stats_every = 0;
  unsigned cores = 1;
  unsigned poll_us = 0;
  bool lenient = false;
  std::vector<std::string> host_keys, host_ctrl_keys, tls_keys;  // NQN=SECRET or NQN=@FILE
  std::vector<std::string> tls_libnvme1;  // host NQNs whose TLS PSK libnvme 1.x derives
  std::string tls;  // "required" or "optional"; empty: required when there are TLS keys
  std::string ktls = "on";  // "off": TLS records stay in user space
  std::string rpc;          // the control socket; empty: the default, where it can be made
  std::string trace;        // the command trace's file
  std::string metrics;      // ADDR:PORT of the metrics endpoint
  std::string dhchap_hash = "hmac(sha256)", dhchap_dhgroup = "null";
  unsigned max_connections = nvme::TargetLimits{}.max_connections;
  std::string data_budget, copy_budget;  // sizes; empty: the config's or the default
  unsigned drain_ms = 0;                 // 0: the config's or the default
  bool flags_with_config = false;  // --listen, --nqn, --ns or --allow-host beside --config
  bool max_connections_given = false;
  bool allow_any_host = false;  // with --host-key: hosts without a key may connect too
};

bool loopback(const std::string& addr) {
  return addr.starts_with("127.") || addr == "::1" || addr == "localhost";
}

// Who may connect, said where it is wider than a user may think: a subsystem open to any host on
// an address others can reach.
void warn_if_open(const nvme::TargetConfig& cfg) {
  for (const auto& p : cfg.ports) {
    if (loopback(p.addr)) continue;
    for (const auto& nqn : p.subsystems) {
      auto s = std::find_if(cfg.subsystems.begin(), cfg.subsystems.end(),
                            [&](const auto& sc) { return sc.nqn == nqn; });
      if (s != cfg.subsystems.end() && s->allow_any_host) {
        log_warning(fmt::format("serve: {} admits any host on {} (give --allow-host, or "
                                "allowed_hosts, to say who may connect)",
                                nqn, format_host_port(p.addr, p.port)));
      }
    }
  }
}

// Each connection is a descriptor: take every one the hard limit allows.
void raise_open_file_limit(unsigned want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < want + 64) {
    log_warning(fmt::format("serve: the open-file limit ({}) is below --max-connections {}; "
                            "connections beyond it wait until others close",
                            rl.rlim_cur, want));
  }
}

void print_stats(const nvme::TargetStats& s) {
  fmt::print(stderr,
             "blkcopy serve: {} connections, {} commands ({} errors), read {}, written {}, "
             "{} copies: offloaded {}, emulated {}; budgets: data {} (most {}), copy {} (most "
             "{}), {} waits; closed: {} stalled, {} not draining; {} cross-loop hops\n",
             s.connections, s.commands, s.errors, format_bytes(double(s.read_bytes)),
             format_bytes(double(s.written_bytes)), s.copies,
             format_bytes(double(s.copy_offloaded_bytes)),
             format_bytes(double(s.copy_emulated_bytes)), format_bytes(double(s.data_budget_used)),
             format_bytes(double(s.data_budget_high)), format_bytes(double(s.copy_budget_used)),
             format_bytes(double(s.copy_budget_high)), s.budget_waits, s.stalled_connections,
             s.undrained_connections, s.hops);
}

int run_serve(const Args& a) {
  nvme::TargetConfig cfg;
  if (!a.config.empty()) {
    if (a.flags_with_config) {
      return report_error(kBadInput, "--config describes the whole target: give --listen, --nqn, "
                                     "--ns, --allow-host, the host keys and TLS (--tls-key, "
                                     "--tls) in its JSON instead");
    }
    std::ifstream in(a.config);
    if (!in) return report_error(kBadInput, fmt::format("cannot read {}", a.config));
    std::stringstream text;
    text << in.rdbuf();
    std::vector<std::string> warnings;
    auto parsed = nvme::parse_nvmetcli_json(text.str(), a.lenient, &warnings);
    if (!parsed) return report_error(kBadInput, fmt::format("{}: {}", a.config, parsed.error().message()));
    for (const auto& w : warnings) log_warning(fmt::format("{}: {}", a.config, w));
    cfg = *parsed;
  } else {
    if (a.ns.empty()) return report_error(kBadInput, "give --ns DEV (one or more) or --config");
    auto listen = parse_host_port(a.listen, "--listen");
    if (!listen) return report_error(kBadInput, listen.error().message());
    if (Status s = nvme::check_nqn(a.nqn, "--nqn"); !s.ok()) return report_error(kBadInput, s.message());
    for (const auto& h : a.hosts) {
      if (Status s = nvme::check_nqn(h, "--allow-host"); !s.ok()) return report_error(kBadInput, s.message());
    }
    nvme::PortConfig port;
    port.addr = listen->host;
    port.port = listen->port;
    port.subsystems.push_back(a.nqn);
    cfg.ports.push_back(port);
    nvme::SubsystemConfig sub;
    sub.nqn = a.nqn;
    sub.allow_any_host = a.hosts.empty();
    sub.allowed_hosts = a.hosts;
    for (size_t i = 0; i < a.ns.size(); ++i) {
      sub.namespaces.push_back({static_cast<uint32_t>(i + 1), a.ns[i], "", true});
    }
    cfg.subsystems.push_back(sub);
    for (const auto& [flag, list] : {std::pair{"--host-key", &a.host_keys},
                                     {"--host-ctrl-key", &a.host_ctrl_keys},
                                     {"--tls-key", &a.tls_keys}}) {
      for (const std::string& item : *list) {
        const size_t eq = item.find('=');
        if (eq == std::string::npos) {
          // A key alone (the host NQN forgotten) is never echoed.
          const bool secret = item.starts_with("NVMeTLSkey-") || item.starts_with("DHHC-");
          return report_error(kBadInput, fmt::format("{} '{}': expected HOSTNQN=SECRET or HOSTNQN=@FILE{}",
                                                     flag, secret ? "***" : item,
                                                     secret ? " (the host NQN is missing)" : ""));
        }
        const std::string nqn = item.substr(0, eq);
        std::string secret = item.substr(eq + 1);
        if (secret.starts_with("@")) {
          auto text = read_secret_file(secret.substr(1));
          if (!text) return report_error(kBadInput, fmt::format("{}: {}", flag, text.error().message()));
          secret = *text;
        }
        auto it = std::find_if(cfg.hosts.begin(), cfg.hosts.end(), [&](const auto& h) { return h.nqn == nqn; });
        if (it == cfg.hosts.end()) {
          cfg.hosts.push_back({nqn, "", "", a.dhchap_hash, a.dhchap_dhgroup});
          it = std::prev(cfg.hosts.end());
        }
        const std::string_view f(flag);
        if (f == "--tls-key") {
          if (auto k = nvme::auth::parse_tls_key(secret); !k) {
            return report_error(kBadInput, fmt::format("--tls-key {}: {}", nqn, k.error().message()));
          }
        }
        std::string& slot = f == "--host-key" ? it->key : f == "--tls-key" ? it->tls_key : it->ctrl_key;
        if (!slot.empty()) return report_error(kBadInput, fmt::format("{}: {} is given twice", flag, nqn));
        slot = secret;
      }
    }
    for (const auto& h : cfg.hosts) {
      if (h.key.empty() && !h.ctrl_key.empty()) {
        return report_error(kBadInput, fmt::format("--host-ctrl-key for {} needs a --host-key for it too", h.nqn));
      }
    }
    if (!a.tls.empty() && a.tls_keys.empty()) {
      return report_error(kBadInput, "--tls needs --tls-key HOSTNQN=KEY for the hosts that may use it");
    }
    if (!a.tls_keys.empty()) {
      cfg.ports[0].tls = a.tls == "optional" ? nvme::PortTls::optional : nvme::PortTls::required;
    }
    if (a.tls == "optional" && a.hosts.empty() && !a.allow_any_host) {
      log_warning("serve: --tls optional admits only the hosts with keys, and a host with a TLS key "
                  "must use it: no host can connect in clear text (add --allow-host NQN or "
                  "--allow-any-host)");
    }
    // A target given keys admits only the keyed hosts, unless told otherwise: a key for one
    // host must not leave every other NQN reading data without one.
    if (a.hosts.empty() && !cfg.hosts.empty() && !a.allow_any_host) {
      nvme::SubsystemConfig& sub0 = cfg.subsystems[0];
      sub0.allow_any_host = false;
      for (const auto& h : cfg.hosts) sub0.allowed_hosts.push_back(h.nqn);
    }
  }
  for (const std::string& nqn : a.tls_libnvme1) {  // with --config too
    auto it = std::find_if(cfg.hosts.begin(), cfg.hosts.end(), [&](const auto& h) { return h.nqn == nqn; });
    if (it == cfg.hosts.end() || it->tls_key.empty()) {
      return report_error(kBadInput, fmt::format("--tls-libnvme1 {}: that host has no TLS key "
                                                 "(--tls-key, hosts[].tls_key)", nqn));
    }
    it->tls_libnvme1 = true;
  }
  warn_if_open(cfg);
  if (a.max_connections_given) cfg.limits.max_connections = a.max_connections;
  for (auto [flag, text, out] : {std::tuple{"--data-budget", &a.data_budget, &cfg.limits.data_budget},
                                 {"--copy-budget", &a.copy_budget, &cfg.limits.copy_budget}}) {
    if (text->empty()) continue;
    auto n = parse_size(*text);
    if (!n) return report_error(kBadInput, fmt::format("{}: {}", flag, n.error().message()));
    *out = *n;
  }
  if (a.drain_ms) cfg.limits.drain_ms = a.drain_ms;
  raise_open_file_limit(cfg.limits.max_connections);
  cfg.discovery_port = static_cast<uint16_t>(a.discovery_port);
  cfg.cores = std::max(1u, a.cores);
  cfg.busy_poll_us = a.poll_us;
  cfg.kernel_tls = a.ktls == "on";
  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  (*loop)->set_busy_poll(std::chrono::microseconds(a.poll_us));
  std::optional<HostPort> metrics_at;  // checked before anything listens
  if (!a.metrics.empty()) {
    auto hp = parse_host_port(a.metrics, "--metrics");
    if (!hp) {
      return report_error(kBadInput, fmt::format("{} (--metrics takes a numeric ADDR:PORT, such as "
                                                 "127.0.0.1:9477)",
                                                 hp.error().message()));
    }
    metrics_at = *hp;
  }
  auto target = nvme::Target::create(**loop, cfg);
  if (!target) return report_error(kBadInput, target.error().message());
  if (Status s = (*target)->start(); !s.ok()) return report_error(kIoError, s.message());
  if (metrics_at) {
    const HostPort* hp = &*metrics_at;
    auto port = (*target)->serve_metrics(hp->host, hp->port);
    if (!port) return report_error(kIoError, fmt::format("--metrics: {}", port.error().message()));
    fmt::print(stderr, "blkcopy serve: metrics on http://{}/metrics\n", format_host_port(hp->host, *port));
  }
  if (!a.trace.empty()) {
    if (Status s = (*target)->trace_to(a.trace); !s.ok()) return report_error(kIoError, s.message());
    fmt::print(stderr, "blkcopy serve: command trace into {}\n", a.trace);
  }
  // The control socket: where asked (its failure is fatal), else at the default where it can be
  // made (not as a user who may not write /run, nor beside another serve).
  if (a.rpc != "none") {
    const std::string path = a.rpc.empty() ? kDefaultControlSocket : a.rpc;
    if (Status s = (*target)->serve_control(path); !s.ok()) {
      if (!a.rpc.empty()) return report_error(kIoError, s.message());
      log_warning(fmt::format("serve: no control socket ({}); --rpc PATH puts it elsewhere",
                              s.message()));
    } else {
      fmt::print(stderr, "blkcopy serve: control socket {} (blkcopy ctl --socket {} list)\n", path, path);
    }
  }
  const auto bound = (*target)->bound_ports();
  for (size_t i = 0; i < cfg.ports.size(); ++i) {
    const auto& p = cfg.ports[i];
    for (const auto& s : p.subsystems) {
      const char* tls = p.tls == nvme::PortTls::required   ? ", TLS required"
                        : p.tls == nvme::PortTls::optional ? ", TLS optional"
                                                           : "";
      fmt::print(stderr, "blkcopy serve: {} on {} (port id {}{})\n", s,
                 format_host_port(p.addr, i < bound.size() ? bound[i] : p.port), p.id, tls);
    }
  }
  if (cfg.discovery_port) {
    fmt::print(stderr, "blkcopy serve: discovery on port {}\n", cfg.discovery_port);
  }
  if (std::any_of(cfg.ports.begin(), cfg.ports.end(), [](const auto& p) { return p.tls != nvme::PortTls::none; })) {
    const std::string why = cfg.kernel_tls ? nvme::kernel_tls_unavailable() : "--ktls off";
    fmt::print(stderr, "blkcopy serve: TLS records {}\n",
               why.empty() ? "in the kernel (kTLS) after each handshake"
                           : fmt::format("in user space ({})", why));
  }
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGUSR1, [](int) { g_stats = true; });
  std::signal(SIGPIPE, SIG_IGN);
  // Ready only once SIGTERM is handled: a service manager may stop it right after.
  if (!sd_notify(fmt::format("READY=1\nSTATUS=serving {} subsystem{}\nMAINPID={}", cfg.subsystems.size(),
                             cfg.subsystems.size() == 1 ? "" : "s", ::getpid()))) {
    log_warning("serve: could not tell the service manager it is ready (NOTIFY_SOCKET)");
  }
  auto last = std::chrono::steady_clock::now();
  nvme::TargetStats printed;  // --stats N prints only when something changed since
  Status s = (*loop)->run_until([&] {
    const auto now = std::chrono::steady_clock::now();
    const bool asked = g_stats.exchange(false);
    if (asked || (a.stats_every > 0 && now - last > std::chrono::seconds(a.stats_every))) {
      last = now;
      const nvme::TargetStats st = (*target)->stats();
      if (asked || st != printed) print_stats(st);
      printed = st;
    }
    return g_stop.load();
  });
  sd_notify("STOPPING=1");
  print_stats((*target)->stats());
  return s.ok() ? kOk : report_error(kIoError, s.message());
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve devices as NVMe/TCP namespaces with Copy");
  auto* listen = cmd->add_option("--listen", a->listen, "ADDR:PORT or [IPv6]:PORT (default 127.0.0.1:4420)");
  auto* nqn = cmd->add_option("--nqn", a->nqn, "subsystem NQN");
  auto* ns = cmd->add_option("--ns", a->ns, "a device to serve as the next namespace (repeatable)");
  auto* hosts = cmd->add_option("--allow-host", a->hosts,
                                "a host NQN allowed to connect (default: any host; with --host-key, "
                                "the hosts with keys)");
  cmd->add_flag("--allow-any-host", a->allow_any_host,
                "with --host-key: hosts without a key may connect too, unauthenticated")
      ->excludes(hosts);
  cmd->add_option("--config", a->config, "an nvmetcli JSON configuration instead of the flags");
  auto* host_key = cmd->add_option(
      "--host-key", a->host_keys,
      "HOSTNQN=SECRET (or HOSTNQN=@FILE): the host must authenticate with DH-HMAC-CHAP using "
      "this DHHC-1 secret ('nvme gen-dhchap-key'); repeatable");
  auto* host_ctrl_key = cmd->add_option(
      "--host-ctrl-key", a->host_ctrl_keys,
      "HOSTNQN=SECRET (or @FILE): the controller's secret, for hosts that check the controller");
  auto* tls_key = cmd->add_option(
      "--tls-key", a->tls_keys,
      "HOSTNQN=KEY (or HOSTNQN=@FILE): the host may connect over TLS 1.3 with this PSK "
      "(NVMeTLSkey-1:..:, 'nvme gen-tls-key'); repeatable");
  auto* tls = cmd->add_option("--tls", a->tls,
                              "with --tls-key: 'required' (default: clear text is refused) or "
                              "'optional' (hosts without TLS may connect too)")
                  ->check(CLI::IsMember({"required", "optional"}));
  cmd->add_option("--tls-libnvme1", a->tls_libnvme1,
                  "HOSTNQN: derive this host's TLS PSK as libnvme 1.x does (keys that nvme-cli "
                  "2.x, e.g. Debian 13's, put into Linux's .nvme keyring); repeatable");
  cmd->add_option("--metrics", a->metrics,
                  "serve Prometheus metrics at http://ADDR:PORT/metrics: commands, bytes, errors "
                  "and latency histograms per namespace and kind, Copy bytes offloaded vs "
                  "emulated, connections, controllers, authentication failures, budgets");
  cmd->add_option("--trace", a->trace,
                  "write one JSON line per command into this file (appended): host, queue, "
                  "opcode, LBAs, Copy ranges, status, offloaded/emulated bytes, latency; `ctl "
                  "trace on|off` switches it while running");
  cmd->add_option("--rpc", a->rpc,
                  fmt::format("the control socket for `blkcopy ctl` (JSON-RPC 2.0; default {}, "
                              "where it can be made; 'none': no socket)",
                              kDefaultControlSocket));
  cmd->add_option("--ktls", a->ktls,
                  "'on' (default): after each TLS handshake the kernel makes and opens the "
                  "records where it can (kTLS, the tls module); 'off': they stay in user space")
      ->check(CLI::IsMember({"on", "off"}));
  auto* dh_hash = cmd->add_option("--dhchap-hash", a->dhchap_hash,
                                  "hash to prefer: hmac(sha256) (default), hmac(sha384), hmac(sha512)");
  auto* dh_group = cmd->add_option("--dhchap-dhgroup", a->dhchap_dhgroup,
                                   "DH group: null (default), ffdhe2048 ... ffdhe8192");
  cmd->add_flag("--lenient", a->lenient,
                "skip unknown or unsupported keys of --config with a warning instead of refusing");
  auto* max_conns = cmd->add_option("--max-connections", a->max_connections,
                                    "connections open at once; more are closed at once (default "
                                    "4096)")
                        ->check(CLI::Range(1u, 1000000u));
  cmd->add_option("--data-budget", a->data_budget,
                  "memory for data buffers of all connections together: write data, reads in "
                  "flight, answers waiting to be sent (default 512M, at least 16M); a command "
                  "that does not fit waits");
  cmd->add_option("--copy-budget", a->copy_budget,
                  "memory for the buffers of Copies the target emulates (default 256M, at least "
                  "16M)");
  cmd->add_option("--drain-ms", a->drain_ms,
                  "close a connection whose answers have not left for this long (default 10000)")
      ->check(CLI::Range(100u, 3600000u));
  cmd->add_option("--discovery-port", a->discovery_port, "0 turns it off (default 8009)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--stats", a->stats_every,
                  "print statistics every N seconds when they changed (0, the default: only on SIGUSR1 "
                  "and at exit)")
      ->check(CLI::Range(0, 86400));
  cmd->add_option("--cores", a->cores, "event loops (threads) for connections (default 1)")
      ->check(CLI::Range(1u, 64u));
  add_poll_option(*cmd, a->poll_us, "the target's loops");
  cmd->callback([a, &exit_code, listen, nqn, ns, hosts, host_key, host_ctrl_key, tls_key, tls,
                 dh_hash, dh_group, max_conns] {
    a->max_connections_given = max_conns->count() > 0;
    a->flags_with_config = listen->count() || nqn->count() || ns->count() || hosts->count() ||
                           host_key->count() || host_ctrl_key->count() || tls_key->count() ||
                           tls->count() || dh_hash->count() || dh_group->count();
    exit_code = run_serve(*a);
  });
}

}  // namespace blkcopy::tools
