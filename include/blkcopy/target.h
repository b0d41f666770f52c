// blkcopy's NVMe/TCP target: subsystems with namespaces backed by blkcopy devices, ports, a
// discovery controller, and the Copy command executed locally through the copy engine.
//
// Configuration is nvmetcli's JSON (hosts, ports, subsystems with allowed_hosts,
// attr.allow_any_host, namespaces[].device.path, nguid, enable), or quick flags for one
// subsystem. Connections are spread over `cores` event loops (one thread each, the caller's loop
// first); a connection lives on one loop. Devices are opened on the caller's loop, and every
// other loop reaches them through a channel of its own (Device::channel), with no hand-over
// between threads; a device without channels (a remote namespace) is reached by handing the
// request to the caller's loop and its completion back.
#pragma once

#include <blkcopy/device.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace blkcopy::nvme {

// The least a budget may be: a connection's share (an eighth) must hold the largest buffer.
inline constexpr uint64_t kLeastBudget = 16u << 20;

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
  std::string serial;  // empty: made up from the subsystem's position
  std::string model = "blkcopy";
  uint16_t cntlid_min = 1, cntlid_max = 0xFFEF;  // controller IDs handed out
  uint16_t qid_max = 8;                          // I/O queues a controller may have
};
// A host with keys. `key` set: it must authenticate (DH-HMAC-CHAP) before any command but
// Connect: nvmetcli's hosts[].dhchap {key, ctrl_key, hash, dhgroup}, spelled as Linux's
// configfs takes them. `tls_key` set: it may reach ports with TLS (nvmetcli's hosts[].tls_key),
// and over TLS it may connect only as itself, to the subsystem its PSK identity names.
struct HostConfig {
  std::string nqn;
  std::string key;       // DHHC-1:hh:...: the host proves it holds this
  std::string ctrl_key;  // optional: the controller proves it holds this, when the host asks
  std::string hash = "hmac(sha256)";
  std::string dhgroup = "null";
  std::string tls_key;   // NVMeTLSkey-1:hh:...: ('nvme gen-tls-key'), TLS 1.3 PSK (TP 8011)
  // The TLS PSK derived as libnvme 1.x derives it (nvme-cli 2.x keys in Linux's .nvme keyring;
  // nvme/auth/tls_psk.h), not as RFC 8446 and SPDK do.
  bool tls_libnvme1 = false;
  bool operator==(const HostConfig&) const = default;
};
// NVMe/TCP over TLS 1.3 on a port (nvmetcli's addr.tsas "tls1.3" and addr.treq): none (clear
// text only), optional (a host may start TLS or speak clear text; "not required"), required
// (only TLS: anything else is refused before any NVMe/TCP PDU). The discovery port requires TLS
// when every port does, offers it when any port does, else has none.
enum class PortTls : uint8_t { none, optional, required };
struct PortConfig {
  uint16_t id = 1;
  std::string addr = "127.0.0.1";  // numeric IPv4 or IPv6; 0.0.0.0 / :: listen everywhere
  uint16_t port = 4420;            // 0 picks a free port (tests)
  std::vector<std::string> subsystems;
  PortTls tls = PortTls::none;
};
// What peers may cost and how long a peer may stall before it is closed.
//
// Memory: data buffers (write data, reads in flight, answers waiting to be sent) come from one
// budget of data_budget bytes, the buffers of the Copies the target emulates from one of
// copy_budget bytes; a command that does not fit waits for room, it never fails. No connection
// holds more than an eighth of either; an eighth of each is kept for connections that hold
// less than 256 KiB (a host reading small blocks gets room while hosts that stopped reading
// their answers wait). A connection whose answers have not left for drain_ms is closed.
struct TargetLimits {
  unsigned max_connections = 4096;   // beyond it new sockets are closed at once
  unsigned handshake_ms = 5000;      // accept -> ICReq
  unsigned connect_ms = 10000;       // accept -> fabrics Connect
  unsigned pdu_ms = 10000;           // a PDU (or data asked for by an R2T) once started
  unsigned drain_ms = 10000;         // an answer waiting to be sent, at most
  uint64_t data_budget = 512u << 20;  // bytes; at least 16 MiB
  uint64_t copy_budget = 256u << 20;  // bytes; at least 16 MiB
};
struct TargetConfig {
  std::vector<HostConfig> hosts;  // only hosts with keys need an entry
  std::vector<PortConfig> ports;
  std::vector<SubsystemConfig> subsystems;
  uint16_t discovery_port = 8009;  // 0: no separate discovery port
  unsigned cores = 1;  // event loops for connections, each with channels to the devices
  unsigned busy_poll_us = 0;  // the loops it creates spin this long before sleeping (EventLoop)
  // TLS records made and opened by the kernel (kTLS) after each handshake where it can take
  // them; false keeps them in user space (OpenSSL).
  bool kernel_tls = true;
  TargetLimits limits;
};

