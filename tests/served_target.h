// A target on a thread of its own for tests that reach it over sockets only, and the pieces of
// a host those tests build by hand (raw capsules, a connected admin + I/O queue pair).
#pragma once

#include <blkcopy/target.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "nvme/spec.h"
#include "tests/nvme_client.h"

namespace blkcopy::test {

class Served {
 public:
  // With `control`, the target's control socket listens there too; with `metrics`, its metrics
  // endpoint on a free port of 127.0.0.1 (metrics_port()).
  explicit Served(nvme::TargetConfig cfg, std::string control = {}, bool metrics = false);
  uint16_t metrics_port() const { return metrics_port_; }
  ~Served();
  uint16_t port() const { return ports_[0]; }
  const std::vector<uint16_t>& ports() const { return ports_; }  // the config's ports, in order
  nvme::TargetStats stats() const { return target_.load()->stats(); }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<nvme::Target*> target_{nullptr};
  std::vector<uint16_t> ports_;
  uint16_t metrics_port_ = 0;
};

// A capsule PDU carrying `data` in-capsule, with the SGL as given (not derived from the data).
std::vector<uint8_t> capsule(const nvme::Sqe& sqe, const std::vector<uint8_t>& data);
Completion completion_of(const std::vector<uint8_t>& pdu);

// An admin queue and one I/O queue of `host` on `subnqn`.
struct Host {
  NvmeClient admin, io;
  uint16_t cntlid = 0;
  bool connect(uint16_t port, const std::string& subnqn, const std::string& host);
};

}  // namespace blkcopy::test
