#include "nvme/host/queue.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstring>

#include "nvme/codec.h"

namespace blkcopy::nvme {

constexpr uint32_t kMaxPdu = 1 << 20;

Result<std::unique_ptr<HostQueue>> HostQueue::open(EventLoop& loop, const std::string& host,
                                                   uint16_t port, const QueueOptions& o) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    return blkcopy::fail(EHOSTUNREACH, fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    Status s = Status::from_errno(errno, fmt::format("cannot connect to {}:{}", host, port));
    ::close(fd);
    return std::unexpected(s);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::unique_ptr<HostQueue> q(new HostQueue(loop, fd, o));
  ICReq req{};
  req.hdr = {pdu::kICReq, 0, 128, 0, 128};
  req.dgst = static_cast<uint8_t>((o.header_digest ? 1 : 0) | (o.data_digest ? 2 : 0));
  std::vector<uint8_t> head(sizeof req);
  std::memcpy(head.data(), &req, sizeof req);
  q->send(std::move(head), nullptr, 0);
  q->receive();
  HostQueue* raw = q.get();
  if (Status s = loop.run_until([raw] { return raw->ic_done_ || raw->failed_; }); !s.ok()) {
    return std::unexpected(s);
  }
  if (!q->ic_done_) {
    return blkcopy::fail(ECONNREFUSED, fmt::format("{}:{}: no NVMe/TCP connection (ICResp)", host, port));
  }
  return q;
}

HostQueue::~HostQueue() {
  *alive_ = false;
  failed_ = true;
  shutdown(fd_, SHUT_RDWR);
  // Let the socket operations in flight end before their buffers go.
  (void)loop_.run_until([this] { return !recv_pending_ && !send_pending_; });
  ::close(fd_);
}

void HostQueue::fail(Status s) {
  if (failed_) return;
  failed_ = true;
  shutdown(fd_, SHUT_RDWR);
  auto cmds = std::move(cmds_);
  cmds_.clear();
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& [cid, c] : cmds) c.done(s, Cqe{});
  for (auto& c : waiting) c.done(s, Cqe{});
  if (on_fail && *alive_) on_fail(s);
}

std::vector<uint8_t> HostQueue::header(uint8_t type, uint8_t hlen, const void* body,
                                       size_t body_len, uint32_t data_len, uint8_t flags) {
  const bool hd = opt_.header_digest, dd = opt_.data_digest && data_len;
  std::vector<uint8_t> out(hlen, 0);
  std::memcpy(out.data() + 8, body, body_len);
  PduHeader h{type,
              static_cast<uint8_t>(flags | (hd ? pdu::kFlagHdgst : 0) | (dd ? pdu::kFlagDdgst : 0)),
              hlen, static_cast<uint8_t>(data_len ? hlen + (hd ? 4 : 0) : 0),
              static_cast<uint32_t>(hlen + (hd ? 4 : 0) + data_len + (dd ? 4 : 0))};
  std::memcpy(out.data(), &h, 8);
  if (hd) {
    const uint32_t crc = crc32c(out.data(), hlen);
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(&crc),
               reinterpret_cast<const uint8_t*>(&crc) + 4);
  }
  return out;
}

Status HostQueue::submit(Sqe sqe, const void* out, void* in, uint32_t len, Done done) {
  if (failed_) return Status::error(ECONNRESET, "NVMe/TCP queue: the connection has ended");
  Cmd c{sqe, static_cast<const uint8_t*>(out), static_cast<uint8_t*>(in), len, std::move(done)};
  if (cmds_.size() >= opt_.depth) {
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
  while (cmds_.count(next_cid_) || next_cid_ == 0) ++next_cid_;
  Sqe& sqe = c.sqe;
  sqe.cid = next_cid_++;
  sqe.flags = 0x40;  // PSDT: SGLs (fabrics require it; the Linux target refuses anything else)
  const bool in_capsule = c.out && c.len <= opt_.in_capsule;
  sqe.dptr = {};
  sqe.dptr.length = c.len;
  sqe.dptr.type = in_capsule ? kSglInCapsule : kSglTransport;
  auto head = header(pdu::kCapsuleCmd, 72, &sqe, sizeof sqe, in_capsule ? c.len : 0, 0);
  const uint8_t* data = in_capsule ? c.out : nullptr;
  const uint32_t n = in_capsule ? c.len : 0;
  c.started = std::chrono::steady_clock::now();
  cmds_[sqe.cid] = std::move(c);
  send(std::move(head), data, n);
  if (opt_.timeout_ms && !watchdog_armed_) watchdog();
}

// While commands are outstanding, checks twice per timeout that none is older than it; one
// that is fails the whole queue, as a host resets a controller that stopped answering.
void HostQueue::watchdog() {
  watchdog_armed_ = true;
  loop_.after(std::chrono::milliseconds(std::max(1u, opt_.timeout_ms / 2)), [this, alive = alive_] {
    if (!*alive) return;
    watchdog_armed_ = false;
    if (failed_ || cmds_.empty()) return;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& [cid, c] : cmds_) {
      if (now - c.started > std::chrono::milliseconds(opt_.timeout_ms)) {
        return fail(Status::error(ETIMEDOUT, fmt::format("NVMe/TCP queue: command {} (opcode "
                                                         "{:#04x}) got no answer in {} ms",
                                                         cid, c.sqe.opcode, opt_.timeout_ms)));
      }
    }
    watchdog();
  });
}

