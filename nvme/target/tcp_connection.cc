#include "nvme/target/tcp_connection.h"

#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/checked.h"
#include "nvme/codec.h"
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

TcpConnection::TcpConnection(TargetImpl& t, unsigned worker, EventLoop& loop, int fd,
                             std::string local_addr, std::string peer_addr, PortTls tls)
    : t_(t),
      loop_(loop),
      fd_(fd),
      stream_(loop, fd),
      tls_(tls),
      local_addr_(std::move(local_addr)),
      peer_addr_(std::move(peer_addr)),
      opened_(Clock::now()),
      queue_(t, worker, loop, *this) {}

TcpConnection::~TcpConnection() {
  if (fd_ >= 0) ::close(fd_);  // the target went away: the host sees the connection end
}

void TcpConnection::abort() {
  if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
}

bool TcpConnection::port_removed() const {
  if (!via_port_) return false;
  auto p = port_.lock();
  return !p || p->removed;
}

bool TcpConnection::idle() const {
  return !recv_pending_ && !sendq_.pending() && !flush_posted_ && !resume_posted_ &&
         !stream_.busy() && !queue_.busy();
}

// ---------------------------------------------------------------- PDUs in

// Reads what the socket has and handles every whole PDU in it (nvme/tcp/pdu_buffer.h).
void TcpConnection::receive() {
  if (closing_) return maybe_free();
  recv_pending_ = true;
  stream_.recv(rbuf_.tail(), rbuf_.room(), [this](int res) {
    recv_pending_ = false;
    if (res <= 0) {
      if (res == 0) return close("host closed the connection");
      return close(stream_.receive_failure(res));
    }
    if (!tls_decided_) return first_bytes(static_cast<size_t>(res));
    parse(static_cast<size_t>(res));
    if (!paused_) receive();
  });
}

// A TLS record of type handshake (22) starts a ClientHello; an NVMe/TCP PDU starts with its
// type, and ICReq is 0. The bytes read go to TLS, or stay for the PDU parser.
void TcpConnection::first_bytes(size_t n) {
  tls_decided_ = true;
  const uint8_t* first = rbuf_.tail();
  if (first[0] != 22) {
    if (tls_ == PortTls::required) {
      ++t_.mut_stats().errors;
      t_.log_refusal(TargetImpl::Refusal::clear_text, fmt::format("serve: refused {}: clear text on a port that requires TLS (a "
                                 "host without a TLS key?)",
                                 peer_addr_));
      return close("clear text on a port that requires TLS");
    }
    parse(n);
    if (!paused_) receive();
    return;
  }
  if (tls_ == PortTls::none) {  // before the PDU parser takes the record header for a length
    t_.log_refusal(TargetImpl::Refusal::tls, fmt::format("serve: refused {}: a TLS ClientHello on a "
                                                         "port without TLS (serve it with --tls-key?)",
                                                         peer_addr_));
    // A termination PDU where a TLS record is due: the host's TLS says "not TLS here".
    return terminate(kFesInvalidHeaderField, 0, true);
  }
  auto session = TlsSession::server([this](std::string_view id) { return t_.tls_psk(id); });
  stream_.start_tls(std::move(session), std::span(first, n), t_.kernel_tls(), [this](Status s) {
    if (!s.ok() && closing_) return maybe_free();  // the target cut it (a stalled handshake)
    if (!s.ok()) {
      ++t_.mut_stats().errors;
      t_.log_refusal(TargetImpl::Refusal::tls, fmt::format("serve: refused {}: {}", peer_addr_, s.message()));
      return close(s.message());
    }
    if (closing_) return maybe_free();
    const TlsSession& tls = *stream_.tls();
    tls_peer_ = *auth::parse_tls_identity(tls.identity());  // the lookup parsed it already
    log_info(fmt::format("serve: TLS with {} at {} for {} ({}, records in {})", tls_peer_->hostnqn,
                         peer_addr_, tls_peer_->subnqn, tls.cipher_name(), stream_.records()));
    receive();
  });
}

void TcpConnection::parse(size_t n) {
  burst_ = 0;
  rbuf_.consumed(
      n,
      [this](const PduHeader& h, const uint8_t* pdu, size_t available) {
        p_ = pdu;
        p_len_ = available;
        // Before the ICReq only an ICReq-sized PDU may be announced: a peer cannot make the
        // buffer grow before it has said it speaks NVMe/TCP.
        const uint32_t most = ic_done_ ? kMaxPdu : sizeof(ICReq);
        if (h.plen >= 8 && h.plen <= most && h.hlen >= 8 && h.hlen <= h.plen) return true;
        terminate(h.plen > most ? kFesDataLimitExceeded : kFesInvalidHeaderField,
                  h.plen > most ? 4 : 2);
        return false;
      },
      [this](const uint8_t*) {
        on_pdu();
        // Whatever path the data came by (in the capsule, or a long Copy's ranges after an R2T),
        // a connection holding more than kInCapsuleHeld stops reading; release() resumes it.
        if (!closing_ && queue_.in_capsule_held() > kInCapsuleHeld) paused_ = true;
        if (!closing_ && !paused_ && ++burst_ == kBurst) {
          paused_ = true;
          resume_soon();
        }
        return !closing_ && !paused_;
      });
  // A PDU begun and not finished is the host's doing only while the connection is reading.
  if (!rbuf_.partial() || paused_) {
    partial_since_.reset();
  } else if (!partial_since_) {
    partial_since_ = Clock::now();
  }
}

