// A connection's transport: PDUs in and out, capsules, R2T/H2CData, C2HData, completions.
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

// ---------------------------------------------------------------- connection: transport

// Reads what the socket has and handles every whole PDU in it (nvme/tcp/pdu_buffer.h).
void Connection::receive() {
  if (closing_) return maybe_free();
  recv_pending_ = true;
  loop_.recv(fd_, rbuf_.tail(), rbuf_.room(), [this](int res) {
    recv_pending_ = false;
    if (res <= 0) return close(res == 0 ? "host closed the connection" : "receive error");
    rbuf_.consumed(
        static_cast<size_t>(res),
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
          return !closing_;
        });
    if (!rbuf_.partial()) {
      partial_since_.reset();
    } else if (!partial_since_) {
      partial_since_ = Clock::now();
    }
    receive();
  });
}

std::string Connection::stalled(Clock::time_point now, const TargetLimits& l) const {
  using std::chrono::milliseconds;
  if (!ic_done_ && now - opened_ > milliseconds(l.handshake_ms)) {
    return fmt::format("no ICReq within {} ms", l.handshake_ms);
  }
  if (!ctrl_ && now - opened_ > milliseconds(l.connect_ms)) {
    return fmt::format("no fabrics Connect within {} ms", l.connect_ms);
  }
  if (!authenticated_ && now - opened_ > milliseconds(l.connect_ms)) {
    return fmt::format("DH-HMAC-CHAP authentication not completed within {} ms", l.connect_ms);
  }
  if (partial_since_ && now - *partial_since_ > milliseconds(l.pdu_ms)) {
    return fmt::format("a PDU begun and not finished within {} ms", l.pdu_ms);
  }
  for (const auto& [tag, c] : awaiting_data_) {
    if (now - c->r2t_at > milliseconds(l.pdu_ms)) {
      return fmt::format("the data of command {} asked for by an R2T did not arrive within {} ms",
                         tag, l.pdu_ms);
    }
  }
  return {};
}

