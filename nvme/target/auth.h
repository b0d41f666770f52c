// The controller's side of DH-HMAC-CHAP on one queue (nvme/auth/dhchap.h has the protocol):
// a state machine fed by Auth Send and read by Auth Receive.
//
//   negotiate   waiting for the host's Negotiate
//   challenge   the Challenge is ready for the next Auth Receive
//   reply       waiting for the host's Reply
//   success1    Success1 is ready (with R2 when the host asked the controller to prove itself)
//   success2    waiting for the host's Success2 (bidirectional only)
//   failure1    Failure1 is ready; the queue stays unauthenticated
//   done        authenticated: the queue may carry other commands
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>

#include "nvme/auth/dhchap.h"
#include <blkcopy/target.h>

namespace blkcopy::nvme {

// What a host must prove and with what: its secret, optionally the controller's (so that the
// host can check the controller), the hash to prefer and the DH group to use.
struct HostKeys {
  auth::Secret key;
  std::optional<auth::Secret> ctrl_key;
  auth::Hash hash = auth::Hash::sha256;
  uint8_t dhgroup = auth::kDhNull;
};

// The keys of cfg.hosts by host NQN, each secret, hash and group parsed; errors name the entry.
Result<std::map<std::string, HostKeys>> host_keys(const TargetConfig& cfg);

class AuthSession {
 public:
  AuthSession(const HostKeys& keys, std::string hostnqn, std::string subnqn)
      : keys_(keys), hostnqn_(std::move(hostnqn)), subnqn_(std::move(subnqn)) {}

  // An Auth Send message. Protocol faults move to failure1 (the host reads why); the command
  // itself succeeds.
  void send(std::span<const uint8_t> msg);
  // The message for an Auth Receive of at most out.size() bytes, zero-padded; false when none
  // is due (the command then fails with Command Sequence Error).
  bool receive(std::span<uint8_t> out);

  bool authenticated() const { return state_ == State::done; }
  // Why authentication failed last (empty before any failure), and how many times it has.
  const std::string& failure() const { return why_; }
  unsigned failures() const { return failures_; }

 private:
  enum class State { negotiate, challenge, reply, success1, success2, failure1, done };
  void fail(uint8_t explanation, std::string why);

  HostKeys keys_;
  std::string hostnqn_, subnqn_;
  State state_ = State::negotiate;
  unsigned failures_ = 0;
  uint16_t tid_ = 0;
  auth::Hash hash_ = auth::Hash::sha256;
  uint8_t dhgroup_ = auth::kDhNull;
  uint32_t seq_ = 0;
  auth::Bytes c1_, shared_, success1_;
  std::optional<auth::DhKey> dh_;
  uint8_t explanation_ = 0;
  std::string why_;
};

}  // namespace blkcopy::nvme
