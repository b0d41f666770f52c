// blkcopy's NVMe/TCP target: subsystems with namespaces backed by blkcopy devices, ports, a
// discovery controller, and the Copy command executed locally through the copy engine.
//
// Configuration is nvmetcli's JSON (hosts, ports, subsystems with allowed_hosts,
// attr.allow_any_host, namespaces[].device.path, nguid, enable), or quick flags for one
// subsystem. Connections are spread over `cores` event loops (one thread each, the caller's loop
// first); a connection lives on one loop. Devices live on the caller's loop: requests from the
// other loops are handed over and their completions handed back.
#pragma once

#include <blkcopy/device.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace blkcopy::nvme {

struct NamespaceConfig {
  uint32_t nsid = 0;
  std::string device;  // a blkcopy device string
  std::string nguid;   // 32 hex digits, optional
  bool enable = true;
  std::string uuid;    // optional, reported in the namespace identification descriptors
};
struct SubsystemConfig {
  std::string nqn;
  bool allow_any_host = true;
  std::vector<std::string> allowed_hosts;
  std::vector<NamespaceConfig> namespaces;
};
struct PortConfig {
  uint16_t id = 1;
  std::string addr = "127.0.0.1";
  uint16_t port = 4420;
  std::vector<std::string> subsystems;
};
struct TargetConfig {
  std::vector<PortConfig> ports;
  std::vector<SubsystemConfig> subsystems;
  uint16_t discovery_port = 8009;  // 0: no separate discovery port
  unsigned cores = 1;  // event loops for connections; devices stay on the caller's loop
};

Result<TargetConfig> parse_nvmetcli_json(std::string_view text);

struct TargetStats {
  uint64_t connections = 0, commands = 0, read_bytes = 0, written_bytes = 0;
  uint64_t copies = 0, copy_offloaded_bytes = 0, copy_emulated_bytes = 0, errors = 0;
};

class Target {
 public:
  static Result<std::unique_ptr<Target>> create(EventLoop& loop, const TargetConfig& cfg);
  virtual ~Target() = default;
  // Listens on every port (and the discovery port) and starts accepting.
  virtual Status start() = 0;
  virtual TargetStats stats() const = 0;
  // The ports actually bound (port 0 in the config picks a free one).
  virtual std::vector<uint16_t> bound_ports() const = 0;
};

}  // namespace blkcopy::nvme
