// What the target sends the host, one PDU at a time: every length, offset and ID in it is the
// target's and is checked against the PDU and the command it names before use. A lying target
// fails the queue (EPROTO); it never makes the host read or send memory it does not own.
#include <fmt/format.h>

#include <cstring>

#include "core/checked.h"
#include "nvme/codec.h"
#include "nvme/host/queue.h"
#include "nvme/tcp/framing.h"

namespace blkcopy::nvme {

void HostQueue::on_pdu() {
  PduHeader h;
  std::memcpy(&h, p_, 8);
  auto proto = [this](const char* what) {
    fail(Status::error(EPROTO, fmt::format("NVMe/TCP queue: {}", what)));
  };
  // Every length below is the target's: checked against the PDU's own length before use.
  const uint32_t hd = opt_.header_digest ? 4 : 0, dd = opt_.data_digest ? 4 : 0;
  if (h.type == pdu::kICResp) {
    if (ic_done_ || h.plen != sizeof(ICResp)) return proto("bad or second ICResp");
    ICResp r;
    std::memcpy(&r, p_, sizeof r);
    if (r.pfv != 0 || r.maxh2cdata < 4096 || r.maxh2cdata % 4) return proto("bad ICResp");
    maxh2c_ = r.maxh2cdata;
    ic_done_ = true;
    state_ = State::open;
    return opened({});
  }
  if (!ic_done_) return proto("a PDU before the ICResp");
  if (h.type == pdu::kC2HTermReq) return proto("the target ended the connection (C2HTermReq)");
  if (h.hlen != 24 || h.plen < 24u + hd) return proto("bad PDU header length");
  if (hd) {
    uint32_t got;
    std::memcpy(&got, p_ + h.hlen, 4);
    if (got != crc32c(p_, h.hlen)) return proto("header digest");
  }
  if (h.type == pdu::kCapsuleResp) {
    Cqe cqe;
    std::memcpy(&cqe, p_ + 8, sizeof cqe);
    const Cmd* c = cmds_.find(cqe.cid);
    if (!c) return proto("completion for an unknown command");
    // The target cannot have the data of a write whose PDUs have not left yet; success also
    // needs all of it asked for. Ending it would hand the caller back a buffer the socket reads.
    if (c->unsent) return proto("completion for a write whose data has not been sent yet");
    if (c->out && !c->in_capsule && c->r2t_next != c->len && !(cqe.status >> 1)) {
      return proto("success for a write whose data was not all asked for");
    }
    Done done = cmds_.take(cqe.cid).done;
    if (!waiting_.empty()) {
      start(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    return done(Status(), cqe);
  }
  if (h.type == pdu::kC2HData) {
    DataPdu d;
    std::memcpy(&d, p_, sizeof d);
    Cmd* it = cmds_.find(d.cccid);
    if (!it || !it->in || !in_bounds(d.datao, d.datal, it->len) ||
        h.pdo < 24u + hd || uint64_t(h.pdo) + d.datal + dd != h.plen) {
      return proto("C2HData out of range");
    }
    if (dd) {
      uint32_t got;
      std::memcpy(&got, p_ + h.pdo + d.datal, 4);
      if (got != crc32c(p_ + h.pdo, d.datal)) return proto("data digest");
    }
    if (d.datal) std::memcpy(it->in + d.datao, p_ + h.pdo, d.datal);
    it->received = static_cast<uint32_t>(std::min<uint64_t>(uint64_t(it->received) + d.datal, UINT32_MAX));
    if (h.flags & pdu::kFlagSuccess) {  // no response capsule follows
      // Only the last PDU may end a command, and only once all its data has come.
      if (!(h.flags & pdu::kFlagLast) || it->received != it->len) {
        return proto("C2HData SUCCESS before all the data");
      }
      Done done = cmds_.take(d.cccid).done;
      Cqe cqe{};
      cqe.cid = d.cccid;
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
    Cmd* it = cmds_.find(r.cccid);
    if (!it || !it->out || it->in_capsule || !in_bounds(r.r2to, r.r2tl, it->len)) {
      return proto("R2T out of range");
    }
    // In order, no byte asked for twice (no repeat, no overlap), and one R2T at a time (the
    // ICReq's MAXR2T is 0: one outstanding): what the target can make the host queue is at
    // most the command's own data, once.
    if (r.r2tl == 0 || r.r2to != it->r2t_next) return proto("R2T out of order or repeated");
    if (it->unsent) return proto("R2T before the data of the last one has left (MAXR2T is 1)");
    it->r2t_next += r.r2tl;
    const uint16_t cid = r.cccid;
    tcp::for_each_h2c(r, maxh2c_, [&](const DataPdu& d, bool last) {
      ++it->unsent;
      send(tcp::frame_pdu(pdu::kH2CData, d, d.datal, last ? pdu::kFlagLast : 0, digests()),
           it->out + d.datao, d.datal, false, cid);
    });
    return;
  }
  proto("unexpected PDU type");
}

}  // namespace blkcopy::nvme