void HostQueue::send(std::vector<uint8_t> head, const uint8_t* data, uint32_t len) {
  Out o{std::move(head), data, len, 0, opt_.data_digest && len && ic_done_};
  if (o.has_ddgst) o.ddgst = crc32c(data, len);
  sendq_.push_back(std::move(o));
  pump_send();
}

void HostQueue::pump_send() {
  if (send_pending_ || sendq_.empty() || (failed_ && ic_done_)) return;
  Out& o = sendq_.front();
  size_t n = 0;
  iov_[n++] = {o.head.data(), o.head.size()};
  if (o.len) iov_[n++] = {const_cast<uint8_t*>(o.data), o.len};
  if (o.has_ddgst) iov_[n++] = {&o.ddgst, 4};
  size_t skip = sent_part_, first = 0;
  while (skip && skip >= iov_[first].iov_len) skip -= iov_[first++].iov_len;
  iov_[first].iov_base = static_cast<uint8_t*>(iov_[first].iov_base) + skip;
  iov_[first].iov_len -= skip;
  msg_ = {};
  msg_.msg_iov = iov_ + first;
  msg_.msg_iovlen = n - first;
  size_t total = 0;
  for (size_t i = first; i < n; ++i) total += iov_[i].iov_len;
  send_pending_ = true;
  loop_.sendmsg(fd_, &msg_, [this, total, alive = alive_](int res) {
    send_pending_ = false;
    if (!*alive) return;
    if (res <= 0) return fail(Status::error(ECONNRESET, "NVMe/TCP queue: send failed"));
    sent_ += static_cast<uint64_t>(res);
    if (static_cast<size_t>(res) < total) {
      sent_part_ += static_cast<size_t>(res);
    } else {
      sent_part_ = 0;
      sendq_.pop_front();
    }
    pump_send();
  });
}

// Reads what the socket has and handles every whole PDU in it.
void HostQueue::receive() {
  if (failed_) return;
  recv_pending_ = true;
  loop_.recv(fd_, rbuf_.tail(), rbuf_.room(), [this, alive = alive_](int res) {
    recv_pending_ = false;
    if (!*alive) return;
    if (res <= 0) {
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

void HostQueue::on_pdu() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  auto proto = [this](const char* what) {
    fail(Status::error(EPROTO, fmt::format("NVMe/TCP queue: {}", what)));
  };
  if (h.type == pdu::kICResp) {
    ICResp r;
    std::memcpy(&r, p_, sizeof r);
    if (h.plen != 128 || r.pfv != 0 || r.maxh2cdata < 4096 || r.maxh2cdata % 4) {
      return proto("bad ICResp");
    }
    maxh2c_ = r.maxh2cdata;
    ic_done_ = true;
    return;
  }
  if (opt_.header_digest && h.type != pdu::kC2HTermReq) {
    uint32_t got;
    std::memcpy(&got, p_ + h.hlen, 4);
    if (h.plen < h.hlen + 4u || got != crc32c(p_, h.hlen)) return proto("header digest");
  }
  if (h.type == pdu::kC2HTermReq) return proto("the target ended the connection (C2HTermReq)");
  if (h.type == pdu::kCapsuleResp) {
    Cqe cqe;
    std::memcpy(&cqe, p_ + 8, sizeof cqe);
    auto it = cmds_.find(cqe.cid);
    if (it == cmds_.end()) return proto("completion for an unknown command");
    Done done = std::move(it->second.done);
    cmds_.erase(it);
    if (!waiting_.empty()) {
      start(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    return done(Status(), cqe);
  }
  if (h.type == pdu::kC2HData) {
    DataPdu d;
    std::memcpy(&d, p_, sizeof d);
    auto it = cmds_.find(d.cccid);
    if (it == cmds_.end() || !it->second.in || d.datao + uint64_t(d.datal) > it->second.len ||
        h.pdo + uint64_t(d.datal) > h.plen) {
      return proto("C2HData out of range");
    }
    if (opt_.data_digest) {
      uint32_t got;
      std::memcpy(&got, p_ + h.pdo + d.datal, 4);
      if (got != crc32c(p_ + h.pdo, d.datal)) return proto("data digest");
    }
    std::memcpy(it->second.in + d.datao, p_ + h.pdo, d.datal);
    if (h.flags & pdu::kFlagSuccess) {  // no response capsule follows
      Done done = std::move(it->second.done);
      Cqe cqe{};
      cqe.cid = d.cccid;
      cmds_.erase(it);
      if (!waiting_.empty()) {
        start(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      done(Status(), cqe);
    }
    return;
  }
  if (h.type == pdu::kR2T) {
    R2T r;
    std::memcpy(&r, p_, sizeof r);
    auto it = cmds_.find(r.cccid);
    if (it == cmds_.end() || !it->second.out || r.r2to + uint64_t(r.r2tl) > it->second.len) {
      return proto("R2T out of range");
    }
    for (uint32_t off = r.r2to; off < r.r2to + r.r2tl;) {
      const uint32_t n = std::min(maxh2c_, r.r2to + r.r2tl - off);
      DataPdu d{};
      d.cccid = r.cccid;
      d.ttag = r.ttag;
      d.datao = off;
      d.datal = n;
      const bool last = off + n == r.r2to + r.r2tl;
      send(header(pdu::kH2CData, 24, reinterpret_cast<uint8_t*>(&d) + 8, 16, n,
                  last ? pdu::kFlagLast : 0),
           it->second.out + off, n);
      off += n;
    }
    return;
  }
  proto("unexpected PDU type");
}

}  // namespace blkcopy::nvme
