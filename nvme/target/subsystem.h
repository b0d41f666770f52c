// What the target serves and who is connected: namespaces (a device, its channel on each event
// loop and the Identify values the host sees), subsystems, controllers and their IDs.
#pragma once

#include <blkcopy/target.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "nvme/codec.h"
#include "nvme/target/counters.h"

namespace blkcopy::nvme {

// A namespace: a blkcopy device with the Identify values the host sees. The device lives on the
// target's first loop; `channels[w]` reaches it from loop w without a hop between threads (the
// device itself for loop 0; nullptr where the device has no channels: requests from that loop
// then hop to loop 0 and back).
struct Namespace {
  uint32_t nsid = 0;
  std::unique_ptr<Device> dev;
  std::vector<std::unique_ptr<Device>> channels;  // [w] for w >= 1
  NamespaceIdentity id;
  uint32_t lbs = 512;
  uint8_t uuid[16] = {};
  bool has_uuid = false;
  bool write_zeroes = false;  // the device zeroes itself; else the target writes zeroes
  // Shared with the namespace that replaces it (ctl resize-ns): the counts go on.
  std::shared_ptr<NamespaceCounters> counters = std::make_shared<NamespaceCounters>();

  // The device as loop `worker` reaches it, or nullptr when that loop must hop to loop 0.
  Device* on(unsigned worker) const {
    if (worker == 0) return dev.get();
    return worker - 1 < channels.size() ? channels[worker - 1].get() : nullptr;
  }
};

// Shared by the queues of one controller, which may live on different loops: fields that
// change are atomic; `io_queues` is under Subsystems::mu_. Queues hold it by shared_ptr, so it
// outlives the last of them even when its ID is released.
struct Controller {
  uint16_t cntlid = 0;
  std::shared_ptr<struct Subsystem> subsys;  // nullptr: the discovery controller
  std::string hostnqn;
  std::string address;  // the admin queue's peer
  uint16_t port_id = 0;  // the port its admin queue came through (0: none, served directly)
  bool tls = false;     // its admin queue came over TLS
  bool dhchap = false;  // its host must authenticate (DH-HMAC-CHAP)
  std::atomic<bool> disconnected{false};  // by the operator (`ctl disconnect`)
  std::atomic<uint32_t> cc{0}, csts{0};
  std::atomic<uint32_t> kato_ms{0};
  std::atomic<uint16_t> queues{1};   // I/O queues granted (Set Features Number of Queues)
  std::atomic<bool> format2{false};  // Host Behavior Support: copy format 2 enabled
  // Features a host may read back after setting them: Arbitration (01h), Temperature Threshold
  // (04h: the composite's over and under thresholds, kelvin) and Error Recovery (05h).
  std::atomic<uint32_t> arbitration{0}, temp_over{343}, temp_under{0}, error_recovery{0};
  std::atomic<int64_t> last_seen{0};  // steady_clock nanoseconds
  std::set<uint16_t> io_queues;       // connected I/O queue IDs, under Subsystems::mu_
  std::atomic<bool> gone{false};      // the admin queue closed: its I/O queues close too
  // Its host has keys and its admin queue has not authenticated yet: it holds its ID only until
  // a host that needs one finds none free (Subsystems::create).
  std::atomic<bool> unproven{false};
  std::atomic<bool> authenticating{false};  // its admin queue has begun a handshake: kept
  std::atomic<uint32_t> aen_config{0};  // Asynchronous Event Configuration (feature 0Bh)
  // Its Copy commands so far, and how their bytes were copied: blkcopy's log page C0h
  // (nvme/copy_report.h) tells its host.
  std::atomic<uint64_t> copies{0}, copy_device_bytes{0}, copy_emulated_bytes{0};
  void seen() { last_seen = std::chrono::steady_clock::now().time_since_epoch().count(); }

  // Namespace Attribute Changed (added, removed or resized): the namespace joins the Changed
  // Namespace List (log 04h) and, unless one was sent that the host has not read the log since,
  // an event waits for the admin queue to send it (NVMe 2.0 5.2: masked until the log is read).
  void namespace_changed(uint32_t nsid);
  // The event to send on an Asynchronous Event Request now, if one waits and the host enabled
  // it; it is then masked.
  bool take_namespace_event();
  // Log 04h: up to 1024 namespace IDs (FFFFFFFFh first when more changed); `clear` (RAE 0)
  // empties the list and unmasks the event.
  std::vector<uint32_t> changed_namespaces(bool clear);

