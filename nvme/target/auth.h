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
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "nvme/auth/dhchap.h"
#include "nvme/auth/tls_psk.h"
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
// The TLS PSK of each host that has one, checked (config.cc).
Result<std::map<std::string, auth::TlsKey>> tls_keys(const TargetConfig& cfg);

// The slow part of a message (a DH key pair for Negotiate, the shared secret for a Reply:
// milliseconds for the large groups), run on a helper thread so that one host's handshake
// does not stall every queue of its loop. It owns its inputs and outputs; the session waits.
struct DhJob {
  bool generate = false;            // a key pair for `group`, else the shared secret with `peer`
  uint8_t group = 0;
  std::optional<auth::DhKey> key;   // the session's key (shared secret), or the new one
  auth::Bytes peer, shared;
  Status status;
  void run();  // on any thread
};

class AuthSession {
 public:
  AuthSession(const HostKeys& keys, std::string hostnqn, std::string subnqn)
      : keys_(keys), hostnqn_(std::move(hostnqn)), subnqn_(std::move(subnqn)) {}

  // An Auth Send message. Protocol faults move to failure1 (the host reads why); the command
  // itself succeeds. A message that needs DH work returns it: run it off the loop, then
  // resume() with it; until then the session is busy().
  std::unique_ptr<DhJob> send(std::span<const uint8_t> msg);
  void resume(DhJob& job);
  bool busy() const { return job_pending_; }
  // The message for an Auth Receive of at most out.size() bytes, zero-padded; false when none
  // is due (the command then fails with Command Sequence Error).
  bool receive(std::span<uint8_t> out);
  // Fails a Negotiate (transaction `tid`) without looking at it: the target will not begin a
  // handshake now (AuthGate). The host reads Failure1.
  void refuse(uint16_t tid, std::string why) {
    tid_ = tid;
    fail(auth::kFailFailed, std::move(why));
  }

  bool authenticated() const { return state_ == State::done; }
  // Why authentication failed last (empty before any failure), and how many times it has.
  const std::string& failure() const { return why_; }
  unsigned failures() const { return failures_; }
  // Negotiates since the last success: each restart costs the target a DH key pair.
  unsigned started() const { return started_; }

 private:
  enum class State { negotiate, challenge, reply, success1, success2, failure1, done };
  void fail(uint8_t explanation, std::string why);
  void challenge_ready();                   // Negotiate done: C1 and the sequence number
  void check_reply(const auth::Reply& r);   // the shared secret is known: R1, then Success1

  HostKeys keys_;
  std::string hostnqn_, subnqn_;
  State state_ = State::negotiate;
  unsigned failures_ = 0, started_ = 0;
  uint16_t tid_ = 0;
  auth::Hash hash_ = auth::Hash::sha256;
  uint8_t dhgroup_ = auth::kDhNull;
  uint32_t seq_ = 0;
  auth::Bytes c1_, shared_, success1_;
  std::optional<auth::DhKey> dh_;
  auth::Reply reply_;          // a Reply waiting for its shared secret
  bool job_pending_ = false;
  uint8_t explanation_ = 0;
  std::string why_;
};

}  // namespace blkcopy::nvme
