#include "nvme/host/queue.h"

#include <arpa/inet.h>
#include <blkcopy/log.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "core/checked.h"
#include "core/net.h"
#include "nvme/codec.h"

namespace blkcopy::nvme {

constexpr uint32_t kMaxPdu = 1 << 20;

// One open_async in progress: the queue being opened, what to call at the end, and whether the
// end has come (the deadline timer may fire after it).
struct HostQueue::OpenJob {
  EventLoop& loop;
  std::string where;
  QueueOptions opt;
  HostQueue::Opened done;
  HostQueue::Ptr q;
  bool finished = false;
  Timer deadline;  // TCP connect and ICReq/ICResp together; cancelled when the job finishes

  void finish(Status s) {
    if (finished) return;
    finished = true;
    deadline.cancel();
    auto cb = std::move(done);
    if (s.ok()) return cb(std::move(q));
    q.reset();
    cb(std::unexpected(std::move(s)));
  }
};

HostQueue::Opening& HostQueue::Opening::operator=(Opening&& o) noexcept {
  cancel();
  job_ = std::move(o.job_);
  return *this;
}

void HostQueue::Opening::cancel() {
  if (job_ && !job_->finished) {
    job_->finished = true;
    job_->deadline.cancel();
    job_->done = nullptr;
    job_->q.reset();
  }
  job_.reset();
}

HostQueue::Opening HostQueue::open_async(EventLoop& loop, const std::string& host, uint16_t port,
                                         const QueueOptions& o, Opened done) {
  auto job = std::make_shared<OpenJob>(OpenJob{loop, format_host_port(host, port), o, std::move(done)});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.connect_timeout_ms);
  // With an address in hand: the socket, the deadline, and the connect on the loop.
  auto start = [job, deadline](sockaddr_storage sa, socklen_t len) {
    if (job->finished) return;  // cancelled while the name was looked up
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      Status s = Status::from_errno(errno, fmt::format("{}: socket", job->where));
      return job->loop.post([job, s] { job->finish(s); });
    }
    job->q.reset(new HostQueue(job->loop, fd, job->opt));
    HostQueue& q = *job->q;
    q.peer_ = sa;
    q.peer_len_ = len;
    q.where_ = job->where;
    q.on_open_ = [job](Status st) { job->finish(std::move(st)); };
    if (job->opt.connect_timeout_ms) {
      job->deadline = job->loop.at(deadline, [job] {
        if (job->finished || !job->q) return;
        const char* step = job->q->state_ == State::connecting ? "TCP connect"
                           : job->q->state_ == State::tls      ? "TLS handshake"
                                                               : "ICReq/ICResp";
        job->q->abort(Status::error(ETIMEDOUT, fmt::format("{}: {} timed out after {} ms", job->where,
                                                           step, job->opt.connect_timeout_ms)));
      });
    }
    q.connect_pending_ = true;
    q.connect_op_ = job->loop.connect(fd, reinterpret_cast<const sockaddr*>(&q.peer_), q.peer_len_,
                                      [raw = &q](int res) {
                                        Entry e(*raw);
                                        raw->connect_pending_ = false;
                                        if (raw->failed_) return;
                                        if (res < 0) {
                                          return raw->fail(Status::from_errno(
                                              -res, fmt::format("{}: TCP connect", raw->where_)));
                                        }
                                        raw->connected();
                                      });
  };
  Opening handle(job);
  socklen_t len = 0;
  if (auto sa = numeric_address(host, port, &len)) {
    start(*sa, len);
    return handle;
  }
  // A name: looked up on a helper thread, so the loop never waits for DNS.
  auto found = std::make_shared<std::pair<sockaddr_storage, socklen_t>>();
  auto err = std::make_shared<std::string>();
  loop.offload(
      [host, port, found, err]() -> int {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
          *err = gai_strerror(rc);
          return -EHOSTUNREACH;
        }
        std::memcpy(&found->first, res->ai_addr, res->ai_addrlen);
        found->second = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
      },
      [job, found, err, start](int res) {
        if (res < 0) {
          return job->finish(Status::error(EHOSTUNREACH, fmt::format("{}: cannot resolve the "
                                                                     "name: {}",
                                                                     job->where, *err)));
        }
        start(found->first, found->second);
      });
  return handle;
}

Result<HostQueue::Ptr> HostQueue::open(EventLoop& loop, const std::string& host, uint16_t port,
                                       const QueueOptions& o) {
  std::optional<Result<Ptr>> out;
  Opening opening = open_async(loop, host, port, o, [&out](Result<Ptr> r) { out = std::move(r); });
  if (Status s = loop.run_until([&out] { return out.has_value(); }); !s.ok()) {
    return std::unexpected(s);
  }
  return std::move(*out);
}

