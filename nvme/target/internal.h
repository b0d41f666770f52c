// The target's inside, shared by its files (not a public header). The map of the files:
//   target.cc          set-up: subsystems, namespaces and their channels, budgets, loops
//   listen.cc          listeners, accepting, the tick that closes stalled connections
//   discovery.cc       the discovery log page
//   tcp_connection.cc  the NVMe/TCP transport: PDUs in and out, R2T/H2CData, C2HData, digests
//   loopback.cc        an in-process transport (tests, the controller fuzzer)
//   queue.cc           a queue as the controller sees it: requests, budgets, dispatch
//   ops.cc             the opcode tables (dispatch and the Commands Supported and Effects log)
//   fabrics.cc         Connect, properties, authentication
//   admin.cc           Identify, Get Log Page, features, keep-alive, AER, abort
//   live_config.cc     subsystems, namespaces and ports added and removed while it runs
//   reload.cc          a new configuration applied as the difference (SIGHUP)
//   control_methods.cc the control socket's methods (control_server.h: JSON-RPC); hosts in
//                      control_hosts.cc, subsystems, namespaces and ports in control_config.cc
//   metrics.cc         the metrics endpoint: Prometheus text over HTTP (counters.h)
//   io.cc              read, write, write zeroes, flush, deallocate; copy.cc: Copy
#pragma once

#include <blkcopy/target.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/budget.h"
#include "nvme/target/auth.h"
#include "nvme/target/auth_gate.h"
#include "nvme/target/control_server.h"
#include "nvme/target/subsystem.h"
#include "nvme/target/trace.h"
#include "nvme/tcp/tls_session.h"

namespace blkcopy::nvme {

inline constexpr uint32_t kMaxH2CData = 128 * 1024;
inline constexpr uint32_t kInCapsule = 8192;       // in-capsule data on I/O queues (IOCCSZ)
inline constexpr uint32_t kMaxTransfer = 1 << 20;  // MDTS 8 with 4 KiB pages
inline constexpr uint32_t kMaxPdu = 8 + 72 + kMaxH2CData + 16 + kInCapsule;
inline constexpr uint16_t kMaxQueueSize = 128;

using Clock = std::chrono::steady_clock;

inline uint16_t st(uint16_t code, bool dnr = true) { return cqe_status(code, dnr); }

struct AtomicStats {
  std::atomic<uint64_t> connections{0}, commands{0}, read_bytes{0}, written_bytes{0};
  std::atomic<uint64_t> copies{0}, copy_offloaded_bytes{0}, copy_emulated_bytes{0}, errors{0};
  std::atomic<uint64_t> refused{0}, stalled{0}, undrained{0}, budget_waits{0}, hops{0};
};

class TcpConnection;

// A port the target listens on (or the discovery port). Accepts in flight and their retries
// hold it; the listener closes when the last of them lets go after the port is removed. Its
// connections hold it weakly: they see it removed (or gone) and close on their loop's next
// tick, and reach only the subsystems listed on it (TargetImpl::port_serves).
struct Port {
  PortConfig cfg;  // cfg.subsystems under TargetImpl::ports_mu_ (a reload changes it)
  uint16_t bound = 0;
  int fd = -1;
  std::atomic<bool> removed{false};
  Port() = default;
  Port(const Port&) = delete;
  ~Port();
};

class TargetImpl final : public Target {
 public:
  TargetImpl(EventLoop& loop, TargetConfig cfg);
  ~TargetImpl() override;

  Status init();
  Status start() override;
  TargetStats stats() const override;
  std::vector<uint16_t> bound_ports() const override;
  void serve_socket(int fd, PortTls tls) override { serve_socket(fd, tls, nullptr); }
  void serve_socket(int fd, PortTls tls, const std::shared_ptr<Port>& port);
  Result<ReloadReport> reconfigure(const TargetConfig& next) override;  // reload.cc
  void reload_failed(const std::string& why) override;
  void on_control_change(std::function<void(const std::string&)> said) override { said_ = std::move(said); }
  // A change made: logged at info, and told to on_control_change's listener unless a reload
  // made it (its report says it).
  void changed(const std::string& what);
  // Warns when `n` (of `s`) is the storage of another namespace served (SPDK refuses it, by
  // its bdev claims; here it is said).
  void warn_if_shared(const Subsystem& s, const Namespace& n);
  Status serve_control(const std::string& path) override;
  Status trace_to(const std::string& path) override {
    if (path.empty()) {
      trace_.stop();
      return {};
    }
    return trace_.start(path);
  }

