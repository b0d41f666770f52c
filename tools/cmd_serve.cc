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
#include "tools/serve_config.h"

namespace blkcopy::tools {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_stats{false};
std::atomic<bool> g_reload{false};

// SIGHUP: the --config file read again and the difference applied (Target::reconfigure); a
// file that does not parse or validate changes nothing. Flags beside --config hold as at start.
void reload(const ServeArgs& a, nvme::Target& target) {
  if (a.config.empty()) {
    log_warning("serve: SIGHUP: there is no --config file to read again; nothing changed");
    return;
  }
  auto cfg = serve_config(a);
  if (!cfg) {
    log_warning(fmt::format("serve: reload: {}; nothing changed", cfg.error().message()));
    target.reload_failed(cfg.error().message());
    sd_notify("STATUS=reload failed: " + cfg.error().message());
    return;
  }
  auto changes = target.reconfigure(*cfg);
  if (!changes) {
    log_warning(fmt::format("serve: reload of {}: {}", a.config, changes.error().message()));
    sd_notify("STATUS=reload failed: " + changes.error().message());
    return;
  }
  for (const std::string& c : changes->changes) fmt::print(stderr, "blkcopy serve: reload: {}\n", c);
  for (const std::string& f : changes->failures) log_warning("serve: reload: failed: " + f);
  if (!changes->failures.empty()) {
    sd_notify(fmt::format("STATUS=reload of {}: {} change(s) failed", a.config, changes->failures.size()));
    return;
  }
  sd_notify(fmt::format("STATUS=reloaded {}", a.config));
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

int run_serve(const ServeArgs& a) {
  auto made = serve_config(a);
  if (!made) return report_error(kBadInput, made.error().message());
  nvme::TargetConfig cfg = std::move(*made);
  raise_open_file_limit(cfg.limits.max_connections);
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
      // What ctl changes goes to the operator's log (the journal under systemd), as a
      // reload's changes do, not only at -v.
      (*target)->on_control_change([](const std::string& what) {
        fmt::print(stderr, "blkcopy serve: ctl: {}\n", printable(what));
      });
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
  std::signal(SIGHUP, [](int) { g_reload = true; });
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
    if (g_reload.exchange(false)) {
      sd_notify("RELOADING=1");
      reload(a, **target);
      sd_notify("READY=1");
    }
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
  auto a = std::make_shared<ServeArgs>();
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
  // One name per idea: the DH-HMAC-CHAP secret is dhchap_secret in device strings and
  // --dhchap-secret in discover, so serve takes those names too.
  auto* host_key = cmd->add_option(
      "--host-key,--dhchap-secret", a->host_keys,
      "HOSTNQN=SECRET (or HOSTNQN=@FILE): the host must authenticate with DH-HMAC-CHAP using "
      "this DHHC-1 secret ('nvme gen-dhchap-key'); repeatable");
  auto* host_ctrl_key = cmd->add_option(
      "--host-ctrl-key,--dhchap-ctrl-secret", a->host_ctrl_keys,
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
  cmd->add_option("--discovery-port", a->discovery_port,
                  "0 turns it off (default: the --config file's, else 8009)")
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
