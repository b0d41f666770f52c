// A target played by a script, for tests of the host against lying or hostile targets: it
// listens on loopback, takes one connection, answers the ICReq, reads the first command capsule
// and hands the socket to the script; afterwards it keeps what the host still sends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "nvme/spec.h"

namespace blkcopy::test {

bool read_all(int fd, void* p, size_t n);  // false when the peer hung up first
// A socket listening on 127.0.0.1 at a port the kernel picked (written to `port`).
int listen_loopback(uint16_t& port);
// A port nothing listens on now (the kernel's pick, let go at once).
uint16_t free_port();

class ScriptedTarget {
 public:
  using Script = std::function<void(int fd, const nvme::Sqe& first)>;
  explicit ScriptedTarget(Script script, uint32_t maxh2cdata = 131072);
  ~ScriptedTarget() { join(); }
  // Its thread holds `this`: made in place (returned as a prvalue), never copied or moved.
  ScriptedTarget(const ScriptedTarget&) = delete;
  ScriptedTarget& operator=(const ScriptedTarget&) = delete;
  void join();  // stops listening and waits for the host to hang up
  uint16_t port() const { return port_; }
  // What the host sent after the script ran (read once joined).
  std::vector<uint8_t> got;

  // One command capsule (its in-capsule data read and dropped); nullopt when the host left.
  static std::optional<nvme::Sqe> capsule(int fd);
  // Sends without SIGPIPE: the host may have hung up.
  static void send(int fd, const void* p, size_t n);

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace blkcopy::test
