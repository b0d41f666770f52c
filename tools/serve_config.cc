// serve's configuration from its flags or its --config file (serve_config.h).
#include "tools/serve_config.h"

#include <blkcopy/log.h>
#include <blkcopy/units.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/net.h"
#include "nvme/auth/tls_psk.h"
#include "nvme/codec.h"
#include "tools/commands.h"

namespace blkcopy::tools {
namespace {

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

}  // namespace

Result<nvme::TargetConfig> serve_config(const ServeArgs& a) {
  nvme::TargetConfig cfg;
  if (!a.config.empty()) {
    if (a.flags_with_config) {
      return fail(EINVAL, "--config describes the whole target: give --listen, --nqn, "
                                     "--ns, --allow-host, the host keys and TLS (--tls-key, "
                                     "--tls) in its JSON instead");
    }
    std::ifstream in(a.config);
    if (!in) return fail(EINVAL, fmt::format("cannot read {}", a.config));
    std::stringstream text;
    text << in.rdbuf();
    std::vector<std::string> warnings;
    auto parsed = nvme::parse_nvmetcli_json(text.str(), a.lenient, &warnings);
    if (!parsed) return fail(EINVAL, fmt::format("{}: {}", a.config, parsed.error().message()));
    for (const auto& w : warnings) log_warning(fmt::format("{}: {}", a.config, w));
    cfg = *parsed;
  } else {
    if (a.ns.empty()) return fail(EINVAL, "give --ns DEV (one or more) or --config");
    auto listen = parse_host_port(a.listen, "--listen");
    if (!listen) return fail(EINVAL, listen.error().message());
    if (Status s = nvme::check_nqn(a.nqn, "--nqn"); !s.ok()) return fail(EINVAL, s.message());
    for (const auto& h : a.hosts) {
      if (Status s = nvme::check_nqn(h, "--allow-host"); !s.ok()) return fail(EINVAL, s.message());
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
      sub.namespaces.push_back({static_cast<uint32_t>(i + 1), absolute_device(a.ns[i]), "", true});
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
          return fail(EINVAL, fmt::format("{} '{}': expected HOSTNQN=SECRET or HOSTNQN=@FILE{}",
                                                     flag, secret ? "***" : item,
                                                     secret ? " (the host NQN is missing)" : ""));
        }
        const std::string nqn = item.substr(0, eq);
        std::string secret = item.substr(eq + 1);
        if (secret.starts_with("@")) {
          auto text = read_secret_file(secret.substr(1));
          if (!text) return fail(EINVAL, fmt::format("{}: {}", flag, text.error().message()));
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
            return fail(EINVAL, fmt::format("--tls-key {}: {}", nqn, k.error().message()));
          }
        }
        std::string& slot = f == "--host-key" ? it->key : f == "--tls-key" ? it->tls_key : it->ctrl_key;
        if (!slot.empty()) return fail(EINVAL, fmt::format("{}: {} is given twice", flag, nqn));
        slot = secret;
      }
    }
    for (const auto& h : cfg.hosts) {
      if (h.key.empty() && !h.ctrl_key.empty()) {
        return fail(EINVAL, fmt::format("--host-ctrl-key for {} needs a --host-key for it too", h.nqn));
      }
    }
    if (!a.tls.empty() && a.tls_keys.empty()) {
      return fail(EINVAL, "--tls needs --tls-key HOSTNQN=KEY for the hosts that may use it");
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
      return fail(EINVAL, fmt::format("--tls-libnvme1 {}: that host has no TLS key "
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
    if (!n) return fail(EINVAL, fmt::format("{}: {}", flag, n.error().message()));
    *out = *n;
  }
  if (a.drain_ms) cfg.limits.drain_ms = a.drain_ms;
  if (a.discovery_port >= 0) cfg.discovery_port = static_cast<uint16_t>(a.discovery_port);
  cfg.cores = std::max(1u, a.cores);
  cfg.busy_poll_us = a.poll_us;
  cfg.kernel_tls = a.ktls == "on";
  return cfg;
}

}  // namespace blkcopy::tools