void Connection::on_pdu() {
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

void Connection::on_icreq() {
  ICReq req;
  std::memcpy(&req, p_, sizeof req);
  if (req.hdr.plen != 128 || req.hdr.hlen != 128 || req.pfv != 0) {
    return terminate(kFesInvalidHeaderField, req.pfv != 0 ? 8 : 4);
  }
  hdgst_ = req.dgst & 1;
  ddgst_ = req.dgst & 2;
  ic_done_ = true;
  rbuf_.reserve(256 * 1024);  // many PDUs per receive from now on (32 4-KiB write capsules)
  std::vector<uint8_t> out(sizeof(ICResp), 0);
  ICResp r{};
  r.hdr = {pdu::kICResp, 0, 128, 0, 128};
  r.pfv = 0;
  r.cpda = 0;
  r.dgst = req.dgst & 3;
  r.maxh2cdata = kMaxH2CData;
  std::memcpy(out.data(), &r, sizeof r);
  send(std::move(out));
}

void Connection::terminate(uint16_t fes, uint32_t fei) {
  log_warning(fmt::format("serve: ending a connection: bad PDU (type {:#04x}, error {}, field at "
                          "byte {})",
                          p_len_ ? p_[0] : 0, fes, fei));
  TermReq term{};
  const uint32_t copied = std::min<uint32_t>(static_cast<uint32_t>(p_len_), kTermReqMaxLen - 24);
  term.hdr = {pdu::kC2HTermReq, 0, 24, 0, 24 + copied};
  term.fes = fes;
  term.fei = fei;
  std::vector<uint8_t> out(24 + copied);
  std::memcpy(out.data(), &term, 24);
  if (copied) std::memcpy(out.data() + 24, p_, copied);
  ++t_.mut_stats().errors;
  send(std::move(out));
  closing_ = true;  // the socket is shut once the termination PDU is out
  closing_since_ = Clock::now();
}

void Connection::send(std::vector<uint8_t> head, const uint8_t* data, uint32_t len,
                      bool data_digest, std::unique_ptr<Command> done, bool urgent) {
  decltype(sendq_)::Pdu p{std::move(head), data, len, 0, data_digest && ddgst_ && len, std::move(done)};
  if (p.has_ddgst) p.ddgst = crc32c(data, len);
  sendq_.push(std::move(p), urgent);
  pump_send();
}

// PDUs queued during one loop turn (the completions of every command that ended in it) leave
// together: the send starts from a task run at the end of the turn, not at the first push.
void Connection::pump_send() {
  if (flush_posted_) return;
  flush_posted_ = true;
  loop_.post([this] {
    flush_posted_ = false;
    flush();
  });
}

void Connection::flush() {
  if (sendq_.pending() || sendq_.empty()) {
    if (!sendq_.pending() && sendq_.empty() && closing_) maybe_free();
    return;
  }
  sendq_.start(loop_, fd_, [this](int res, auto& left) {
    if (res < 0) {
      sendq_.clear();
      return close("send error");
    }
    // A completion that has left frees its queue entry (and the data sent before it).
    for (auto& p : left) {
      if (p.owner && outstanding_) --outstanding_;
    }
    pump_send();
  });
}

void Connection::close(const std::string& why) {
  if (!closing_) {
    closing_ = true;
    closing_since_ = Clock::now();
    log_info(fmt::format("serve: connection closed: {}", why));
  }
  shutdown(fd_, SHUT_RDWR);
  maybe_free();
}

void Connection::maybe_free() {
  if (!closing_ || recv_pending_ || sendq_.pending() || flush_posted_ || in_flight_) return;
  if (!sendq_.empty()) return pump_send();
  if (fd_ >= 0) {
    shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
    t_.drop_controller(ctrl_, qid_);
    ctrl_.reset();
    aers_.clear();
    awaiting_data_.clear();
    if (on_finished) on_finished();
  }
}

void Connection::at_home(std::function<void()> fn) {
  if (&loop_ == &home_) return fn();
  home_.post_remote(std::move(fn));
}


// ---------------------------------------------------------------- connection: commands

// Every command gets a buffer, one page at least, so that no path meets a null pointer for an
// empty transfer (the fuzzer found Get Log Page with no data doing memset(nullptr, 0, 0)).
bool Connection::alloc_data(Command& c, uint32_t len) {
  c.data_len = len;
  c.data = take_buffer(len, c.data_cap);
  return c.data != nullptr;
}

namespace {
// Size classes 4 KiB << k up to the largest transfer; per thread, each class keeps at most 64
// buffers or 8 MiB of them (4 of 2 MiB), so a thread holds at most about 44 MiB.
constexpr unsigned kClasses = 10;  // 4 KiB .. 2 MiB
constexpr size_t kKeepPerClass = 64, kKeepBytesPerClass = 8u << 20;
struct BufferCache {
  std::vector<uint8_t*> free[kClasses];
  ~BufferCache() {
    for (auto& v : free) {
      for (uint8_t* p : v) std::free(p);
    }
  }
};
thread_local BufferCache buffer_cache;
unsigned size_class(uint32_t len) {
  unsigned k = 0;
  while (k + 1 < kClasses && (4096u << k) < len) ++k;
  return k;
}
}  // namespace

uint8_t* take_buffer(uint32_t len, uint32_t& cap) {
  const unsigned k = size_class(len);
  cap = 4096u << k;
  if (cap < len) return nullptr;  // beyond the largest class: never asked for (kMaxTransfer)
  auto& v = buffer_cache.free[k];
  if (!v.empty()) {
    uint8_t* p = v.back();
    v.pop_back();
    return p;
  }
  return static_cast<uint8_t*>(aligned_alloc(4096, cap));
}

void give_buffer(uint8_t* p, uint32_t cap) {
  if (!p) return;
  auto& v = buffer_cache.free[size_class(cap)];
  if (v.size() < std::min<size_t>(kKeepPerClass, kKeepBytesPerClass / cap)) return v.push_back(p);
  std::free(p);
}

void Connection::on_capsule() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  if (h.hlen != 72) return terminate(kFesInvalidHeaderField, 2);
  // The host may not have more commands outstanding than its queue holds: memory stays bounded
  // (at most queue depth x the largest transfer, counting what waits to be sent) for every
  // connection.
  if (outstanding_ + 1 > queue_depth_ + aers_.size()) return terminate(kFesPduSequenceError, 0);
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = h.pdo ? h.pdo : 72 + hd;
  if (pdo < 72 + hd || pdo > h.plen) return terminate(kFesInvalidHeaderField, 3);
  const uint32_t dd = (ddgst_ && h.plen > pdo) ? 4 : 0;
  if (h.plen - pdo < dd) return terminate(kFesInvalidHeaderField, 4);
  // plen >= pdo + dd from here, so this cannot wrap.
  const uint32_t in_capsule = h.plen - pdo - dd;
  ++outstanding_;
  auto c = std::make_unique<Command>();
  std::memcpy(&c->sqe, p_ + 8, sizeof(Sqe));
  c->cqe.cid = c->sqe.cid;
  c->cqe.sqid = qid_;
  ++t_.mut_stats().commands;
  if (ctrl_) ctrl_->seen();
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + h.plen - 4, 4);
    if (got != crc32c(p_ + pdo, in_capsule)) {
      return terminate(kFesHeaderDigestError, 0);  // data digest error ends the connection
    }
  }
  const SglDesc& sgl = c->sqe.dptr;
  // Fabrics commands give the direction of their data in FCTYPE bits 1:0 (01b: to the
  // controller); other commands in the opcode's bit 0.
  const bool host_to_ctrl = c->sqe.opcode == admin::kFabrics ? (p_[8 + kFcType] & 3) == 1
                                                             : (c->sqe.opcode & 1) != 0;
  if (sgl.length > kMaxTransfer + 4096) return complete(std::move(c), st(status::kInvalidField));
  if (sgl.type == kSglInCapsule) {
    // The offset is the host's: checked without wrap-around against what the capsule holds.
    if (!in_bounds(sgl.addr, sgl.length, in_capsule)) {
      return complete(std::move(c), st(status::kSglLengthInvalid));
    }
    if (!alloc_data(*c, sgl.length)) return complete(std::move(c), st(status::kInternal));
    if (sgl.length) std::memcpy(c->data, p_ + pdo + sgl.addr, sgl.length);
    c->received = sgl.length;
    return execute(std::move(c));
  }
  if (in_capsule) return terminate(kFesDataOutOfRange, 0);
  if (!alloc_data(*c, sgl.length)) return complete(std::move(c), st(status::kInternal));
  if (host_to_ctrl && sgl.length) {
    // Ask for the data: one R2T for all of it (the host splits it into H2CData PDUs).
    if (awaiting_data_.count(c->sqe.cid)) return complete(std::move(c), st(status::kCidConflict));
    R2T r{};
    r.cccid = c->sqe.cid;
    r.ttag = c->sqe.cid;
    r.r2to = 0;
    r.r2tl = sgl.length;
    auto out = tcp::frame_pdu(pdu::kR2T, r, 0, 0, digests());
    c->r2t_at = Clock::now();
    awaiting_data_[c->sqe.cid] = std::move(c);
    return send(std::move(out), nullptr, 0, false, nullptr, true);  // ahead of queued read data
  }
  execute(std::move(c));
}