void HostQueue::connected() {
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!opt_.tls) return handshake();
  state_ = State::tls;
  stream_.start_tls(TlsSession::client(*opt_.tls), {}, opt_.kernel_tls, [this](Status s) {
    Entry e(*this);
    if (failed_) return;
    if (!s.ok()) {
      // OpenSSL's alert names mean little to a user: say what a refusal usually is.
      const char* why = s.code() == EACCES
                            ? "the target refused the TLS PSK: a wrong key, or the target has "
                              "no TLS key for this host NQN and subsystem, or the key is for "
                              "the other cipher suite, or the target's key came from nvme-cli "
                              "2.x (libnvme 1.x derives it differently: add &tls_libnvme1); "
                          : s.code() == ECONNRESET
                            ? "the target ended the TLS handshake without an alert (Linux's "
                              "tlshd does so for a wrong or unknown key; &tls_libnvme1 for a "
                              "key that nvme-cli 2.x put into its keyring); "
                            : "";
      return fail(Status::error(s.code(), fmt::format("{}: {}{} (identity '{}')", where_, why,
                                                      s.message(), opt_.tls->identity)));
    }
    log(LogLevel::info, fmt::format("{}: TLS {}, records in {}", where_,
                                     stream_.tls()->cipher_name(), stream_.records()));
    handshake();
  });
}

// Connected (and TLS set up): ICReq out, then wait for the ICResp (on_pdu).
void HostQueue::handshake() {
  state_ = State::handshake;
  ICReq req{};
  req.hdr = {pdu::kICReq, 0, 128, 0, 128};
  req.dgst = static_cast<uint8_t>((opt_.header_digest ? 1 : 0) | (opt_.data_digest ? 2 : 0));
  send(tcp::Header(&req, sizeof req), nullptr, 0);
  receive();
}

void HostQueue::opened(Status s) {
  if (!on_open_) return;
  auto cb = std::move(on_open_);
  on_open_ = nullptr;
  loop_.post([cb = std::move(cb), s = std::move(s)] { cb(s); });
}

void HostQueue::close() {
  closing_ = true;
  failed_ = true;
  on_fail = nullptr;
  watchdog_.cancel();
  shutdown(fd_, SHUT_RDWR);
  stream_.cancel();
  if (connect_pending_) loop_.cancel(connect_op_);
  loop_.adopt(this);  // freed by the loop if it goes before the kernel answers the cancels
  free_if_idle();
}

// Once closed: gone when nothing of it runs and the kernel holds none of its buffers.
void HostQueue::free_if_idle() {
  if (closing_ && !entered_ && !recv_pending_ && !sendq_.pending() && !connect_pending_ &&
      !flush_posted_ && !stream_.busy()) {
    loop_.disown(this);
    delete this;
  }
}

HostQueue::~HostQueue() { ::close(fd_); }

void HostQueue::fail(Status s) {
  if (failed_) return;
  Entry e(*this);  // a command's callback may close the queue
  failed_ = true;
  if (state_ != State::open) {
    if (state_ == State::handshake && s.code() != ETIMEDOUT) {
      // A target that closes a clear-text connection at once may require TLS.
      const char* hint = !opt_.tls && s.code() == ECONNRESET
                             ? " (a port that requires TLS closes clear-text hosts: give the "
                               "host its TLS key, &tls_key_file= or discover --tls-key-file)"
                             : "";
      s = Status::error(s.code(), fmt::format("{}: ICReq/ICResp: {}{}", where_, s.message(), hint));
    }
    state_ = State::failed;
    shutdown(fd_, SHUT_RDWR);
    return opened(std::move(s));
  }
  state_ = State::failed;
  shutdown(fd_, SHUT_RDWR);
  fail_status_ = std::move(s);
  fail_pending_ = true;
  // A send in flight may still read callers' buffers: their commands end once it has.
  if (!sendq_.pending()) end_failed();
}

void HostQueue::end_failed() {
  if (!fail_pending_) return;
  fail_pending_ = false;
  const Status s = fail_status_;
  std::vector<uint16_t> cids;
  cmds_.for_each([&](const Cmd& c) { cids.push_back(c.sqe.cid); });
  std::vector<Done> dones;
  for (uint16_t cid : cids) dones.push_back(cmds_.take(cid).done);
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& d : dones) d(s, Cqe{});
  for (auto& c : waiting) c.done(s, Cqe{});
  if (on_fail && !closing_) on_fail(s);
}

Status HostQueue::submit(Sqe sqe, const void* out, void* in, uint32_t len, Done done) {
  if (failed_) return Status::error(ECONNRESET, "NVMe/TCP queue: the connection has ended");
  Cmd c{sqe, static_cast<const uint8_t*>(out), static_cast<uint8_t*>(in), len, std::move(done)};
  if (cmds_.full() || cmds_.size() >= opt_.depth) {
    waiting_.push_back(std::move(c));  // the target may not take more than the queue holds
  } else {
    start(std::move(c));
  }
  return {};
}

Result<Cqe> HostQueue::run_sync(Sqe sqe, const void* out, void* in, uint32_t len) {
  bool done = false;
  Status st;
  Cqe cqe{};
  if (Status s = submit(sqe, out, in, len, [&](Status s2, const Cqe& c) {
        st = s2;
        cqe = c;
        done = true;
      });
      !s.ok()) {
    return std::unexpected(s);
  }
  if (Status s = loop_.run_until([&] { return done; }); !s.ok()) return std::unexpected(s);
  if (!st.ok()) return std::unexpected(st);
  return cqe;
}

