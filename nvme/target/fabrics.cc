// Fabrics commands: Connect, Property Get and Set, Authentication Send and Receive.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "nvme/codec.h"
#include "nvme/target/internal.h"
#include "nvme/target/ops.h"

namespace blkcopy::nvme {
namespace {

std::span<const uint8_t> sqe_bytes(const TargetRequest& r) {
  return {reinterpret_cast<const uint8_t*>(&r.sqe), 64};
}

void property(TargetRequest& r, bool set) {
  TargetQueue& q = *r.queue;
  QueueSession& s = q.session;
  if (!s.ctrl) return q.complete(r, st(status::kInvalidOpcode));
  if (!s.authenticated) return q.complete(r, st(status::kAuthRequired));
  const uint32_t off = get<uint32_t>(sqe_bytes(r), kPropOffset);
  Controller& c = *s.ctrl;
  if (set) {
    const uint32_t v = static_cast<uint32_t>(get<uint64_t>(sqe_bytes(r), kPropValue));
    if (off != kPropCc) return q.complete(r, st(status::kInvalidField));
    c.cc = v;
    c.csts = (v & 1) ? 1 : 0;                // RDY follows EN
    if ((v >> 14) & 3) c.csts |= (2u << 2);  // shutdown requested: complete at once
    return q.complete(r, 0);
  }
  uint64_t v = 0;
  if (off == kPropCap) {
    // MQES 15:0 (0-based), CQR bit 16, TO 31:24 (500 ms units), CSS NVM bit 37.
    v = (kMaxQueueSize - 1) | (1ull << 16) | (20ull << 24) | (1ull << 37);
  } else if (off == kPropVs) {
    v = 0x00010400;
  } else if (off == kPropCc) {
    v = c.cc;
  } else if (off == kPropCsts) {
    v = c.csts;
  } else {
    return q.complete(r, st(status::kInvalidField));
  }
  r.cqe.dw1 = static_cast<uint32_t>(v >> 32);
  q.complete(r, 0, static_cast<uint32_t>(v));
}

void connect(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  QueueSession& s = q.session;
  TargetImpl& t = q.target();
  std::span<const uint8_t> sq = sqe_bytes(r);
  if (r.data_len < kConnectDataSize) return q.complete(r, st(status::kSglLengthInvalid));
  std::span<const uint8_t> d(r.data, r.data_len);
  const uint16_t qid = get<uint16_t>(sq, kConnectQid);
  const uint16_t sqsize = get<uint16_t>(sq, kConnectSqsize);
  const std::string subnqn = get_nqn(d, kCdSubnqn), hostnqn = get_nqn(d, kCdHostnqn);
  if (s.ctrl || sqsize == 0 || sqsize >= kMaxQueueSize) {
    return q.complete(r, st(status::kConnectInvalidParam), kConnectSqsize);
  }
  const bool discovery = subnqn == kDiscoveryNqn;
  std::shared_ptr<Subsystem> sub = discovery ? nullptr : t.subsystems().find(subnqn);
  if (!discovery && !sub) {
    return q.complete(r, st(status::kConnectInvalidParam), (1u << 16) | kCdSubnqn);
  }
  // As Linux nvmet links subsystems to ports: a host reaches those of the port it came
  // through (a subsystem on a TLS-only port is not reached in clear text through another).
  if (const auto* via = q.transport().came_through(); sub && via && !t.port_serves(*via, subnqn)) {
    log_warning(fmt::format("serve: host {} refused for {}: not served on the port it came through",
                            hostnqn, subnqn));
    return q.complete(r, st(status::kConnectInvalidParam), (1u << 16) | kCdSubnqn);
  }
  if (sub && !sub->allows(hostnqn)) {
    log_warning(fmt::format("serve: host {} refused for {}: not an allowed host", hostnqn, subnqn));
    return q.complete(r, st(status::kConnectInvalidHost));
  }
  // Over TLS the PSK said who the host is and where it goes: it may not connect as another.
  if (const auth::TlsIdentity* id = q.transport().tls_identity();
      id && (id->hostnqn != hostnqn || id->subnqn != subnqn)) {
    log_warning(fmt::format("serve: host {} refused for {}: its TLS PSK is {}'s for {}", hostnqn,
                            subnqn, id->hostnqn, id->subnqn));
    return q.complete(r, st(status::kConnectInvalidHost));
  }
  // Connect Invalid Parameters says where the bad value is: IATTR (bit 16: in the data) and
  // IPO (the byte offset).
  auto invalid = [&](bool in_data, uint32_t offset) {
    q.complete(r, st(status::kConnectInvalidParam), (in_data ? 1u << 16 : 0) | offset);
  };
  const std::optional<HostKeys> keys = t.keys_for(hostnqn);
  // A host with a TLS key proves who it is by the key: in clear text (a port where TLS is
  // optional) its NQN alone, which anyone can send, does not let it in, unless DH-HMAC-CHAP
  // will make it prove itself.
  if (!q.transport().tls_identity() && t.has_tls_key(hostnqn) && !keys) {
    log_warning(fmt::format("serve: host {} refused for {}: it has a TLS key and came in clear "
                            "text",
                            hostnqn, subnqn));
    return q.complete(r, st(status::kConnectInvalidHost));
  }
  if (qid == 0) {
    s.ctrl = t.subsystems().create(sub, hostnqn, keys.has_value(), q.transport().peer_address(),
                                   q.transport().tls_identity() != nullptr);
    if (!s.ctrl && sub && sub->removed) {  // removed (ctl remove-subsystem) since it was found
      return q.complete(r, st(status::kConnectInvalidParam), (1u << 16) | kCdSubnqn);
    }
    if (!s.ctrl) {
      log_warning(fmt::format("serve: host {} refused for {}: every controller ID is in use",
                              hostnqn, subnqn));
      return q.complete(r, st(status::kConnectControllerBusy));
    }
    s.ctrl->kato_ms = r.sqe.cdw12;
    if (const auto* via = q.transport().came_through()) {
      if (auto p = via->lock()) s.ctrl->port_id = p->cfg.id;
    }
  } else {
    switch (t.subsystems().join(get<uint16_t>(d, kCdCntlid), sub.get(), hostnqn, qid, s.ctrl, !keys)) {
      case Subsystems::Join::ok: s.qid_claimed = !keys; break;
      case Subsystems::Join::no_controller: return invalid(true, kCdCntlid);
      case Subsystems::Join::bad_qid:
      case Subsystems::Join::duplicate_qid: return invalid(false, kConnectQid);
    }
  }
  s.qid = qid;
  s.depth = sqsize + 1u;
  s.sq_flow_disabled = get<uint8_t>(sq, kConnectCattr) & kCattrDisableSqFlow;
  uint32_t dw0 = s.ctrl->cntlid;
  if (keys) {
    s.auth = std::make_unique<AuthSession>(*keys, hostnqn, subnqn);
    s.authenticated = false;
    dw0 |= 1u << 17;  // ATR: authentication required before anything else
  }
  q.complete(r, 0, dw0);
}

// A failed DH-HMAC-CHAP transaction: each is logged; a few on one connection end it (a peer
// guessing responses gets three tries, not a thousand a second), and a failed
// re-authentication ends the controller, as Linux nvmet does, instead of leaving the queue
// authenticated.
constexpr unsigned kAuthTries = 3;

// Ends an Auth Send (success) or Auth Receive (the message is in r.data), then, when `why` says
// so, the connection: the answer goes out first.
void end_auth_command(TargetRequest& r, bool send, const std::string& why = {}) {
  QueueTransport& transport = r.queue->transport();
  if (send) {
    r.queue->complete(r, 0);
  } else {
    complete_with_data(r, r.data_len);
  }
  if (!why.empty()) transport.disconnect(why);
}

void auth_failed(TargetRequest& r, bool send) {
  TargetQueue& q = *r.queue;
  QueueSession& s = q.session;
  s.auth_failures = s.auth->failures();
  if (!s.auth_refused) ++q.target().counters().auth_failures;
  const std::string sub = s.ctrl->subsys ? s.ctrl->subsys->cfg.nqn : kDiscoveryNqn;
  if (!std::exchange(s.auth_refused, false)) {
    s.handshake.failed();  // counts toward this host and address's back-off
    log_warning(fmt::format("serve: host {} at {} failed DH-HMAC-CHAP authentication on queue {} "
                            "of {} ({} of {} tries): {}",
                            s.ctrl->hostnqn, q.transport().peer_address(), s.qid, sub,
                            s.auth_failures, kAuthTries, s.auth->failure()));
  } else if (s.log_refusal) {  // the 1st, 2nd, 4th, 8th... refusal in a row: a flood, one line
    log_warning(fmt::format("serve: host {} at {} refused a DH-HMAC-CHAP handshake on queue {} "
                            "of {}: {}",
                            s.ctrl->hostnqn, q.transport().peer_address(), s.qid, sub,
                            s.auth->failure()));
  }
  std::string end;
  if (s.authenticated) {
    s.authenticated = false;
    s.ctrl->gone = true;  // every queue of the controller closes
    end = "re-authentication failed: the controller is torn down";
  } else if (s.auth_failures >= kAuthTries) {
    end = fmt::format("{} failed DH-HMAC-CHAP transactions", s.auth_failures);
  }
  end_auth_command(r, send, end);  // an Auth Receive carries Failure1: the host reads why
}

// After a message: a failure, a success, or neither yet; then the command ends.
void after_message(TargetRequest& r, bool send) {
  TargetQueue& q = *r.queue;
  QueueSession& s = q.session;
  if (s.auth->failures() > s.auth_failures) return auth_failed(r, send);
  if (!s.authenticated && s.auth->authenticated()) {
    // Only now does an I/O queue take its ID, and the controller keep its own.
    if (s.qid && !s.qid_claimed) {
      if (!q.target().subsystems().claim(*s.ctrl, s.qid)) {
        return end_auth_command(
            r, send, fmt::format("queue {} is taken by another authenticated queue", s.qid));
      }
      s.qid_claimed = true;
    }
    if (s.qid == 0) s.ctrl->unproven = false;
    s.handshake.succeeded();
    s.authenticated = true;
    s.ctrl->seen();
    log_info(fmt::format("serve: host {} authenticated on queue {}", s.ctrl->hostnqn, s.qid));
  }
  end_auth_command(r, send);
}

// A message's DH work runs on a helper thread of the queue's loop (four per loop: at most four
// handshakes compute at once, the rest wait their turn); the Auth Send ends when it is done.
// The queue counts it as device work, so it is not freed meanwhile.
void run_dh(TargetRequest& r, std::unique_ptr<DhJob> job) {
  TargetQueue& q = *r.queue;
  q.device_started();
  DhJob* raw = job.release();
  q.loop().offload(
      [raw] {
        raw->run();
        return 0;
      },
      [&r, raw](int) {
        std::unique_ptr<DhJob> done(raw);
        TargetQueue& queue = *r.queue;
        queue.device_ended();
        if (queue.closing() || !queue.session.ctrl) {
          return queue.complete(r, st(status::kInternal));  // the transport lets it go
        }
        queue.session.auth->resume(*done);
        after_message(r, true);
      });
}

// Auth Send (a message from the host) and Auth Receive (the next one for it).
void authenticate(TargetRequest& r, bool send) {
  TargetQueue& q = *r.queue;
  QueueSession& s = q.session;
  if (!s.ctrl || !s.auth || s.auth->busy()) return q.complete(r, st(status::kCommandSequenceError));
  const uint32_t length = r.sqe.cdw11;  // TL or AL
  if (r.sqe.cdw10 != auth::kAuthCdw10 || length == 0 || length > r.data_len) {
    return q.complete(r, st(status::kInvalidField));
  }
  if (send) {
    if (s.qid == 0) s.ctrl->authenticating = true;  // no longer the first to give its ID up
    const std::span<const uint8_t> msg{r.data, length};
    if (auto h = auth::decode_header(msg);
        h && h->type == auth::kTypeCommon && h->id == auth::kIdNegotiate) {
      // A new handshake: the gate may refuse it (this host and address back off, or have too
      // many in progress) before it costs a DH key pair.
      auto d = q.target().auth_gate().begin(s.ctrl->hostnqn, q.transport().peer_address(),
                                            AuthGate::Clock::now());
      if (!d.ticket) {
        s.auth_refused = true;
        s.log_refusal = d.log;
        s.auth->refuse(h->tid, d.why);
        return after_message(r, send);
      }
      s.handshake = std::move(*d.ticket);
    }
    auto job = s.auth->send(msg);
    // Restarting with a new Negotiate is a try too (each one costs a DH key pair): a peer gets
    // kAuthTries handshakes per connection, not a key pair generated for every Negotiate.
    if (s.auth->started() > kAuthTries) {
      s.handshake.failed();  // counts toward this host and address's back-off, as a failure
      QueueTransport& transport = q.transport();
      q.complete(r, st(status::kCommandSequenceError));
      return transport.disconnect(fmt::format("{} DH-HMAC-CHAP handshakes begun without success",
                                              s.auth->started()));
    }
    if (job) return run_dh(r, std::move(job));
  } else {
    std::memset(r.data, 0, r.data_len);  // nothing but the message goes back
    if (!s.auth->receive({r.data, length})) return q.complete(r, st(status::kCommandSequenceError));
  }
  after_message(r, send);
}

}  // namespace

void run_fabrics(TargetRequest& r) {
  switch (reinterpret_cast<const uint8_t*>(&r.sqe)[kFcType]) {
    case fabrics::kConnect: return connect(r);
    case fabrics::kAuthSend: return authenticate(r, true);
    case fabrics::kAuthReceive: return authenticate(r, false);
    case fabrics::kPropertyGet: return property(r, false);
    case fabrics::kPropertySet: return property(r, true);
    default: return r.queue->complete(r, st(status::kInvalidField));
  }
}

}  // namespace blkcopy::nvme
