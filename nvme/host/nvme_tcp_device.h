// nvme-tcp://HOST:PORT/SUBSYSTEM_NQN?ns=N[&hostnqn=NQN][&digest=header,data][&kato=MS]
//   [&timeout=MS][&connect_timeout=MS][&queues=N][&depth=N][&reconnect=N][&ro]
//   [&dhchap_secret=DHHC-1:..:][&dhchap_ctrl_secret=DHHC-1:..:]
//   [&dhchap_secret_file=PATH][&dhchap_ctrl_secret_file=PATH][&dhchap_dhgroup=G1,G2,...]
//   [&tls_key=NVMeTLSkey-1:..:][&tls_key_file=PATH]
// With a TLS key every queue is TLS 1.3 with the PSK derived for this host and subsystem
// (identity "NVMe0R0h HOSTNQN SUBNQN"); a target that does not complete that handshake is
// refused, never spoken to in clear text.
// With a secret, every queue authenticates (DH-HMAC-CHAP, any hash and DH group the controller
// picks, or only the groups dhchap_dhgroup lists: ffdhe2048,... without null refuses a controller
// that skips key agreement, as a relaying impostor would) when the controller asks; with a controller secret the controller must prove itself
// too, and a controller that does not (or cannot) is refused. The _file forms keep secrets out
// of process lists.
// HOST is a name, an IPv4 address or a bracketed IPv6 address ([::1]); PORT defaults to 4420.
// Set-up (TCP connect, ICReq, Connect, Identify, each queue) runs on the loop without blocking
// it, each step within connect_timeout (default 10 s); an error names the step.
// With reconnect=N, a dropped connection fails the commands that were in flight (exact copy
// progress) and the controller reconnects with backoff (0.1 s, 0.2 s, 0.4 s, ...); requests
// made meanwhile wait and go out on the new connection, or fail once N attempts have failed.
// A namespace of a remote NVMe/TCP subsystem as a blkcopy device. Namespaces opened on one
// loop with the same address, subsystem and host NQN share one controller (one admin queue and
// `queues` I/O queues) and form one copy domain: copies between them run on the target with the
// Copy command (format 0 within a namespace, format 2 across namespaces when the controller
// offers it). A controller without Copy answers "not supported" and the engine emulates.
#pragma once

#include <blkcopy/device.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "nvme/auth/dhchap.h"
#include "nvme/auth/tls_psk.h"
#include "nvme/copy_report.h"
#include "nvme/namespace.h"
#include "nvme/spec.h"

namespace blkcopy::nvme {

struct NvmeTcpConfig {
  std::string host;
  uint16_t port = 4420;
  std::string subnqn;
  uint32_t nsid = 1;
  std::string hostnqn;  // empty: default_host_nqn()
  bool header_digest = false, data_digest = false;
  uint32_t kato_ms = 0;
  uint32_t timeout_ms = 30000;  // per command; a command without an answer fails the queue
  uint32_t connect_timeout_ms = 10000;  // each set-up step
  uint32_t depth = 128;         // I/O queue depth
  unsigned queues = 1;          // I/O queues (TCP connections), used round robin
  unsigned reconnect = 0;       // attempts to reconnect after the connection drops (0: none)
  bool read_only = false;
  std::optional<nvme::auth::Secret> dhchap_secret, dhchap_ctrl_secret;
  std::vector<uint8_t> dhchap_dhgroups;  // the DH groups accepted; empty: every group
  std::optional<nvme::auth::TlsKey> tls_key;
  bool kernel_tls = true;  // ktls=off: TLS records stay in user space
};

// Parses the part after "nvme-tcp:" ("//HOST:PORT/NQN?ns=N&...").
Result<NvmeTcpConfig> parse_nvme_tcp_config(std::string_view spec);
// The device string with inline secrets (DH-HMAC-CHAP, TLS) shown as "***" (the device's name).
std::string redact_secrets(std::string name);

class NvmeTcpController;
struct HostIo;

class NvmeTcpDevice final : public Device {
 public:
  static Result<std::unique_ptr<NvmeTcpDevice>> create(EventLoop& loop, std::string name,
                                                       const NvmeTcpConfig& cfg);
  ~NvmeTcpDevice() override;

  void submit(const Request& req, Completion done) override;
  bool supports(Op op) const override;
  bool same_copy_domain(const Device& other) const override;
  bool same_storage(const Device& other) const override;
  DeviceInfo describe() const override;

  // Bytes this device's controller sent and received on its sockets (all its namespaces).
  std::optional<WireCounters> wire_counters() const override;
  uint32_t nsid() const { return nsid_; }
  // How the target did the Copy commands of this device's controller so far, from blkcopy's
  // log page C0h (nvme/copy_report.h): `done` runs later on the loop, with ENOTSUP from a
  // target that does not keep that page (any other than blkcopy's).
  void copy_report(std::function<void(Result<TargetCopyReport>)> done);

 private:
  NvmeTcpDevice(EventLoop& loop, std::string name)
      : Device(loop, std::move(name)), label_(std::make_shared<const std::string>(this->name())) {}
  void copy(const Request& req, Completion done);
  void command(uint8_t opcode, uint64_t lba, uint32_t blocks, void* buf, bool out,
               Completion done);
  // A pooled context for a command whose completion is `end`.
  HostIo& start(Completion done, const char* op, void (*end)(HostIo&, Status, const Cqe&));
  // Sends a command on the controller; a refusal (the queue has failed) completes it later.
  void send(const Sqe& sqe, const void* out, void* in, uint32_t len, HostIo& io);

  std::shared_ptr<NvmeTcpController> ctrl_;
  NamespaceGeometry geo_;  // from Identify Namespace, for describe()
  std::shared_ptr<const std::string> label_;  // name(), shared with completions in flight
  uint32_t nsid_ = 0;
  uint32_t lbs_ = 512;
};

}  // namespace blkcopy::nvme
