#include "nvme/host/nvme_tcp_device.h"

#include <blkcopy/units.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cctype>
#include <charconv>
#include <fstream>
#include <cstring>
#include <map>
#include <type_traits>
#include <optional>

#include "block/fanout.h"
#include "core/checked.h"
#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/copy_ranges.h"
#include "nvme/host/queue.h"

namespace blkcopy::nvme {

// The controller behind one (address, subsystem, host NQN) on one loop: an admin queue, one I/O
// queue, what Identify said, and a keep-alive timer.
class NvmeTcpController {
 public:
  static Result<std::shared_ptr<NvmeTcpController>> open(EventLoop& loop, const NvmeTcpConfig& c);
  ~NvmeTcpController() { *alive_ = false; }

  // The next I/O queue, round robin.
  HostQueue& io() { return *io_[next_io_++ % io_.size()]; }
  // Sends an I/O command; while reconnecting it waits for the new connection.
  Status submit_io(Sqe sqe, const void* out, void* in, uint32_t len, HostQueue::Done done);
  uint64_t bytes_sent() const {
    uint64_t n = admin_->bytes_sent();
    for (const auto& q : io_) n += q->bytes_sent();
    return n;
  }
  uint64_t bytes_received() const {
    uint64_t n = admin_->bytes_received();
    for (const auto& q : io_) n += q->bytes_received();
    return n;
  }
  const std::string& label() const { return label_; }

  uint32_t max_io = 1 << 20;
  NvmeTcpConfig cfg;
  bool copy = false;
  bool format2 = false;  // cross-namespace copies enabled with Host Behavior Support
  uint16_t cntlid = 0;
  std::unique_ptr<HostQueue> admin_;
  std::vector<std::unique_ptr<HostQueue>> io_;
  size_t next_io_ = 0;

 private:
  // Set-up (see connect_async below); the sync form runs the loop until it is done.
  void connect_async(std::function<void(Status)> done);
  Status connect_sync();
  void step(HostQueue& q, const char* what, Sqe sqe, const void* out, void* in, uint32_t len,
            bool must_succeed, std::function<void(const Cqe&)> next);
  void connect_queue(HostQueue& q, uint16_t qid, uint16_t id, std::function<void(const Cqe&)> next);
  struct AuthTxn;
  void authenticate(HostQueue& q, uint16_t qid, const Cqe& connected, std::function<void(const Cqe&)> next);
  void auth_reply(HostQueue& q, std::shared_ptr<AuthTxn> t);
  void auth_finish(HostQueue& q, std::shared_ptr<AuthTxn> t);
  std::optional<Status> auth_refused(const auth::Bytes& m, const char* when);
  void enable();
  void identify();
  void queues();
  void open_io();
  void setup_finished();
  void setup_failed(Status why);
  std::function<void(Status)> setup_done_;
  unsigned granted_ = 1;
  bool keep_alive_armed_ = false;
  void keep_alive();
  void dropped(const Status& why);
  void try_reconnect();

  struct Pending {
    Sqe sqe;
    const void* out;
    void* in;
    uint32_t len;
    HostQueue::Done done;
  };
  enum class State { up, reconnecting, dead } state_ = State::up;
  unsigned attempt_ = 0;
  Status last_error_;
  std::vector<Pending> pending_;