void TcpConnection::release(TargetRequest& r) {
  queue_.release(r);
  // Not once closing: maybe_free() releases the last requests just before the connection goes.
  if (paused_ && !closing_ && queue_.in_capsule_held() <= kInCapsuleHeld) resume_soon();
}

// Goes on with the PDUs already received, in a coming loop round, then reads again.
void TcpConnection::resume_soon() {
  if (resume_posted_) return;
  resume_posted_ = true;
  loop_.post([this] {
    resume_posted_ = false;
    if (closing_) return maybe_free();
    if (queue_.in_capsule_held() > kInCapsuleHeld) return;  // release() resumes it
    paused_ = false;
    parse(0);  // what the pause left in the buffer
    if (!paused_ && !closing_ && !recv_pending_) receive();
  });
}

void TcpConnection::on_pdu() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  if (!ic_done_) {
    if (h.type != pdu::kICReq) return terminate(kFesPduSequenceError, 0);
    return on_icreq();
  }
  // Header digest: CRC32C of the header, right after it.
  if (hdgst_ && h.type != pdu::kH2CTermReq) {
    if (!(h.flags & pdu::kFlagHdgst) || h.plen < h.hlen + 4u) return terminate(kFesInvalidHeaderField, 1);
    uint32_t got;
    std::memcpy(&got, p_ + h.hlen, 4);
    if (got != crc32c(p_, h.hlen)) return terminate(kFesHeaderDigestError, 0);
  }
  switch (h.type) {
    case pdu::kCapsuleCmd: return on_capsule();
    case pdu::kH2CData: return on_h2cdata();
    case pdu::kH2CTermReq: return close("host sent a termination request");
    default: return terminate(kFesInvalidHeaderField, 0);
  }
}

void TcpConnection::on_icreq() {
  ICReq req;
  std::memcpy(&req, p_, sizeof req);
  if (req.hdr.plen != 128 || req.hdr.hlen != 128 || req.pfv != 0) {
    return terminate(kFesInvalidHeaderField, req.pfv != 0 ? 8 : 4);
  }
  // Padding of C2HData to a host's alignment is not offered (nor by Linux nvmet): HPDA 0 only.
  if (req.hpda != 0) return terminate(kFesInvalidHeaderField, 10);
  hdgst_ = req.dgst & 1;
  ddgst_ = req.dgst & 2;
  ic_done_ = true;
  rbuf_.reserve(256 * 1024);  // many PDUs per receive from now on (32 4-KiB write capsules)
  ICResp r{};
  r.hdr = {pdu::kICResp, 0, 128, 0, 128};
  r.pfv = 0;
  r.cpda = 0;
  r.dgst = req.dgst & 3;
  r.maxh2cdata = kMaxH2CData;
  send(tcp::Header(&r, sizeof r));
}

void TcpConnection::on_capsule() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  if (h.hlen != 72) return terminate(kFesInvalidHeaderField, 2);
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = h.pdo ? h.pdo : 72 + hd;
  if (pdo < 72 + hd || pdo > h.plen) return terminate(kFesInvalidHeaderField, 3);
  const uint32_t dd = (ddgst_ && h.plen > pdo) ? 4 : 0;
  if (h.plen - pdo < dd) return terminate(kFesInvalidHeaderField, 4);
  // plen >= pdo + dd from here, so this cannot wrap.
  const uint32_t in_capsule = h.plen - pdo - dd;
  // No more in-capsule data than IOCCSZ announces (Linux nvmet ends such a connection too).
  if (in_capsule > kInCapsule) return terminate(kFesDataLimitExceeded, 0);
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + h.plen - 4, 4);
    if (got != crc32c(p_ + pdo, in_capsule)) return terminate(kFesHeaderDigestError, 0);
  }
  // The host may not have more commands outstanding than its queue holds: memory stays bounded
  // (answers waiting to be sent included) for every connection.
  TargetRequest* r = queue_.take();
  if (!r) return terminate(kFesPduSequenceError, 0);
  std::memcpy(&r->sqe, p_ + 8, sizeof(Sqe));
  const SglDesc& sgl = r->sqe.dptr;
  if (sgl.length > kMaxTransfer + 4096) return queue_.complete(*r, st(status::kInvalidField));
  r->data_len = sgl.length;
  if (sgl.type == kSglInCapsule) {
    // The offset is the host's: checked without wrap-around against what the capsule holds.
    if (!in_bounds(sgl.addr, sgl.length, in_capsule)) {
      return queue_.complete(*r, st(status::kSglLengthInvalid));
    }
    if (!queue_.copy_in(*r, p_ + pdo + sgl.addr)) return queue_.complete(*r, st(status::kInternal));
    return queue_.execute(*r);
  }
  if (in_capsule) {
    queue_.release(*r);
    return terminate(kFesDataOutOfRange, 0);
  }
  const bool conflict = std::any_of(awaiting_data_.begin(), awaiting_data_.end(),
                                    [&](const TargetRequest* w) { return w->sqe.cid == r->sqe.cid; });
  if (conflict) return queue_.complete(*r, st(status::kCidConflict));
  queue_.need_buffer(*r);  // buffer_ready() now, or once the budget has room
}

