// serve's flags, and the target configuration they (or the --config file) make: read at start
// and again on SIGHUP.
#pragma once

#include <blkcopy/status.h>
#include <blkcopy/target.h>

#include <string>
#include <vector>

namespace blkcopy::tools {

struct ServeArgs {
  std::string listen = "127.0.0.1:4420";
  std::string nqn = "nqn.2024-01.io.blkcopy:target";
  std::vector<std::string> ns, hosts;
  std::string config;
  int discovery_port = -1;  // -1: not given (the --config file's, else 8009)
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

// The configuration: the --config file, or the flags, with the flags that hold beside a file
// (limits, --tls-libnvme1, cores, kTLS). Warns where a subsystem admits any host on an address
// others can reach.
Result<nvme::TargetConfig> serve_config(const ServeArgs& a);

}  // namespace blkcopy::tools