  // What queues and transports use.
  EventLoop& home() { return home_; }
  unsigned loops() const { return static_cast<unsigned>(workers_.size()); }
  AtomicStats& mut_stats() { return stats_; }
  Subsystems& subsystems() { return subsystems_; }
  AuthGate& auth_gate() { return auth_gate_; }
  const TargetLimits& limits() const { return cfg_.limits; }
  bool kernel_tls() const { return cfg_.kernel_tls; }
  CommandTrace& trace() { return trace_; }
  // The metrics endpoint (metrics.cc): counted as commands complete, while it is served.
  bool counting() const { return metrics_on_.load(std::memory_order_relaxed); }
  void count(const TargetQueue& q, const TargetRequest& r, uint16_t status);
  TargetCounters& counters() { return counters_; }
  std::string prometheus();
  Result<uint16_t> serve_metrics(const std::string& addr, uint16_t port) override;
  // The keys a host must authenticate with, or none when it need not (a copy: ctl add-host
  // and remove-host change the table while the target runs).
  std::optional<HostKeys> keys_for(const std::string& hostnqn) const {
    std::lock_guard lock(keys_mu_);
    auto it = keys_.find(hostnqn);
    return it == keys_.end() ? std::nullopt : std::optional<HostKeys>(it->second);
  }
  // A warning about refused peers: at most one line a second of each kind however many there
  // are (from any loop).
  enum class Refusal { connections, clear_text, tls };
  void log_refusal(Refusal kind, const std::string& what);
  // The TLS PSK for the identity a host offers (the host has a TLS key and the identity names a
  // subsystem served here), or why there is none.
  Result<TlsSession::Psk> tls_psk(std::string_view identity);
  bool has_tls_key(const std::string& hostnqn) const {
    std::lock_guard lock(keys_mu_);
    return tls_keys_.count(hostnqn) != 0;
  }
  // The discovery log page for `host`; `local_addr` is the address its connection reached,
  // reported for ports that listen on every address.
  // The discovery log for `host`: through an I/O port (`via`), that port's subsystems, as Linux
  // nvmet lists them; through the discovery port or a socket served directly, every port's.
  std::vector<uint8_t> discovery_log(const std::string& host, const std::string& local_addr,
                                     const Port* via = nullptr) const;
  // The budgets' queues of loop `worker`, and a connection's share of each.
  BudgetQueue& data_queue(unsigned worker) { return *workers_[worker]->data_queue; }
  BudgetQueue& copy_queue(unsigned worker) { return *workers_[worker]->copy_queue; }
  uint64_t data_share() const { return cfg_.limits.data_budget / 8; }
  uint64_t copy_share() const { return cfg_.limits.copy_budget / 8; }
  // The copy budget's account for Copies that hop to loop 0 (their queue's account is on
  // another loop): used on loop 0 only.
  Account& hop_copy_account() { return *hop_copy_account_; }
  // Workers exist before start() for in-process transports (tests, the controller fuzzer): loop
  // 0 is the target's own.
  Status make_workers();

  // Live changes (live_config.cc), on the target's loop. Namespaces and subsystems that go
  // are freed once no request holds them, their channels on their own loops; the hosts of
  // their subsystem get the Namespace Attribute Changed event.
  Status add_subsystem(const SubsystemConfig& sc);
  Status add_subsystem(std::shared_ptr<Subsystem> made);  // made by make_subsystem
  Status remove_subsystem(const std::string& nqn);
  Result<uint32_t> add_namespace(const std::string& nqn, NamespaceConfig nc);  // nsid 0: the first free
  // The two halves of add_namespace: the device opened (nc gets its ID and NGUID), then served.
  Result<std::shared_ptr<Namespace>> open_namespace(const std::string& nqn, NamespaceConfig& nc);
  Status add_namespace(const std::string& nqn, std::shared_ptr<Namespace> n, const NamespaceConfig& nc);
  Status remove_namespace(const std::string& nqn, uint32_t nsid);
  // The device opened again from its string: a size that changed (a grown file) is taken.
  Result<uint64_t> resize_namespace(const std::string& nqn, uint32_t nsid);
  Result<uint16_t> add_port(const PortConfig& pc);  // the port bound
  Status remove_port(uint16_t id);
  // The port's subsystems (the discovery log's entries) set to `nqns`.
  Status set_port_subsystems(uint16_t id, const std::vector<std::string>& nqns);
  TargetConfig current_config() const;
  // Whether a host that came through `port` may connect to subsystem `nqn`: it is listed on
  // the port (as Linux nvmet links subsystems to ports), and the port is still there.
  bool port_serves(const std::weak_ptr<Port>& port, const std::string& nqn) const;
  std::vector<std::shared_ptr<Port>> ports() const {
    std::lock_guard lock(ports_mu_);
    return ports_;
  }