void Connection::on_h2cdata() {
  DataPdu d;
  std::memcpy(&d, p_, sizeof d);
  auto it = awaiting_data_.find(d.ttag);
  if (it == awaiting_data_.end() || d.hdr.hlen != 24) return terminate(kFesInvalidHeaderField, 10);
  Command& c = *it->second;
  const uint32_t hd = hdgst_ ? 4 : 0;
  const uint32_t pdo = d.hdr.pdo ? d.hdr.pdo : 24 + hd;
  const uint32_t dd = ddgst_ ? 4 : 0;
  // Every length is the host's: sums in 64 bits cannot wrap.
  if (pdo < 24 + hd || uint64_t(pdo) + d.datal + dd != d.hdr.plen || d.datao != c.received ||
      !in_bounds(d.datao, d.datal, c.data_len) || d.datal > kMaxH2CData) {
    return terminate(kFesDataOutOfRange, 12);
  }
  if (dd) {
    uint32_t got;
    std::memcpy(&got, p_ + pdo + d.datal, 4);
    if (got != crc32c(p_ + pdo, d.datal)) return terminate(kFesHeaderDigestError, 0);
  }
  if (d.datal) std::memcpy(c.data + d.datao, p_ + pdo, d.datal);
  c.received += d.datal;
  if (c.received == c.data_len) {
    auto cmd = std::move(it->second);
    awaiting_data_.erase(it);
    execute(std::move(cmd));
  }
}

void Connection::complete(std::unique_ptr<Command> c, uint16_t status, uint32_t dw0) {
  if (status) ++t_.mut_stats().errors;
  c->cqe.status = status;
  c->cqe.dw0 = dw0;
  CapsuleResp r{};
  r.cqe = c->cqe;
  auto out = tcp::frame_pdu(pdu::kCapsuleResp, r, 0, 0, digests());
  // The command (and its data, which a C2HData PDU ahead may point into) stays until the
  // completion has left.
  send(std::move(out), nullptr, 0, false, std::move(c));
}

// Sends the command's data to the host (C2HData), then the completion.
void Connection::send_data(std::unique_ptr<Command> c) {
  const uint32_t len = std::min(c->data_len, c->sqe.dptr.length);
  if (len) {
    DataPdu d{};
    d.cccid = c->sqe.cid;
    d.datao = 0;
    d.datal = len;
    // A host that disabled SQ flow control needs no response capsule after a successful read:
    // the SUCCESS flag ends the command, one PDU instead of two.
    if (sq_flow_disabled_) {
      auto out = tcp::frame_pdu(pdu::kC2HData, d, len, pdu::kFlagLast | pdu::kFlagSuccess, digests());
      const uint8_t* data = c->data;
      return send(std::move(out), data, len, true, std::move(c));
    }
    auto out = tcp::frame_pdu(pdu::kC2HData, d, len, pdu::kFlagLast, digests());
    send(std::move(out), c->data, len, true);
  }
  complete(std::move(c), 0);
}

void Connection::execute(std::unique_ptr<Command> c) {
  if (c->sqe.opcode == admin::kFabrics) return fabrics(std::move(c));
  if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));  // Connect first
  if (!authenticated_) return complete(std::move(c), st(status::kAuthRequired));
  if (qid_ == 0) return admin(std::move(c));
  io(std::move(c));
}

}  // namespace blkcopy::nvme