void TcpConnection::buffer_ready(TargetRequest& r) {
  if (closing_) return queue_.release(r);
  // Fabrics commands give the direction of their data in FCTYPE bits 1:0 (01b: to the
  // controller); other commands in the opcode's bit 0.
  const auto* sqe = reinterpret_cast<const uint8_t*>(&r.sqe);
  const bool host_to_ctrl = r.sqe.opcode == admin::kFabrics ? (sqe[kFcType] & 3) == 1
                                                            : (r.sqe.opcode & 1) != 0;
  if (!host_to_ctrl || !r.data_len) return queue_.execute(r);
  // Ask for the data: one R2T for all of it (the host splits it into H2CData PDUs).
  R2T t{};
  t.cccid = r.sqe.cid;
  t.ttag = r.sqe.cid;
  t.r2to = 0;
  t.r2tl = r.data_len;
  r.r2t_at = Clock::now();
  awaiting_data_.push_back(&r);
  send(tcp::frame_pdu(pdu::kR2T, t, 0, 0, digests()), nullptr, 0, false, nullptr, true);
}

void TcpConnection::on_h2cdata() {
  DataPdu d;
  std::memcpy(&d, p_, sizeof d);
  auto it = std::find_if(awaiting_data_.begin(), awaiting_data_.end(),
                         [&](const TargetRequest* w) { return w->sqe.cid == d.ttag; });
  if (it == awaiting_data_.end() || d.hdr.hlen != 24) return terminate(kFesInvalidHeaderField, 10);
  TargetRequest& r = **it;
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = d.hdr.pdo ? d.hdr.pdo : 24 + hd;
  const uint32_t dd = ddgst_ ? 4 : 0;
  // Every length is the host's: sums in 64 bits cannot wrap.
  if (pdo < 24 + hd || uint64_t(pdo) + d.datal + dd != d.hdr.plen || d.datao != r.received ||
      !in_bounds(d.datao, d.datal, r.data_len) || d.datal > kMaxH2CData) {
    return terminate(kFesDataOutOfRange, 12);
  }
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + pdo + d.datal, 4);
    if (got != crc32c(p_ + pdo, d.datal)) return terminate(kFesHeaderDigestError, 0);
  }
  if (d.datal) std::memcpy(r.data + d.datao, p_ + pdo, d.datal);
  r.received += d.datal;
  if (r.received == r.data_len) {
    awaiting_data_.erase(it);
    queue_.execute(r);
  }
}

void TcpConnection::terminate(uint16_t fes, uint32_t fei, bool logged) {
  if (!logged) {
    log_warning(fmt::format("serve: ending a connection: bad PDU (type {:#04x}, error {}, field "
                            "at byte {})",
                            p_len_ ? p_[0] : 0, fes, fei));
  }
  TermReq term{};
  const uint32_t copied = std::min<uint32_t>(static_cast<uint32_t>(p_len_), kTermReqMaxLen - 24);
  term.hdr = {pdu::kC2HTermReq, 0, 24, 0, 24 + copied};
  term.fes = fes;
  term.fei = fei;
  uint8_t out[kTermReqMaxLen];
  std::memcpy(out, &term, 24);
  if (copied) std::memcpy(out + 24, p_, copied);
  ++t_.mut_stats().errors;
  send(tcp::Header(out, 24 + copied));
  closing_ = true;  // the socket is shut once the termination PDU is out
  closing_since_ = Clock::now();
  queue_.close();
}

// ---------------------------------------------------------------- PDUs out

