// A target on its own thread that requires DH-HMAC-CHAP of one host, and the pieces of a host
// built by hand (one authentication transaction), for the authentication tests.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "nvme/auth/dhchap.h"
#include "nvme/codec.h"
#include <blkcopy/target.h>
#include "tests/nvme_client.h"

namespace blkcopy::test::auth_peer {

using namespace nvme;

// Made with Python: base64(bytes(range(32)) + zlib.crc32 little-endian).
inline const std::string kKey = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
// bytes(range(100, 148)) with transform 02 (SHA-384).
inline const std::string kKey384 =
    "DHHC-1:02:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKTvGwQfg==:";

inline const std::string kSub = "nqn.2024-01.io.blkcopy.test:auth";
inline const std::string kHost = "nqn.2024-01.io.blkcopy.test:auth-host";
// A different valid 32-byte secret (bytes 100..131), made like kKey.
inline std::string other_key() { return "DHHC-1:00:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOeXryU:"; }

class AuthTarget {
 public:
  AuthTarget(const std::string& hash, const std::string& group, const std::string& ctrl_key = kKey384,
             uint16_t cntlid_max = 0xFFEF) {
    std::promise<uint16_t> ready;
    auto port = ready.get_future();
    thread_ = std::thread([this, hash, group, ctrl_key, cntlid_max, ready = std::move(ready)]() mutable {
      auto loop = EventLoop::create().value();
      TargetConfig cfg;
      cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}});
      cfg.discovery_port = 0;
      cfg.subsystems.push_back({kSub, false, {kHost}, {{1, "mem:1M,seed=31", "", true}}});
      cfg.subsystems.back().cntlid_max = cntlid_max;
      // A queue may stay unauthenticated for a minute: nothing here ends by that limit.
      cfg.limits.connect_ms = 60000;
      cfg.hosts.push_back({kHost, kKey, ctrl_key, hash, group});
      auto t = Target::create(*loop, cfg).value();
      if (!t->start().ok()) std::abort();
      ready.set_value(t->bound_ports()[0]);
      (void)loop->run_until([this] { return stop_.load(); });
    });
    port_ = port.get();
  }
  ~AuthTarget() {
    stop_ = true;
    thread_.join();
  }
  std::string spec(const std::string& extra) const {
    return fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}{}", port_, kSub, kHost, extra);
  }
  uint16_t port() const { return port_; }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  uint16_t port_ = 0;
};


// A Negotiate (transaction tid, SHA-256, these DH groups) and the message that answers it: a
// Challenge, or Failure1 when refused; empty once the connection is gone.
inline std::vector<uint8_t> negotiate(test::NvmeClient& c, uint16_t tid,
                                      const std::vector<uint8_t>& groups) {
  const auto neg = auth::encode_negotiate({tid, {1}, groups});
  std::vector<uint8_t> msg;
  if (c.command(auth_command(fabrics::kAuthSend, neg.size()), neg).status) return {};
  if (c.command(auth_command(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status) return {};
  return msg;
}

// kHost's right Reply (kKey) to a null-group Challenge.
inline auth::Bytes right_reply(const auth::Challenge& ch) {
  const auth::Bytes kh = auth::transformed_key(*auth::parse_secret(kKey), kHost);
  const auth::Bytes r = auth::host_response(
      ch.hash, kh, auth::augmented_challenge(ch.hash, ch.c, {}), ch.seq, ch.tid, kHost, kSub);
  return auth::encode_reply({ch.tid, 0, false, r, {}, {}}, r.size());
}

// One DH-HMAC-CHAP transaction (null group) with transaction ID tid: the right response when
// `right`, else a guess. False once the connection is gone.
inline bool transaction(test::NvmeClient& c, uint16_t tid, bool right) {
  auto ch = auth::decode_challenge(negotiate(c, tid, {auth::kDhNull}));
  if (!ch) return false;
  std::vector<uint8_t> msg;
  const auto reply = right ? right_reply(*ch)
                           : auth::encode_reply({tid, 0, false, auth::Bytes(32, 0x55), {}, {}}, 32);
  if (c.command(auth_command(fabrics::kAuthSend, reply.size()), reply).status) return false;
  return c.command(auth_command(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status == 0;
}

}  // namespace blkcopy::test::auth_peer