void HostQueue::start(Cmd c) {
  c.started = std::chrono::steady_clock::now();
  const uint16_t cid = cmds_.add(std::move(c));
  Cmd& cmd = *cmds_.find(cid);
  Sqe& sqe = cmd.sqe;
  sqe.flags = 0x40;  // PSDT: SGLs (fabrics require it; the Linux target refuses anything else)
  const bool in_capsule = cmd.out && cmd.len <= opt_.in_capsule;
  sqe.dptr = {};
  sqe.dptr.length = cmd.len;
  sqe.dptr.type = in_capsule ? kSglInCapsule : kSglTransport;
  auto head = tcp::frame_header(pdu::kCapsuleCmd, 72, &sqe, sizeof sqe, in_capsule ? cmd.len : 0, 0,
                                digests());
  const uint8_t* data = in_capsule ? cmd.out : nullptr;
  const uint32_t n = in_capsule ? cmd.len : 0;
  cmd.in_capsule = in_capsule;
  if (n) ++cmd.unsent;
  send(head, data, n, true, n ? cid : 0);  // ahead of queued write data: reads need not wait
  if (opt_.timeout_ms && !watchdog_.armed()) watchdog();
}

// While commands are outstanding, a timer stands at the deadline of the oldest one (its start
// plus the time limit); a command that reaches it fails the whole queue, as a host resets a
// controller that stopped answering. Arming again supersedes the timer standing.
void HostQueue::watchdog() {
  watchdog_.cancel();
  if (!opt_.timeout_ms || failed_ || cmds_.empty()) return;
  auto oldest = std::chrono::steady_clock::time_point::max();
  cmds_.for_each([&](const Cmd& c) { oldest = std::min(oldest, c.started); });
  const auto deadline = oldest + std::chrono::milliseconds(opt_.timeout_ms);
  watchdog_ = loop_.at(deadline, [this] {
    Entry e(*this);
    if (failed_) return;
    const auto now = std::chrono::steady_clock::now();
    const Cmd* late = nullptr;
    cmds_.for_each([&](const Cmd& c) {
      if (!late && now - c.started >= std::chrono::milliseconds(opt_.timeout_ms)) late = &c;
    });
    if (late) {
      return fail(Status::error(ETIMEDOUT, fmt::format("NVMe/TCP queue: command {} (opcode "
                                                       "{:#04x}) got no answer in {} ms",
                                                       late->sqe.cid, late->sqe.opcode,
                                                       opt_.timeout_ms)));
    }
    watchdog();
  });
}

void HostQueue::send(const tcp::Header& head, const uint8_t* data, uint32_t len, bool urgent,
                     uint16_t cid) {
  decltype(sendq_)::Pdu p{head, data, len, 0, opt_.data_digest && len && ic_done_, cid};
  if (p.has_ddgst) p.ddgst = crc32c(data, len);
  sendq_.push(p, urgent);
  pump_send();
}

// Commands submitted during one loop turn leave in one sendmsg: the send starts from a task
// run at the end of the turn, not at the first submit.
void HostQueue::pump_send() {
  if (flush_posted_) return;
  flush_posted_ = true;
  loop_.post([this] {
    Entry e(*this);
    flush_posted_ = false;
    if (!closing_) flush();
  });
}

void HostQueue::flush() {
  if (failed_ && ic_done_) return;
  sendq_.start(stream_, [this](int res, std::span<uint16_t> left) {
    Entry e(*this);
    for (uint16_t cid : left) {
      if (Cmd* c = cid ? cmds_.find(cid) : nullptr) --c->unsent;
    }
    if (fail_pending_) return end_failed();
    if (closing_) return;
    if (res <= 0) return fail(Status::error(ECONNRESET, "NVMe/TCP queue: send failed"));
    sent_ += static_cast<uint64_t>(res);
    pump_send();
  });
}

// Reads what the socket has and handles every whole PDU in it.
void HostQueue::receive() {
  if (failed_) return;
  recv_pending_ = true;
  stream_.recv(rbuf_.tail(), rbuf_.room(), [this](int res) {
    Entry e(*this);
    recv_pending_ = false;
    if (closing_) return;
    if (res <= 0) {
      if (res < 0 && stream_.tls()) {
        return fail(Status::error(EPROTO, fmt::format("NVMe/TCP queue: {}", stream_.receive_failure(res))));
      }
      return fail(Status::error(ECONNRESET, "NVMe/TCP queue: the target closed the connection"));
    }
    received_ += static_cast<uint64_t>(res);
    rbuf_.consumed(
        static_cast<size_t>(res),
        [this](const PduHeader& h, const uint8_t*, size_t) {
          if (h.plen >= 8 && h.plen <= kMaxPdu + 128) return true;
          fail(Status::error(EPROTO, "NVMe/TCP queue: PDU length out of range"));
          return false;
        },
        [this](const uint8_t* pdu) {
          p_ = pdu;
          on_pdu();
          return !failed_;
        });
    receive();
  });
}

}  // namespace blkcopy::nvme