 private:
  std::mutex events_mu_;
  std::vector<uint32_t> changed_;  // sorted
  bool changed_overflow_ = false, event_waiting_ = false, event_masked_ = false;
};

// The controllers of one subsystem (or of discovery) by ID. IDs come from [min, max] and are
// never handed out again while their controller lives: a new host cannot take over another's
// queues by guessing or exhausting IDs.
struct ControllerIds {
  uint16_t min = 1, max = 0xFFEF;
  uint16_t next = 1;
  std::map<uint16_t, std::shared_ptr<Controller>> live;

  // A free ID, searched from after the last one handed out; nullopt when all are live.
  std::optional<uint16_t> take();
};

// A subsystem: its namespaces change while the target runs (ctl add-ns, remove-ns, resize-ns),
// so requests take a namespace by shared_ptr, which keeps it (and its device) while they run.
struct Subsystem {
  SubsystemConfig cfg;  // allowed hosts and namespaces under locks: read them through the methods
  std::string serial;
  ControllerIds ids;
  std::atomic<bool> removed{false};  // set under Subsystems::mu_: no controller is made for it

  bool allows(const std::string& host) const;
  // Admits (or no longer admits) `host`; false when it already was (or was not) admitted.
  bool allow(const std::string& host, bool yes);
  bool allows_any_host() const;
  std::vector<std::string> allowed_hosts() const;
  void set_hosts(bool any, std::vector<std::string> hosts);  // reload.cc

  std::shared_ptr<Namespace> ns(uint32_t nsid) const;
  std::vector<std::shared_ptr<Namespace>> namespaces() const;  // by namespace ID
  uint32_t largest_nsid() const;
  // Adds `n` (with its configuration), or replaces the namespace of its ID (returned); false
  // / nullptr when `replace` does not match whether the ID is in use.
  bool add(std::shared_ptr<Namespace> n, const NamespaceConfig& nc);
  // A disabled namespace (nvmetcli's "enable": 0): in the configuration, not served; false when
  // its ID is served.
  bool keep_disabled(const NamespaceConfig& nc);
  std::shared_ptr<Namespace> replace(std::shared_ptr<Namespace> n);
  // Takes the namespace out (nullptr when it is not served) and its entry, disabled or not,
  // out of the configuration.
  std::shared_ptr<Namespace> remove(uint32_t nsid);
  SubsystemConfig config() const;  // as it is now

 private:
  mutable std::mutex hosts_mu_, ns_mu_;
  std::map<uint32_t, std::shared_ptr<Namespace>> ns_;
};


// Every subsystem and the controllers connected to them: controllers are made, joined by I/O
// queues and dropped from any loop, subsystems added and removed while the target runs (ctl),
// all under one lock.
class Subsystems {
 public:
  std::vector<std::shared_ptr<Subsystem>> all() const;  // by NQN
  std::shared_ptr<Subsystem> find(const std::string& nqn) const;
  bool add(std::shared_ptr<Subsystem> s);  // false: its NQN is taken
  // Takes it out: no controller is made for it from now on; those it has are disconnected.
  std::shared_ptr<Subsystem> remove(const std::string& nqn);
  // A new controller for `host` (on the admin queue's Connect); nullptr when every controller
  // ID of the subsystem is in use by controllers that have authenticated (or need not): the
  // oldest one still unproven that has not begun to authenticate gives its ID up first. `s` nullptr: the discovery subsystem.
  std::shared_ptr<Controller> create(const std::shared_ptr<Subsystem>& s, const std::string& host, bool unproven,
                                     const std::string& address = {}, bool tls = false);
  // The controllers of `s` (nullptr: discovery) with their I/O queues, as they are now.
  struct Live {
    std::shared_ptr<Controller> ctrl;
    std::vector<uint16_t> io_queues;
  };
  std::vector<Live> controllers(Subsystem* s);
  enum class Join { ok, no_controller, bad_qid, duplicate_qid };
  // Adds I/O queue `qid` to controller `id` of `s` that belongs to `host`. With claim false
  // (a queue that must authenticate first) the ID is checked but not taken: claim() takes it
  // once the queue has authenticated, so that a queue nobody has proven cannot hold it.
  Join join(uint16_t id, Subsystem* s, const std::string& host, uint16_t qid,
            std::shared_ptr<Controller>& out, bool claim = true);
  bool claim(Controller& c, uint16_t qid);
  // A queue lets go of its controller: an I/O queue frees its ID; the admin queue ends the
  // controller (its ID may be handed out again once no queue holds it).
  void drop(const std::shared_ptr<Controller>& c, uint16_t qid);

 private:
  std::map<std::string, std::shared_ptr<Subsystem>> subsystems_;
  mutable std::mutex mu_;
  ControllerIds discovery_ids_;
};

}  // namespace blkcopy::nvme