  EventLoop* loop_ = nullptr;
  std::string label_;
  uint32_t kato_ms_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

namespace {

std::string status_text(uint16_t st) {
  switch (st) {
    case status::kInvalidOpcode: return "Invalid Opcode";
    case status::kInvalidField: return "Invalid Field";
    case status::kInvalidNamespace: return "Invalid Namespace";
    case status::kLbaOutOfRange: return "LBA Out of Range";
    case status::kCommandSizeLimit: return "Command Size Limit Exceeded";
    case status::kIncompatibleNamespace: return "Incompatible Namespace";
    case status::kWriteFault: return "Write Fault";
    case status::kUnrecoveredRead: return "Unrecovered Read Error";
    default: return "error";
  }
}

uint16_t code_of(const Cqe& cqe) { return (cqe.status >> 1) & 0x7FF; }

// An NVMe status as an errno-style Status. Invalid opcode/field on a copy means "not
// supported" so that the engine emulates it.
Status to_status(const Status& transport, const Cqe& cqe, const std::string& what, bool copy) {
  if (!transport.ok()) return transport;
  const uint16_t st = code_of(cqe);
  if (st == 0) return {};
  int err = EIO;
  if (st == status::kLbaOutOfRange) err = ERANGE;
  if (copy && (st == status::kInvalidOpcode || st == status::kInvalidField ||
               st == status::kIncompatibleNamespace)) {
    err = EOPNOTSUPP;
  }
  return Status::error(err, fmt::format("{}: NVMe status {:#05x} ({})", what, st, status_text(st)));
}

std::map<std::string, std::weak_ptr<NvmeTcpController>>& registry() {
  thread_local std::map<std::string, std::weak_ptr<NvmeTcpController>> r;
  return r;
}

}  // namespace

namespace {
// A whole decimal number within [lo, hi].
template <class T>
bool number(std::string_view v, T& out, std::type_identity_t<T> lo, std::type_identity_t<T> hi) {
  T n{};
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) return false;
  out = n;
  return true;
}
}  // namespace

Result<NvmeTcpConfig> parse_nvme_tcp_config(std::string_view spec) {
  NvmeTcpConfig c;
  auto bad = [&](const std::string& why) {
    return fail(EINVAL, fmt::format("nvme-tcp:{}: {} (expected nvme-tcp://HOST:PORT/NQN?ns=N)",
                                    spec, why));
  };
  if (!spec.starts_with("//")) return bad("missing //");
  std::string_view rest = spec.substr(2);
  const size_t slash = rest.find('/');
  if (slash == rest.npos) return bad("missing /SUBSYSTEM_NQN");
  std::string_view hostport = rest.substr(0, slash);
  rest = rest.substr(slash + 1);
  auto hp = parse_host_port(hostport, "nvme-tcp", 4420);
  if (!hp) return bad(hp.error().message());
  c.host = hp->host;
  c.port = hp->port;
  const size_t q = rest.find('?');
  c.subnqn = std::string(rest.substr(0, q));
  if (c.subnqn.empty()) return bad("missing subsystem NQN");
  if (q == rest.npos) {
    c.hostnqn = default_host_nqn();
    return c;
  }
  std::string_view opts = rest.substr(q + 1);
  for (size_t at = 0; at <= opts.size();) {
    const size_t amp = std::min(opts.find('&', at), opts.size());
    std::string_view kv = opts.substr(at, amp - at);
    at = amp + 1;
    const size_t eq = kv.find('=');
    std::string_view k = kv.substr(0, eq), v = eq == kv.npos ? "" : kv.substr(eq + 1);
    if (k == "ns") {
      if (!number(v, c.nsid, 1u, 0xFFFFFFFEu)) return bad("ns must be a namespace ID >= 1");
    } else if (k == "hostnqn") {
      c.hostnqn = std::string(v);
      if (Status st = check_nqn(c.hostnqn, "hostnqn"); !st.ok()) return bad(st.message());
    } else if (k == "digest") {
      c.header_digest = v.find("header") != v.npos;
      c.data_digest = v.find("data") != v.npos;
    } else if (k == "kato") {
      if (!number(v, c.kato_ms, 0, 3'600'000)) return bad("kato must be 0 to 3600000 ms");
    } else if (k == "timeout") {
      if (!number(v, c.timeout_ms, 0, 3'600'000)) return bad("timeout must be 0 to 3600000 ms");
    } else if (k == "connect_timeout") {
      if (!number(v, c.connect_timeout_ms, 1, 600'000)) {
        return bad("connect_timeout must be 1 to 600000 ms");
      }
    } else if (k == "queues") {
      if (!number(v, c.queues, 1, 8)) return bad("queues must be 1 to 8");
    } else if (k == "reconnect") {
      if (!number(v, c.reconnect, 0, 1000)) return bad("reconnect must be 0 to 1000");
    } else if (k == "depth") {
      if (!number(v, c.depth, 2, 128)) return bad("depth must be 2 to 128");
    } else if (k == "dhchap_secret" || k == "dhchap_ctrl_secret" || k == "dhchap_secret_file" ||
               k == "dhchap_ctrl_secret_file") {
      std::string text(v);
      if (k.ends_with("_file")) {
        std::ifstream in{std::string(v)};
        if (!in || !std::getline(in, text)) return bad(fmt::format("{}: cannot read '{}'", k, v));
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
      }
      auto secret = auth::parse_secret(text);
      if (!secret) return bad(fmt::format("{}: {}", k, secret.error().message()));
      (k.starts_with("dhchap_ctrl") ? c.dhchap_ctrl_secret : c.dhchap_secret) = *secret;
    } else if (k == "ro") {
      c.read_only = true;
    } else if (!k.empty()) {
      return bad(fmt::format("unknown option '{}' (ns, hostnqn, digest, kato, timeout, queues, "
                             "connect_timeout, depth, reconnect, ro, dhchap_secret, "
                             "dhchap_ctrl_secret, dhchap_secret_file, dhchap_ctrl_secret_file)",
                             k));
    }
  }
  if (c.hostnqn.empty()) c.hostnqn = default_host_nqn();
  return c;
}

Result<std::shared_ptr<NvmeTcpController>> NvmeTcpController::open(EventLoop& loop,
                                                                  const NvmeTcpConfig& c) {
  // Controllers are shared only between opens that would connect the same way, secrets
  // included (as digests): a wrong secret must not ride on a controller a right one opened.
  auto fingerprint = [](const std::optional<auth::Secret>& s) {
    if (!s) return std::string("-");
    const auth::Bytes d = auth::digest(auth::Hash::sha256, s->key);
    return fmt::format("{:02x}", fmt::join(d, ""));
  };
  const std::string key =
      fmt::format("{}|{}:{}|{}|{}|{}{}|{}|{}|{}|{}|{}", static_cast<void*>(&loop), c.host, c.port,
                  c.subnqn, c.hostnqn, c.header_digest, c.data_digest, c.timeout_ms, c.depth,
                  c.queues, fingerprint(c.dhchap_secret), fingerprint(c.dhchap_ctrl_secret));
  if (auto existing = registry()[key].lock()) return existing;
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

void NvmeTcpController::connect_async(std::function<void(Status)> done) {
  setup_done_ = std::move(done);
  QueueOptions qo{cfg.header_digest, cfg.data_digest, 8192, 32, cfg.connect_timeout_ms,
                  cfg.connect_timeout_ms};
  HostQueue::open_async(*loop_, cfg.host, cfg.port, qo,
                        [this, alive = alive_](Result<std::unique_ptr<HostQueue>> q) {
                          if (!*alive) return;
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
  auto on_done = [this, alive = alive_, what, must_succeed, next = std::move(next)](Status st,
                                                                                    const Cqe& cqe) {
    if (!*alive) return;
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
             st == status::kConnectInvalidHost ? EACCES : ECONNREFUSED,
             fmt::format("{}: Connect refused (status {:#05x}{})", label_, st,
                         st == status::kConnectInvalidHost ? ": host " + cfg.hostnqn + " not allowed" : "")));
       });
}

// ---------------------------------------------------------------- DH-HMAC-CHAP
// After a queue's Connect: the controller asked for authentication (ATR), or it did not, which
// is refused when the host must be able to check the controller.

namespace {
Sqe auth_command(uint8_t fctype, uint32_t length) {
  Sqe sqe{};
  sqe.opcode = admin::kFabrics;
  reinterpret_cast<uint8_t*>(&sqe)[kFcType] = fctype;
  sqe.cdw10 = auth::kAuthCdw10;
  sqe.cdw11 = length;
  return sqe;
}
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
  // Every hash and group, as Linux offers them; the controller picks.
  t->out = auth::encode_negotiate({qid, {1, 2, 3}, {0, 1, 2, 3, 4, 5}});
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
  t->out = proven ? auth::encode_success2(s1->tid)
                  : auth::encode_failure(auth::kIdFailure2, s1->tid, auth::kFailFailed);
  step(q, proven ? "DH-HMAC-CHAP Success2" : "DH-HMAC-CHAP Failure2",
       auth_command(fabrics::kAuthSend, static_cast<uint32_t>(t->out.size())), t->out.data(), nullptr,
       static_cast<uint32_t>(t->out.size()), true, [this, t, proven](const Cqe&) {
         if (proven) return t->next(t->connected);
         setup_failed(Status::error(EACCES, fmt::format("{}: DH-HMAC-CHAP: the controller failed to "
                                                        "prove it holds dhchap_ctrl_secret; refusing it",
                                                        label_)));
       });
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
    std::span<const uint8_t> s(*id);
    const uint8_t mdts = (*id)[idctrl::kMdts];
    if (mdts) max_io = std::min<uint32_t>(1u << 20, 4096u << std::min<uint8_t>(mdts, 8));
    copy = nvme::get<uint16_t>(s, idctrl::kOncs) & idctrl::kOncsCopy;
    const uint16_t ocfs = nvme::get<uint16_t>(s, idctrl::kOcfs);
    if (!copy || !(ocfs & 0x4)) return queues();
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
  QueueOptions qo{cfg.header_digest, cfg.data_digest, 8192, cfg.depth, cfg.connect_timeout_ms,
                  cfg.connect_timeout_ms};
  HostQueue::open_async(*loop_, cfg.host, cfg.port, qo,
                        [this, alive = alive_](Result<std::unique_ptr<HostQueue>> q) {
                          if (!*alive) return;
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
  if (kato_ms_ && !keep_alive_armed_) keep_alive();
  auto hook = [this, alive = alive_](const Status& why) {
    if (*alive) dropped(why);
  };
  admin_->on_fail = hook;
  for (auto& q : io_) q->on_fail = hook;
  auto done = std::move(setup_done_);
  done({});
}

// Called inside a queue's callbacks: the queues go once those have returned.
void NvmeTcpController::setup_failed(Status why) {
  if (!setup_done_) return;
  auto done = std::move(setup_done_);
  setup_done_ = nullptr;
  if (admin_) admin_->abort(why);
  for (auto& q : io_) q->abort(why);
  loop_->post([this, alive = alive_, done = std::move(done), why = std::move(why)] {
    if (!*alive) return;
    admin_.reset();
    io_.clear();
    done(why);
  });
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
  loop_->after(backoff, [this, alive = alive_] {
    if (!*alive) return;
    ++attempt_;
    // The failed queues go first: their socket operations have ended (the queue failed).
    admin_.reset();
    io_.clear();
    connect_async([this, alive](Status s) {
      if (!*alive) return;
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
  keep_alive_armed_ = true;
  loop_->after(std::chrono::milliseconds(kato_ms_ / 2), [this, alive = alive_] {
    if (!*alive) return;
    keep_alive_armed_ = false;
    if (state_ == State::dead) return;
    if (!admin_ || admin_->failed()) return keep_alive();  // reconnecting: keep the beat
    Sqe ka{};
    ka.opcode = admin::kKeepAlive;
    (void)admin_->submit(ka, nullptr, nullptr, 0, [](Status, const Cqe&) {});
    keep_alive();
  });
}

Result<std::unique_ptr<NvmeTcpDevice>> NvmeTcpDevice::create(EventLoop& loop, std::string name,
                                                             const NvmeTcpConfig& cfg) {
  auto ctrl = NvmeTcpController::open(loop, cfg);
  if (!ctrl) return std::unexpected(ctrl.error());
  std::unique_ptr<NvmeTcpDevice> dev(new NvmeTcpDevice(loop, std::move(name)));
  dev->ctrl_ = *ctrl;
  dev->nsid_ = cfg.nsid;
  std::vector<uint8_t> id(4096);
  Sqe ident{};
  ident.opcode = admin::kIdentify;
  ident.nsid = cfg.nsid;
  ident.cdw10 = kCnsNamespace;
  auto r = dev->ctrl_->admin_->run_sync(ident, nullptr, id.data(), 4096);
  std::span<const uint8_t> s(id);
  if (!r || code_of(*r) || get<uint64_t>(s, idns::kNsze) == 0) {
    return fail(ENODEV, fmt::format("{}: namespace {} not found", dev->ctrl_->label(), cfg.nsid));
  }
  // What the target says is checked before use: a block size from 512 B to 64 KiB and a
  // capacity that fits in 64 bits.
  const uint8_t lbaf = id[idns::kFlbas] & 0xF;
  const uint8_t lbads = id[idns::kLbaf0 + 4 * lbaf + 2];
  auto capacity = checked_mul<uint64_t>(get<uint64_t>(s, idns::kNsze), uint64_t{1} << std::min<uint8_t>(lbads, 63));
  if (lbads < 9 || lbads > 16 || !capacity) {
    return fail(EPROTO, fmt::format("{}: namespace {}: Identify gives a block size of 2^{} bytes "
                                    "and {} blocks, which blkcopy cannot use",
                                    dev->ctrl_->label(), cfg.nsid, lbads, get<uint64_t>(s, idns::kNsze)));
  }
  dev->lbs_ = 1u << lbads;
  QueueLimits& l = dev->limits_;
  l.logical_block_size = dev->lbs_;
  l.capacity = *capacity;
  l.max_io_bytes = dev->ctrl_->max_io;
  l.read_only = cfg.read_only;
  if (dev->ctrl_->copy) {
    const uint64_t mssrl = get<uint16_t>(s, idns::kMssrl), mcl = get<uint32_t>(s, idns::kMcl);
    l.copy_segment_max_bytes = (mssrl ? mssrl : 65535) * dev->lbs_;
    l.copy_max_hw_bytes = l.copy_max_bytes = (mcl ? mcl : 65535) * uint64_t(dev->lbs_);
    l.copy_max_src_segments = id[idns::kMsrc] + 1u;
  }
  return dev;
}

NvmeTcpDevice::~NvmeTcpDevice() = default;

bool NvmeTcpDevice::same_copy_domain(const Device& other) const {
  auto* o = dynamic_cast<const NvmeTcpDevice*>(&other);
  return o && o->ctrl_ == ctrl_ && ctrl_->copy && (o->nsid_ == nsid_ || ctrl_->format2);
}

bool NvmeTcpDevice::same_storage(const Device& other) const {
  auto* o = dynamic_cast<const NvmeTcpDevice*>(&other);
  return o && o->ctrl_ == ctrl_ && o->nsid_ == nsid_;
}

uint64_t NvmeTcpDevice::wire_bytes_sent() const {
  return ctrl_->bytes_sent();
}
uint64_t NvmeTcpDevice::wire_bytes_received() const {
  return ctrl_->bytes_received();
}

Status NvmeTcpDevice::command(uint8_t opcode, uint64_t lba, uint32_t blocks, void* buf, bool out,
                              Completion done) {
  Sqe sqe{};
  sqe.opcode = opcode;
  sqe.nsid = nsid_;
  sqe.cdw10 = static_cast<uint32_t>(lba);
  sqe.cdw11 = static_cast<uint32_t>(lba >> 32);
  sqe.cdw12 = blocks - 1;
  const uint32_t len = buf ? blocks * lbs_ : 0;
  const std::string what = fmt::format("{} {}", name(), opcode == io::kRead ? "read" : "write");
  return ctrl_->submit_io(sqe, out ? buf : nullptr, out ? nullptr : buf, len,
                            [done, what](Status s, const Cqe& c) {
                              done(to_status(s, c, what, false));
                            });
}

Status NvmeTcpDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return s;
  const uint64_t lba = req.offset / lbs_;
  switch (req.op) {
    case Op::read:
      return command(io::kRead, lba, static_cast<uint32_t>(req.length / lbs_), req.buf, false, done);
    case Op::write:
      return command(io::kWrite, lba, static_cast<uint32_t>(req.length / lbs_), req.buf, true, done);
    case Op::flush: {
      Sqe sqe{};
      sqe.opcode = io::kFlush;
      sqe.nsid = nsid_;
      return ctrl_->submit_io(sqe, nullptr, nullptr, 0, [done, n = name()](Status s, const Cqe& c) {
        done(to_status(s, c, n + " flush", false));
      });
    }
    case Op::write_zeroes: {
      // At most 65536 blocks a command: one command per stretch.
      Fanout* f = Fanout::start(loop(), std::move(done));
      for (uint64_t at = 0; at < req.length / lbs_;) {
        const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(65536, req.length / lbs_ - at));
        Completion part = f->part();
        if (Status s = command(io::kWriteZeroes, lba + at, n, nullptr, false, part); !s.ok()) part(s);
        at += n;
      }
      f->submitted();
      return {};
    }
    case Op::discard: {
      auto range = std::make_shared<std::array<uint8_t, 16>>();
      const uint32_t nlb = static_cast<uint32_t>(req.length / lbs_);
      std::memcpy(range->data() + 4, &nlb, 4);
      std::memcpy(range->data() + 8, &lba, 8);
      Sqe sqe{};
      sqe.opcode = io::kDsm;
      sqe.nsid = nsid_;
      sqe.cdw10 = 0;         // one range
      sqe.cdw11 = 1u << 2;   // deallocate
      return ctrl_->submit_io(sqe, range->data(), nullptr, 16,
                                [done, range, n = name()](Status s, const Cqe& c) {
                                  done(to_status(s, c, n + " deallocate", false));
                                });
    }
    case Op::copy: copy(*req.copy, std::move(done)); return {};
  }
  return Status::error(EINVAL, "unknown request");
}

// One Copy command: every source leg becomes a range entry (format 0 when all are in this
// namespace, format 2 otherwise); the data moves on the target, never over the wire.
void NvmeTcpDevice::copy(const CopyDesc& desc, Completion done) {
  bool local = true;
  for (const CopySegment& s : desc.sources) {
    if (!same_copy_domain(*s.dev)) {
      return loop().post([done, n = name()] {
        done(Status::error(EOPNOTSUPP, n + ": copy from outside this subsystem"));
      });
    }
    local &= static_cast<const NvmeTcpDevice*>(s.dev)->nsid_ == nsid_;
  }
  std::vector<CopySource> sources;
  for (const CopySegment& s : desc.sources) {
    const auto* src = static_cast<const NvmeTcpDevice*>(s.dev);
    sources.push_back({src->nsid_, s.offset / src->lbs_, static_cast<uint32_t>(s.length / src->lbs_)});
  }
  auto ranges = std::make_shared<std::vector<uint8_t>>(encode_copy_ranges(sources, local ? 0 : 2));
  Sqe sqe{};
  sqe.opcode = io::kCopy;
  sqe.nsid = nsid_;
  const uint64_t sdlba = desc.dst.offset / lbs_;
  sqe.cdw10 = static_cast<uint32_t>(sdlba);
  sqe.cdw11 = static_cast<uint32_t>(sdlba >> 32);
  sqe.cdw12 = static_cast<uint32_t>(desc.sources.size() - 1) | ((local ? 0u : 2u) << 8);
  Status s = ctrl_->submit_io(sqe, ranges->data(), nullptr, static_cast<uint32_t>(ranges->size()),
                                [done, ranges, n = name()](Status st, const Cqe& c) {
                                  done(to_status(st, c, n + " copy", true));
                                });
  if (!s.ok()) loop().post([done, s] { done(s); });
}

DeviceInfo NvmeTcpDevice::describe() const {
  DeviceInfo info{"nvme-tcp", name(), "", {}, {}};
  info.copy_method = ctrl_->copy ? fmt::format("NVMe Copy on the target (format 0{})",
                                               ctrl_->format2 ? "; format 2 across namespaces" : "")
                                 : "none: the controller has no Copy (copies are emulated)";
  info.details.emplace_back("controller", fmt::format("{} (cntlid {})", ctrl_->label(), ctrl_->cntlid));
  info.details.emplace_back("namespace", std::to_string(nsid_));
  return info;
}

}  // namespace blkcopy::nvme
