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
  std::unique_ptr<NamespaceCounters> counters = std::make_unique<NamespaceCounters>();

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
  struct Subsystem* subsys = nullptr;  // nullptr: the discovery controller
  std::string hostnqn;
  std::string address;  // the admin queue's peer
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
  void seen() { last_seen = std::chrono::steady_clock::now().time_since_epoch().count(); }
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

struct Subsystem {
  SubsystemConfig cfg;  // allow_any_host and allowed_hosts under hosts_mu (ctl add-host)
  std::map<uint32_t, Namespace> ns;
  std::string serial;
  ControllerIds ids;
  std::shared_ptr<std::mutex> hosts_mu = std::make_shared<std::mutex>();
  bool allows(const std::string& host) const {
    std::lock_guard lock(*hosts_mu);
    return cfg.allow_any_host ||
           std::find(cfg.allowed_hosts.begin(), cfg.allowed_hosts.end(), host) !=
               cfg.allowed_hosts.end();
  }
  // Admits (or no longer admits) `host`; false when it already was (or was not) admitted.
  bool allow(const std::string& host, bool yes) {
    std::lock_guard lock(*hosts_mu);
    auto it = std::find(cfg.allowed_hosts.begin(), cfg.allowed_hosts.end(), host);
    if (yes == (it != cfg.allowed_hosts.end())) return false;
    if (yes) {
      cfg.allowed_hosts.push_back(host);
    } else {
      cfg.allowed_hosts.erase(it);
    }
    return true;
  }
};

// Every subsystem and the controllers connected to them: controllers are made, joined by I/O
// queues and dropped from any loop (under one lock); the subsystems themselves are read-only
// once the target has started.
class Subsystems {
 public:
  std::map<std::string, Subsystem>& all() { return subsystems_; }
  const std::map<std::string, Subsystem>& all() const { return subsystems_; }
  Subsystem* find(const std::string& nqn) {
    auto it = subsystems_.find(nqn);
    return it == subsystems_.end() ? nullptr : &it->second;
  }
  // A new controller for `host` (on the admin queue's Connect); nullptr when every controller
  // ID of the subsystem is in use by controllers that have authenticated (or need not): the
  // oldest one still unproven that has not begun to authenticate gives its ID up first. `s` nullptr: the discovery subsystem.
  std::shared_ptr<Controller> create(Subsystem* s, const std::string& host, bool unproven,
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
  std::map<std::string, Subsystem> subsystems_;
  std::mutex mu_;
  ControllerIds discovery_ids_;
};

}  // namespace blkcopy::nvme
