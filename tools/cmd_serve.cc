// blkcopy serve: the NVMe/TCP target, with Copy.
#include <blkcopy/units.h>
#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/resource.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <sstream>

#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/target/target.h"
#include "tools/commands.h"

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
  bool lenient = false;
  unsigned max_connections = nvme::TargetLimits{}.max_connections;
  bool flags_with_config = false;  // --listen, --nqn, --ns or --allow-host beside --config
};

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
             "{} copies: offloaded {}, emulated {}\n",
             s.connections, s.commands, s.errors, format_bytes(double(s.read_bytes)),
             format_bytes(double(s.written_bytes)), s.copies,
             format_bytes(double(s.copy_offloaded_bytes)),
             format_bytes(double(s.copy_emulated_bytes)));
}

int run_serve(const Args& a) {
  nvme::TargetConfig cfg;
  if (!a.config.empty()) {
    if (a.flags_with_config) {
      return report_error(kBadInput, "--config describes the whole target: give --listen, --nqn, "
                                     "--ns and --allow-host in its JSON instead");
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
  }
  cfg.limits.max_connections = a.max_connections;
  raise_open_file_limit(a.max_connections);
  cfg.discovery_port = static_cast<uint16_t>(a.discovery_port);
  cfg.cores = std::max(1u, a.cores);
  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  auto target = nvme::Target::create(**loop, cfg);
  if (!target) return report_error(kBadInput, target.error().message());
  if (Status s = (*target)->start(); !s.ok()) return report_error(kIoError, s.message());
  const auto bound = (*target)->bound_ports();
  for (size_t i = 0; i < cfg.ports.size(); ++i) {
    const auto& p = cfg.ports[i];
    for (const auto& s : p.subsystems) {
      fmt::print(stderr, "blkcopy serve: {} on {} (port id {})\n", s,
                 format_host_port(p.addr, i < bound.size() ? bound[i] : p.port), p.id);
    }
  }
  if (cfg.discovery_port) {
    fmt::print(stderr, "blkcopy serve: discovery on port {}\n", cfg.discovery_port);
  }
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGUSR1, [](int) { g_stats = true; });
  std::signal(SIGPIPE, SIG_IGN);
  auto last = std::chrono::steady_clock::now();
  Status s = (*loop)->run_until([&] {
    const auto now = std::chrono::steady_clock::now();
    if (g_stats.exchange(false) ||
        (a.stats_every > 0 && now - last > std::chrono::seconds(a.stats_every))) {
      last = now;
      print_stats((*target)->stats());
    }
    return g_stop.load();
  });
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
  auto* hosts = cmd->add_option("--allow-host", a->hosts, "a host NQN allowed to connect (default: any)");
  cmd->add_option("--config", a->config, "an nvmetcli JSON configuration instead of the flags");
  cmd->add_flag("--lenient", a->lenient,
                "skip unknown or unsupported keys of --config with a warning instead of refusing");
  cmd->add_option("--max-connections", a->max_connections,
                  "connections open at once; more are closed at once (default 4096)")
      ->check(CLI::Range(1u, 1000000u));
  cmd->add_option("--discovery-port", a->discovery_port, "0 turns it off (default 8009)");
  cmd->add_option("--stats", a->stats_every, "print statistics every N seconds (also SIGUSR1)");
  cmd->add_option("--cores", a->cores, "event loops (threads) for connections (default 1)");
  cmd->callback([a, &exit_code, listen, nqn, ns, hosts] {
    a->flags_with_config = listen->count() || nqn->count() || ns->count() || hosts->count();
    exit_code = run_serve(*a);
  });
}

}  // namespace blkcopy::tools