 private:
  // One event loop and the connections that live on it.
  struct Worker {
    EventLoop* loop = nullptr;
    std::unique_ptr<EventLoop> owned;  // null for the caller's loop
    std::thread thread;
    std::vector<std::unique_ptr<TcpConnection>> conns;  // touched on this loop only
    std::unique_ptr<BudgetQueue> data_queue, copy_queue;
    Timer tick;  // the next tick on this loop
  };
  std::map<std::string, ControlServer::Method> control_methods();  // control_methods.cc
  void add_config_methods(std::map<std::string, ControlServer::Method>& m);  // control_config.cc
  // `m` refused (EBUSY) while another change runs: opening a device (a remote namespace) runs
  // the loop, where another client's change or a reload would otherwise begin inside it.
  ControlServer::Method one_at_a_time(ControlServer::Method m);
  bool changing_ = false;  // a change (ctl or reload) is running, on the target's loop
  bool reloading_ = false;  // the change running is a reload's
  std::function<void(const std::string&)> said_;
  Result<nlohmann::json> add_host(const nlohmann::json& params);     // control_hosts.cc
  Result<nlohmann::json> remove_host(const nlohmann::json& params);
  Result<std::shared_ptr<Subsystem>> make_subsystem(const SubsystemConfig& sc);
  Result<std::shared_ptr<Namespace>> make_namespace(const Subsystem& s, const NamespaceConfig& nc);
  void open_channels(const std::string& nqn, Namespace& ns);
  void retire(std::shared_ptr<Namespace> ns);  // freed once no request holds it
  void free_retired();                        // on the target's loop's tick
  void namespace_changed(Subsystem& s, uint32_t nsid);
  Result<ReloadReport> apply(const TargetConfig& next);  // reload.cc
  Result<std::shared_ptr<Port>> listen_on(const PortConfig& pc);
  void accept_on(std::shared_ptr<Port> port);
  void adopt(Worker& w, unsigned index, int fd, PortTls tls, std::weak_ptr<Port> port, bool from_port);
  void tick(Worker& w);
  void reap(Worker& w);  // frees the connections of w that have ended
  void close_all(Worker& w);
  void run_worker(Worker& w);

  EventLoop& home_;
  TargetConfig cfg_;
  Subsystems subsystems_;
  AuthGate auth_gate_;  // before the workers: their queues' tickets end first
  mutable std::mutex keys_mu_;  // keys_ and tls_keys_: ctl add-host changes them on loop 0
  std::map<std::string, HostKeys> keys_;          // by host NQN
  std::map<std::string, auth::TlsKey> tls_keys_;  // by host NQN
  Budget data_budget_, copy_budget_;
  mutable std::mutex ports_mu_;  // ports_ and their subsystems: the discovery log reads them
  std::vector<std::shared_ptr<Port>> ports_;
  std::shared_ptr<Port> discovery_listener_;
  struct Retired {
    std::shared_ptr<Namespace> ns;
    std::shared_ptr<std::atomic<size_t>> channels_left;  // set once its channels are sent off
  };
  std::vector<Retired> retiring_;  // on the target's loop only
  std::atomic<uint64_t> discovery_generation_{1};     // the discovery log's GENCTR
  std::atomic<uint64_t> reloads_{0}, reload_failures_{0};  // reconfigure() and reload_failed()
  std::string last_reload_;                                 // its outcome, on the target's loop
  std::string last_reload() const { return last_reload_; }
  std::vector<std::unique_ptr<Worker>> workers_;  // [0]: the caller's loop
  std::unique_ptr<Account> hop_copy_account_;
  size_t next_worker_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<unsigned> workers_done_{0};  // threads whose connections are all closed
  std::atomic<unsigned> open_connections_{0};
  std::chrono::milliseconds accept_backoff_{0};
  std::atomic<int64_t> last_refusal_log_[3] = {};  // by Refusal: steady clock, ns
  std::vector<Timer> accept_timers_;  // accepts retried after running out of descriptors
  AtomicStats stats_;
  CommandTrace trace_;
  TargetCounters counters_;
  std::atomic<bool> metrics_on_{false};
  SocketServer::Ptr metrics_;
  std::unique_ptr<ControlServer> control_;  // last: it goes first
};

}  // namespace blkcopy::nvme