// nvmetcli's JSON ("nvmetcli save"), strictly: an unknown key, or a known one whose setting
// blkcopy cannot honour (TLS, PI, DH-HMAC-CHAP until it is supported), is an error naming its
// JSON path (subsystems[0].namespaces[1].nsid). With `lenient`, such keys are skipped with a
// warning added to `warnings` instead; malformed values are errors either way.
Result<TargetConfig> parse_nvmetcli_json(std::string_view text, bool lenient = false,
                                         std::vector<std::string>* warnings = nullptr);

// The configuration as nvmetcli's JSON ("nvmetcli restore" takes it; parse_nvmetcli_json reads
// it back to the same configuration). Host keys are in it: write it where only root can read.
std::string to_nvmetcli_json(const TargetConfig& cfg);

// Checks what the JSON parser and the flags cannot check alone: NQN syntax, ports naming
// subsystems that exist, port numbers and addresses. Target::create runs it too.
Status validate(const TargetConfig& cfg);

struct TargetStats {
  uint64_t connections = 0, commands = 0, read_bytes = 0, written_bytes = 0;
  uint64_t copies = 0, copy_offloaded_bytes = 0, copy_emulated_bytes = 0, errors = 0;
  uint64_t open_connections = 0;     // now
  uint64_t refused_connections = 0;  // closed at once: over the connection limit
  uint64_t stalled_connections = 0;  // closed for stalling (no ICReq/Connect, a PDU unfinished)
  uint64_t undrained_connections = 0;  // closed: their answers did not leave within drain_ms
  uint64_t data_budget_used = 0, data_budget_high = 0;  // bytes now, and the most at once
  uint64_t copy_budget_used = 0, copy_budget_high = 0;
  uint64_t budget_waits = 0;  // commands that waited for room in a budget
  uint64_t hops = 0;          // requests handed to another loop's device (no channel there)
  bool operator==(const TargetStats&) const = default;
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
  // Serves a connected stream socket as if a listener had accepted it (socket activation,
  // tests, fuzzing); takes the descriptor. Call on the loop the target was created on, after
  // start().
  virtual void serve_socket(int fd, PortTls tls = PortTls::none) = 0;
  // Opens the control socket at `path` (JSON-RPC 2.0, one request per line: `blkcopy ctl`):
  // list, stats, disconnect, save. Call on the target's loop, after start().
  virtual Status serve_control(const std::string& path) = 0;
  // The metrics endpoint: Prometheus text at http://ADDR:PORT/metrics (port 0: a free one);
  // returns the port. Call on the target's loop, after start().
  virtual Result<uint16_t> serve_metrics(const std::string& addr, uint16_t port) = 0;
  // The command trace: one JSON line per command into `path` (appended); "" stops it.
  virtual Status trace_to(const std::string& path) = 0;
  // Applies `next` as the difference from what is served (SIGHUP: the configuration file read
  // again), as the control socket's verbs would: subsystems, namespaces and ports added,
  // removed or changed, hosts admitted and keyed; other hosts' connections stay. An error:
  // nothing changed (`next` is invalid, or a new device does not open). Otherwise one line per
  // change made (settings that only a restart changes, such as limits, cores and the discovery
  // port, are said to be kept) and one per change that failed though the others were made (a
  // port that cannot listen). Call on the target's loop.
  struct ReloadReport {
    std::vector<std::string> changes, failures;
  };
  virtual Result<ReloadReport> reconfigure(const TargetConfig& next) = 0;
  // A reload that failed before reconfigure() (its file did not parse): counted with the
  // reloads for `ctl stats` (reloads, reload_failures, last_reload).
  virtual void reload_failed(const std::string& why) = 0;
  // `said` gets one line for each change the control socket makes (ctl add-ns, remove-host,
  // disconnect, ...), on the target's loop, for the operator's log (serve prints them; they are
  // also logged at info). Changes a reload makes are in its ReloadReport instead.
  virtual void on_control_change(std::function<void(const std::string&)> said) = 0;
};

}  // namespace blkcopy::nvme