// Sends the data of a successful read (C2HData), then the completion; a host that disabled SQ
// flow control needs no completion after a read: C2HData's SUCCESS flag ends the command.
void TcpConnection::complete(TargetRequest& r) {
  if (closing_) {
    release(r);
    return maybe_free();
  }
  if (r.c2h && r.cqe.status == 0) {
    DataPdu d{};
    d.cccid = r.sqe.cid;
    d.datao = 0;
    d.datal = r.c2h;
    if (queue_.session.sq_flow_disabled) {
      auto out = tcp::frame_pdu(pdu::kC2HData, d, r.c2h, pdu::kFlagLast | pdu::kFlagSuccess,
                                digests());
      return send(std::move(out), r.data, r.c2h, true, &r);
    }
    send(tcp::frame_pdu(pdu::kC2HData, d, r.c2h, pdu::kFlagLast, digests()), r.data, r.c2h, true);
  }
  CapsuleResp resp{};
  resp.cqe = r.cqe;
  // The request (and its data, which a C2HData PDU ahead may point into) stays until the
  // completion has left.
  send(tcp::frame_pdu(pdu::kCapsuleResp, resp, 0, 0, digests()), nullptr, 0, false, &r);
}

void TcpConnection::send(const tcp::Header& head, const uint8_t* data, uint32_t len,
                         bool data_digest, TargetRequest* done, bool urgent) {
  decltype(sendq_)::Pdu p{head, data, len, 0, data_digest && ddgst_ && len, done};
  if (p.has_ddgst) p.ddgst = crc32c(data, len);
  if (sendq_.empty()) front_since_ = Clock::now();
  sendq_.push(p, urgent);
  pump_send();
}

// PDUs queued during one loop turn (the completions of every command that ended in it) leave
// together: the send starts from a task run at the end of the turn, not at the first push.
void TcpConnection::pump_send() {
  if (flush_posted_) return;
  flush_posted_ = true;
  loop_.post([this] {
    flush_posted_ = false;
    flush();
  });
}

void TcpConnection::flush() {
  if (sendq_.pending() || sendq_.empty()) {
    if (!sendq_.pending() && closing_) maybe_free();
    return;
  }
  sendq_.start(stream_, [this](int res, auto& left) {
    if (res < 0) {
      sendq_.clear([this](TargetRequest* r) {
        if (r) release(*r);
      });
      return close("send error");
    }
    // A completion that has left frees its request (and the data sent before it).
    for (TargetRequest* r : left) {
      if (r) release(*r);
    }
    if (!left.empty()) front_since_ = Clock::now();
    pump_send();
  });
}

// ---------------------------------------------------------------- closing and time limits

void TcpConnection::close(const std::string& why) {
  if (!closing_) {
    closing_ = true;
    closing_since_ = Clock::now();
    log_info(fmt::format("serve: connection closed: {}", why));
    queue_.close();
  }
  shutdown(fd_, SHUT_RDWR);
  maybe_free();
}

void TcpConnection::maybe_free() {
  if (!closing_ || recv_pending_ || sendq_.pending() || flush_posted_ || resume_posted_ ||
      stream_.busy() || queue_.busy()) {
    return;
  }
  if (!sendq_.empty() && fd_ >= 0) return pump_send();  // the last PDUs go out first
  if (fd_ < 0) return;
  sendq_.clear([this](TargetRequest* r) {
    if (r) release(*r);
  });
  for (TargetRequest* r : awaiting_data_) release(*r);
  awaiting_data_.clear();
  shutdown(fd_, SHUT_RDWR);
  ::close(fd_);
  fd_ = -1;
  if (on_finished) on_finished();
}

std::string TcpConnection::stalled(Clock::time_point now, bool& undrained) const {
  using std::chrono::milliseconds;
  const TargetLimits& l = t_.limits();
  undrained = false;
  if (!ic_done_ && now - opened_ > milliseconds(l.handshake_ms)) {
    return fmt::format("no ICReq within {} ms", l.handshake_ms);
  }
  if (std::string why = queue_.stalled(opened_, now); !why.empty()) return why;
  if (partial_since_ && now - *partial_since_ > milliseconds(l.pdu_ms)) {
    return fmt::format("a PDU begun and not finished within {} ms", l.pdu_ms);
  }
  for (const TargetRequest* r : awaiting_data_) {
    if (now - r->r2t_at > milliseconds(l.pdu_ms)) {
      return fmt::format("the data of command {} asked for by an R2T did not arrive within {} ms",
                         r->sqe.cid, l.pdu_ms);
    }
  }
  if (!sendq_.empty() && now - front_since_ > milliseconds(l.drain_ms)) {
    undrained = true;
    return fmt::format("the host did not take its answers for {} ms", l.drain_ms);
  }
  return {};
}

void TcpConnection::cut_if_stuck(Clock::time_point now) {
  if (closing_ && fd_ >= 0 && now - closing_since_ > std::chrono::milliseconds(t_.limits().pdu_ms)) {
    shutdown(fd_, SHUT_RDWR);
  }
}

}  // namespace blkcopy::nvme
