#include "nvme/host/controller.h"

#include <blkcopy/log.h>

#include <fmt/ranges.h>

#include <cstring>
#include <map>

#include "nvme/codec.h"

namespace blkcopy::nvme {

uint16_t code_of(const Cqe& cqe) { return (cqe.status >> 1) & 0x7FF; }

// An NVMe status as an errno-style Status.
Status to_status(const Status& transport, const Cqe& cqe, const std::string& what) {
  if (!transport.ok()) return transport;
  const uint16_t st = code_of(cqe);
  if (st == 0) return {};
  return Status::error(errno_for_status(st), fmt::format("{}: NVMe status {:#05x} ({})", what, st, status_text(st)));
}

namespace {

std::map<std::string, std::weak_ptr<NvmeTcpController>>& registry() {
  thread_local std::map<std::string, std::weak_ptr<NvmeTcpController>> r;
  return r;
}

}  // namespace

Result<std::shared_ptr<NvmeTcpController>> NvmeTcpController::open(EventLoop& loop,
                                                                  const NvmeTcpConfig& c) {
  // Controllers are shared only between opens that would connect the same way, secrets
  // included (as digests): a wrong secret must not ride on a controller a right one opened.
  auto fingerprint = [](const std::optional<auth::Bytes>& s) {
    if (!s) return std::string("-");
    const auth::Bytes d = auth::digest(auth::Hash::sha256, *s);
    return fmt::format("{:02x}", fmt::join(d, ""));
  };
  auto key_of = [](const auto& k) { return k ? std::optional(k->key) : std::nullopt; };
  if (c.tls_key) {
    if (auto psk = TlsSession::psk_for(*c.tls_key, c.hostnqn, c.subnqn); !psk) {
      return fail(EINVAL, fmt::format("tls_key: {}", psk.error().message()));
    }
  }
  const std::string key = fmt::format(
      "{}|{}:{}|{}|{}|{}{}{}|{}|{}|{}|{}|{}|{}{}", static_cast<void*>(&loop), c.host, c.port, c.subnqn,
      c.hostnqn, c.header_digest, c.data_digest, c.kernel_tls, c.timeout_ms, c.depth, c.queues,
      fingerprint(key_of(c.dhchap_secret)), fingerprint(key_of(c.dhchap_ctrl_secret)),
      fingerprint(c.tls_key ? std::optional(c.tls_key->configured) : std::nullopt),
      c.tls_key && c.tls_key->libnvme1 ? "|libnvme1" : "");
  // A controller that dropped for good (its target disconnected it, no reconnect) is not
  // shared again: this open connects anew, and the target says whether it may.
  if (auto existing = registry()[key].lock(); existing && existing->state_ != State::dead) return existing;
  auto ctrl = std::make_shared<NvmeTcpController>();
  ctrl->loop_ = &loop;
  ctrl->label_ = fmt::format("nvme-tcp://{}:{}/{}", c.host, c.port, c.subnqn);
  ctrl->cfg = c;
  if (Status s = ctrl->connect_sync(); !s.ok()) return std::unexpected(s);
  registry()[key] = ctrl;
  return ctrl;
}


// ---------------------------------------------------------------- set-up
// One step after another on the loop, never blocking it: the admin queue (TCP connect and
// ICReq), fabrics Connect, CC.EN, Identify Controller, Host Behavior Support, Number of
// Queues, then each I/O queue and its Connect. Every step has the connect time limit and an
// error names the step.

QueueOptions NvmeTcpController::queue_options(uint32_t depth) const {
  QueueOptions qo{cfg.header_digest, cfg.data_digest, 8192, depth, cfg.connect_timeout_ms,
                  cfg.connect_timeout_ms, std::nullopt};
  qo.kernel_tls = cfg.kernel_tls;
  if (cfg.tls_key) {
    // A TLS PSK for this host and this subsystem (its identity names both); open() checked it.
    if (auto psk = TlsSession::psk_for(*cfg.tls_key, cfg.hostnqn, cfg.subnqn)) qo.tls = std::move(*psk);
  }
  return qo;
}

void NvmeTcpController::connect_async(std::function<void(Status)> done) {
  setup_done_ = std::move(done);
  QueueOptions qo = queue_options(32);
  opening_ = HostQueue::open_async(*loop_, cfg.host, cfg.port, qo, [this](Result<HostQueue::Ptr> q) {
                          if (!q) return setup_failed(q.error());
                          admin_ = std::move(*q);
                          connect_queue(*admin_, 0, 0xFFFF, [this](const Cqe& cqe) {
                            cntlid = static_cast<uint16_t>(cqe.dw0);
                            enable();
                          });
                        });
}

Status NvmeTcpController::connect_sync() {
  std::optional<Status> result;
  connect_async([&result](Status s) { result = std::move(s); });
  if (Status s = loop_->run_until([&result] { return result.has_value(); }); !s.ok()) return s;
  return *result;
}

void NvmeTcpController::step(HostQueue& q, const char* what, Sqe sqe, const void* out, void* in,
                             uint32_t len, bool must_succeed, std::function<void(const Cqe&)> next) {
  // The queue is the controller's: its callbacks never run once the controller has gone.
  auto on_done = [this, what, must_succeed, next = std::move(next)](Status st, const Cqe& cqe) {
    if (!st.ok()) {
      return setup_failed(Status::error(st.code(), fmt::format("{}: {}: {}", label_, what, st.message())));
    }
    if (must_succeed && code_of(cqe)) {
      return setup_failed(Status::error(EIO, fmt::format("{}: {}: NVMe status {:#05x} ({})", label_,
                                                         what, code_of(cqe), status_text(code_of(cqe)))));
    }
    next(cqe);
  };
  if (Status s = q.submit(sqe, out, in, len, std::move(on_done)); !s.ok()) {
    setup_failed(Status::error(s.code(), fmt::format("{}: {}: {}", label_, what, s.message())));
  }
}

void NvmeTcpController::connect_queue(HostQueue& q, uint16_t qid, uint16_t id,
                                      std::function<void(const Cqe&)> next) {
  const auto sqsize = static_cast<uint16_t>(qid ? cfg.depth - 1 : 31);
  auto data = std::make_shared<std::vector<uint8_t>>(connect_data(id, cfg.subnqn, cfg.hostnqn));
  step(q, qid ? "fabrics Connect (I/O queue)" : "fabrics Connect", connect_command(qid, sqsize, cfg.kato_ms),
       data->data(), nullptr, kConnectDataSize, false, [this, data, next, &q, qid](const Cqe& cqe) {
         const uint16_t st = code_of(cqe);
         if (st == 0) return authenticate(q, qid, cqe, next);
         setup_failed(Status::error(
             st == status::kConnectInvalidHost ? EACCES : st == status::kConnectInvalidParam ? EINVAL : ECONNREFUSED,
             fmt::format("{}: Connect refused (status {:#05x}{})", label_, st,
                         st == status::kConnectInvalidHost ? ": host " + cfg.hostnqn + " not allowed"
                         : st == status::kConnectInvalidParam
                             ? ": invalid parameters, such as a subsystem NQN the target does not "
                               "serve on this port (blkcopy discover lists where each is)"
                             : "")));
       });
}

// ---------------------------------------------------------------- DH-HMAC-CHAP
// After a queue's Connect: the controller asked for authentication (ATR), or it did not, which
// is refused when the host must be able to check the controller.

namespace {
constexpr uint32_t kAuthBuffer = 4096;
}  // namespace

struct NvmeTcpController::AuthTxn {
  uint16_t qid = 0;
  auth::Hash hash = auth::Hash::sha256;
  auth::Bytes out, in = auth::Bytes(kAuthBuffer), shared, c2;
  uint32_t s2 = 0;
  Cqe connected{};
  std::function<void(const Cqe&)> next;
};

void NvmeTcpController::authenticate(HostQueue& q, uint16_t qid, const Cqe& connected,
                                     std::function<void(const Cqe&)> next) {
  const bool required = connected.dw0 & (1u << 17);  // ATR
  if (!required) {
    if (cfg.dhchap_ctrl_secret) {
      return setup_failed(Status::error(
          EACCES, fmt::format("{}: the controller did not ask to authenticate, so it cannot prove "
                              "it holds dhchap_ctrl_secret; refusing it",
                              label_)));
    }
    return next(connected);
  }
  if (!cfg.dhchap_secret) {
    return setup_failed(Status::error(
        EACCES, fmt::format("{}: the controller requires DH-HMAC-CHAP authentication for host {}; "
                            "give dhchap_secret= or dhchap_secret_file=",
                            label_, cfg.hostnqn)));
  }
  auto t = std::make_shared<AuthTxn>();
  t->qid = qid;
  t->connected = connected;
  t->next = std::move(next);
  // Every hash, as Linux offers them, and the groups accepted (all by default); the
  // controller picks.
  std::vector<uint8_t> groups = cfg.dhchap_dhgroups;
  if (groups.empty()) groups = {0, 1, 2, 3, 4, 5};
  t->out = auth::encode_negotiate({qid, {1, 2, 3}, groups});
  step(q, "DH-HMAC-CHAP Negotiate", auth_command(fabrics::kAuthSend, static_cast<uint32_t>(t->out.size())),
       t->out.data(), nullptr, static_cast<uint32_t>(t->out.size()), true,
       [this, &q, t](const Cqe&) {
         step(q, "DH-HMAC-CHAP Challenge", auth_command(fabrics::kAuthReceive, kAuthBuffer), nullptr,
              t->in.data(), kAuthBuffer, true, [this, &q, t](const Cqe&) { auth_reply(q, t); });
       });
}

// The controller's failure message, as an error; nullopt when the message is not a failure.
std::optional<Status> NvmeTcpController::auth_refused(const auth::Bytes& m, const char* when) {
  auto h = auth::decode_header(m);
  if (!h) return Status::error(EPROTO, fmt::format("{}: {}: {}", label_, when, h.error().message()));
  if (h->type == auth::kTypeCommon && h->id == auth::kIdFailure1) {
    return Status::error(EACCES, fmt::format("{}: DH-HMAC-CHAP: the controller refused host {}: {}",
                                             label_, cfg.hostnqn, auth::failure_text(m[7])));
  }
  return std::nullopt;
}

void NvmeTcpController::auth_reply(HostQueue& q, std::shared_ptr<AuthTxn> t) {
  if (auto refused = auth_refused(t->in, "Challenge")) return setup_failed(*refused);
  auto c = auth::decode_challenge(t->in);
  if (!c) return setup_failed(Status::error(EPROTO, fmt::format("{}: {}", label_, c.error().message())));
  t->hash = c->hash;
  const auto& accepted = cfg.dhchap_dhgroups;
  if (!accepted.empty() && std::find(accepted.begin(), accepted.end(), c->dhgroup) == accepted.end()) {
    return setup_failed(Status::error(
        EACCES, fmt::format("{}: DH-HMAC-CHAP: the controller chose DH group {}, which "
                            "dhchap_dhgroup does not accept; refusing it",
                            label_, auth::dhgroup_name(c->dhgroup))));
  }
  // Inside TLS the PSK already binds the session to this target: no warning.
  if (c->dhgroup == auth::kDhNull && !null_group_warned_ && !cfg.tls_key) {
    null_group_warned_ = true;
    log_warning(fmt::format("{}: DH-HMAC-CHAP without key agreement (the null DH group): an "
                            "impostor that copies another target's challenge could use this "
                            "host's answer; &dhchap_dhgroup=ffdhe2048 (or larger) requires key "
                            "agreement (a relay of the whole exchange needs TLS to stop)",
                            label_));
  }
  const size_t hl = auth::hash_len(c->hash);
  auth::Reply r;
  r.tid = c->tid;
  if (c->dhgroup != auth::kDhNull) {
    auto key = auth::DhKey::generate(c->dhgroup);
    if (!key) return setup_failed(key.error());
    auto shared = key->shared_secret(c->dh);
    if (!shared) return setup_failed(Status::error(EPROTO, fmt::format("{}: {}", label_, shared.error().message())));
    t->shared = std::move(*shared);
    r.dh = key->public_value();
  }
  const auth::Bytes kh = auth::transformed_key(*cfg.dhchap_secret, cfg.hostnqn);
  r.r = auth::host_response(c->hash, kh, auth::augmented_challenge(c->hash, c->c, t->shared), c->seq,
                            c->tid, cfg.hostnqn, cfg.subnqn);
  if (cfg.dhchap_ctrl_secret) {  // ask the controller to prove itself
    t->c2 = auth::random_bytes(hl);
    auto s = auth::random_bytes(4);
    std::memcpy(&t->s2, s.data(), 4);
    t->s2 |= 1;
    r.cvalid = true;
    r.seq = t->s2;
    r.c2 = t->c2;
  }
  t->out = auth::encode_reply(r, hl);
  step(q, "DH-HMAC-CHAP Reply", auth_command(fabrics::kAuthSend, static_cast<uint32_t>(t->out.size())),
       t->out.data(), nullptr, static_cast<uint32_t>(t->out.size()), true, [this, &q, t](const Cqe&) {
         std::fill(t->in.begin(), t->in.end(), 0);
         step(q, "DH-HMAC-CHAP Success1", auth_command(fabrics::kAuthReceive, kAuthBuffer), nullptr,
              t->in.data(), kAuthBuffer, true, [this, &q, t](const Cqe&) { auth_finish(q, t); });
       });
}

void NvmeTcpController::auth_finish(HostQueue& q, std::shared_ptr<AuthTxn> t) {
  if (auto refused = auth_refused(t->in, "Success1")) return setup_failed(*refused);
  const size_t hl = auth::hash_len(t->hash);
  auto s1 = auth::decode_success1(t->in, hl);
  if (!s1) return setup_failed(Status::error(EPROTO, fmt::format("{}: {}", label_, s1.error().message())));
  if (!cfg.dhchap_ctrl_secret) return t->next(t->connected);
  const auth::Bytes kc = auth::transformed_key(*cfg.dhchap_ctrl_secret, cfg.subnqn);
  const auth::Bytes expected = auth::controller_response(
      t->hash, kc, auth::augmented_challenge(t->hash, t->c2, t->shared), t->s2, s1->tid, cfg.subnqn,
      cfg.hostnqn);
  const bool proven = s1->rvalid && auth::same(expected, s1->r);
  if (proven) {
    t->out = auth::encode_success2(s1->tid);
    return step(q, "DH-HMAC-CHAP Success2", auth_command(fabrics::kAuthSend, static_cast<uint32_t>(t->out.size())),
                t->out.data(), nullptr, static_cast<uint32_t>(t->out.size()), true,
                [t](const Cqe&) { t->next(t->connected); });
  }
  // Tell the controller (Failure2), then refuse it whatever it answers: Linux closes the
  // connection on a Failure2 rather than completing the Auth Send.
  const Status refused = Status::error(EACCES, fmt::format("{}: DH-HMAC-CHAP: the controller failed to "
                                                           "prove it holds dhchap_ctrl_secret; refusing it",
                                                           label_));
  t->out = auth::encode_failure(auth::kIdFailure2, s1->tid, auth::kFailFailed);
  auto on_done = [this, t, refused](Status, const Cqe&) { setup_failed(refused); };
  if (!q.submit(auth_command(fabrics::kAuthSend, static_cast<uint32_t>(t->out.size())), t->out.data(), nullptr,
                static_cast<uint32_t>(t->out.size()), std::move(on_done))
           .ok()) {
    setup_failed(refused);
  }
}

void NvmeTcpController::enable() {
  // CC.EN with IOSQES 6 and IOCQES 4.
  Sqe prop{};
  prop.opcode = admin::kFabrics;
  auto* raw = reinterpret_cast<uint8_t*>(&prop);
  raw[kFcType] = fabrics::kPropertySet;
  const uint32_t cc_off = kPropCc;
  const uint64_t cc = 1 | (6u << 16) | (4u << 20);
  std::memcpy(raw + kPropOffset, &cc_off, 4);
  std::memcpy(raw + kPropValue, &cc, 8);
  step(*admin_, "enabling the controller (Property Set CC)", prop, nullptr, nullptr, 0, true,
       [this](const Cqe&) { identify(); });
}

void NvmeTcpController::identify() {
  auto id = std::make_shared<std::vector<uint8_t>>(4096);
  Sqe ident{};
  ident.opcode = admin::kIdentify;
  ident.cdw10 = kCnsController;
  step(*admin_, "Identify Controller", ident, nullptr, id->data(), 4096, true, [this, id](const Cqe&) {
    caps = parse_identify_controller(*id);
    max_io = caps.max_transfer(1u << 20);
    copy = caps.copy();
    if (cfg.subnqn == kDiscoveryNqn) return setup_finished();  // its admin queue is all there is
    if (!copy || !(caps.ocfs & 0x4)) return queues();
    // Format 2 offered: enable it (Host Behavior Support, CDFE bit 2); optional.
    auto hbs = std::make_shared<std::vector<uint8_t>>(512, 0);
    (*hbs)[kHostBehaviorCdfe] = 0x04;
    Sqe sf{};
    sf.opcode = admin::kSetFeatures;
    sf.cdw10 = kFeatHostBehavior;
    step(*admin_, "Set Features Host Behavior Support", sf, hbs->data(), nullptr, 512, false,
         [this, hbs](const Cqe& cqe) {
           format2 = code_of(cqe) == 0;
           queues();
         });
  });
}

void NvmeTcpController::queues() {
  // Number of Queues (0-based both ways); the controller may grant fewer.
  Sqe nq{};
  nq.opcode = admin::kSetFeatures;
  nq.cdw10 = kFeatNumQueues;
  nq.cdw11 = (cfg.queues - 1) | ((cfg.queues - 1) << 16);
  step(*admin_, "Set Features Number of Queues", nq, nullptr, nullptr, 0, false, [this](const Cqe& cqe) {
    granted_ = cfg.queues;
    if (!code_of(cqe)) granted_ = std::min<unsigned>(granted_, (cqe.dw0 & 0xFFFF) + 1);
    open_io();
  });
}

void NvmeTcpController::open_io() {
  if (io_.size() == granted_) return setup_finished();
  QueueOptions qo = queue_options(cfg.depth);
  opening_ = HostQueue::open_async(*loop_, cfg.host, cfg.port, qo, [this](Result<HostQueue::Ptr> q) {
                          if (!q) return setup_failed(q.error());
                          io_.push_back(std::move(*q));
                          connect_queue(*io_.back(), static_cast<uint16_t>(io_.size()), cntlid,
                                        [this](const Cqe&) { open_io(); });
                        });
}

void NvmeTcpController::setup_finished() {
  admin_->set_timeout(cfg.timeout_ms);
  for (auto& q : io_) q->set_timeout(cfg.timeout_ms);
  kato_ms_ = cfg.kato_ms;
  if (kato_ms_ && !keep_alive_timer_.armed()) keep_alive();
  auto hook = [this](const Status& why) { dropped(why); };
  admin_->on_fail = hook;
  for (auto& q : io_) q->on_fail = hook;
  auto done = std::move(setup_done_);
  done({});
}

// Called inside a queue's callbacks (a queue closed there frees itself once they return) or
// from a posted task of open_async.
void NvmeTcpController::setup_failed(Status why) {
  if (!setup_done_) return;
  auto done = std::move(setup_done_);
  setup_done_ = nullptr;
  opening_.cancel();
  admin_.reset();
  io_.clear();
  done(why);
}

Status NvmeTcpController::submit_io(Sqe sqe, const void* out, void* in, uint32_t len,
                                    HostQueue::Done done) {
  if (state_ == State::reconnecting) {
    pending_.push_back({sqe, out, in, len, std::move(done)});
    return {};
  }
  if (state_ == State::dead) {
    return Status::error(ECONNRESET, fmt::format("{}: the connection is gone: {}", label_,
                                                 last_error_.message()));
  }
  return io().submit(sqe, out, in, len, std::move(done));
}

// A queue failed: its commands have failed already. Reconnect with backoff when asked to.
void NvmeTcpController::dropped(const Status& why) {
  last_error_ = why;
  if (state_ != State::up) return;
  if (cfg.reconnect == 0) {
    state_ = State::dead;
    return;
  }
  state_ = State::reconnecting;
  attempt_ = 0;
  try_reconnect();
}

void NvmeTcpController::try_reconnect() {
  const auto backoff = std::chrono::milliseconds(100) * (1u << std::min(attempt_, 6u));
  reconnect_timer_ = loop_->after(backoff, [this] {
    ++attempt_;
    // The failed queues go first: their socket operations have ended (the queue failed).
    admin_.reset();
    io_.clear();
    connect_async([this](Status s) {
      if (s.ok()) {
        state_ = State::up;
        auto waiting = std::move(pending_);
        pending_.clear();
        for (auto& p : waiting) {
          if (Status sub = io().submit(p.sqe, p.out, p.in, p.len, p.done); !sub.ok()) {
            p.done(sub, Cqe{});
          }
        }
        return;
      }
      last_error_ = s;
      if (attempt_ < cfg.reconnect) return try_reconnect();
      state_ = State::dead;
      auto waiting = std::move(pending_);
      pending_.clear();
      for (auto& p : waiting) p.done(s, Cqe{});
    });
  });
}

void NvmeTcpController::keep_alive() {
  keep_alive_timer_ = loop_->after(std::chrono::milliseconds(kato_ms_ / 2), [this] {
    if (state_ == State::dead) return;
    if (!admin_ || admin_->failed()) return keep_alive();  // reconnecting: keep the beat
    Sqe ka{};
    ka.opcode = admin::kKeepAlive;
    (void)admin_->submit(ka, nullptr, nullptr, 0, [](Status, const Cqe&) {});
    keep_alive();
  });
}


}  // namespace blkcopy::nvme
