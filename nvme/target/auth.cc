#include "nvme/target/auth.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace blkcopy::nvme {

using namespace auth;

void AuthSession::fail(uint8_t explanation, std::string why) {
  state_ = State::failure1;
  explanation_ = explanation;
  why_ = std::move(why);
  ++failures_;
}

void DhJob::run() {
  if (generate) {
    auto k = DhKey::generate(group);
    if (!k) {
      status = k.error();
      return;
    }
    key = std::move(*k);
    return;
  }
  auto sh = key->shared_secret(peer);
  if (!sh) {
    status = sh.error();
    return;
  }
  shared = std::move(*sh);
}

void AuthSession::resume(DhJob& job) {
  job_pending_ = false;
  if (job.generate) {
    if (!job.status.ok()) return fail(kFailDhUnusable, job.status.message());
    dh_ = std::move(job.key);
    return challenge_ready();
  }
  dh_ = std::move(job.key);
  if (!job.status.ok()) return fail(kFailIncorrectPayload, job.status.message());
  shared_ = std::move(job.shared);
  check_reply(reply_);
}

void AuthSession::challenge_ready() {
  c1_ = random_bytes(hash_len(hash_));
  auto s = random_bytes(4);
  std::memcpy(&seq_, s.data(), 4);
  seq_ |= 1;  // never 0
  state_ = State::challenge;
}

std::unique_ptr<DhJob> AuthSession::send(std::span<const uint8_t> msg) {
  auto fail = [this](uint8_t e, std::string why) -> std::unique_ptr<DhJob> {
    AuthSession::fail(e, std::move(why));
    return nullptr;
  };
  auto h = decode_header(msg);
  if (!h) return fail(kFailIncorrectPayload, h.error().message());
  if (h->type == kTypeCommon && h->id == kIdFailure2) {
    state_ = State::failure1;
    why_ = "the host reported that the controller failed to authenticate";
    ++failures_;
    return nullptr;
  }
  // A new Negotiate restarts the transaction, whatever the state (the host may re-authenticate).
  if (h->type == kTypeCommon && h->id == kIdNegotiate) {
    auto n = decode_negotiate(msg);
    if (!n) return fail(kFailIncorrectPayload, n.error().message());
    ++started_;
    tid_ = n->tid;
    auto offered = [](const std::vector<uint8_t>& ids, uint8_t id) {
      return std::find(ids.begin(), ids.end(), id) != ids.end();
    };
    if (offered(n->hashes, static_cast<uint8_t>(keys_.hash))) {
      hash_ = keys_.hash;
    } else {
      auto it = std::find_if(n->hashes.begin(), n->hashes.end(), [](uint8_t id) { return id >= 1 && id <= 3; });
      if (it == n->hashes.end()) return fail(kFailHashUnusable, "the host offered no usable hash");
      hash_ = static_cast<Hash>(*it);
    }
    if (!offered(n->dhgroups, keys_.dhgroup)) {
      return fail(kFailDhUnusable, fmt::format("the host did not offer DH group {}",
                                               dhgroup_name(keys_.dhgroup)));
    }
    dhgroup_ = keys_.dhgroup;
    dh_.reset();
    if (dhgroup_ == kDhNull) {
      challenge_ready();
      return nullptr;
    }
    auto job = std::make_unique<DhJob>();
    job->generate = true;
    job->group = dhgroup_;
    job_pending_ = true;
    return job;
  }
  if (h->tid != tid_) return fail(kFailIncorrectPayload, "transaction ID changed");
  if (state_ == State::reply && h->type == kTypeDhchap && h->id == kIdReply) {
    auto r = decode_reply(msg, hash_len(hash_), dhgroup_bytes(dhgroup_));
    if (!r) return fail(kFailIncorrectPayload, r.error().message());
    shared_.clear();
    if (!dh_) {
      check_reply(*r);
      return nullptr;
    }
    reply_ = std::move(*r);
    auto job = std::make_unique<DhJob>();
    job->key = std::move(dh_);
    job->peer = reply_.dh;
    job_pending_ = true;
    return job;
  }
  if (state_ == State::success2 && h->type == kTypeDhchap && h->id == kIdSuccess2) {
    state_ = State::done;
    started_ = 0;
    return nullptr;
  }
  return fail(kFailIncorrectProtocol,
              fmt::format("message {:#04x}/{:#04x} out of sequence", h->type, h->id));
}

void AuthSession::check_reply(const Reply& r) {
  const size_t hl = hash_len(hash_);
  const Bytes kh = transformed_key(keys_.key, hostnqn_);
  const Bytes expected =
      host_response(hash_, kh, augmented_challenge(hash_, c1_, shared_), seq_, tid_, hostnqn_, subnqn_);
  if (!same(expected, r.r)) return fail(kFailFailed, "the host's response did not match its key");
  Success1 s1{tid_, false, {}};
  if (r.cvalid) {
    if (!keys_.ctrl_key) {
      return fail(kFailNotUsable, "the host asked the controller to authenticate, and no "
                                  "controller key is configured for it");
    }
    const Bytes kc = transformed_key(*keys_.ctrl_key, subnqn_);
    s1.rvalid = true;
    s1.r = controller_response(hash_, kc, augmented_challenge(hash_, r.c2, shared_), r.seq, tid_,
                               subnqn_, hostnqn_);
  }
  success1_ = encode_success1(s1, hl);
  state_ = State::success1;
}

bool AuthSession::receive(std::span<uint8_t> out) {
  Bytes msg;
  switch (state_) {
    case State::challenge:
      msg = encode_challenge({tid_, hash_, dhgroup_, seq_, c1_, dh_ ? dh_->public_value() : Bytes{}});
      state_ = State::reply;
      break;
    case State::success1:
      msg = success1_;
      state_ = success1_[8] ? State::success2 : State::done;  // RVALID: the host answers
      if (state_ == State::done) started_ = 0;
      break;
    case State::failure1:
      msg = encode_failure(kIdFailure1, tid_, explanation_);
      break;
    default: return false;
  }
  if (msg.size() > out.size()) {
    fail(kFailIncorrectPayload, "the host's Auth Receive buffer is too small");
    msg = encode_failure(kIdFailure1, tid_, explanation_);
  }
  std::fill(out.begin(), out.end(), 0);
  std::memcpy(out.data(), msg.data(), std::min(msg.size(), out.size()));
  return true;
}

}  // namespace blkcopy::nvme
