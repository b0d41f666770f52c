// Fabrics commands (Connect, properties, authentication) and admin commands.
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

void Connection::fabrics(std::unique_ptr<Command> c) {
  const uint8_t fctype = reinterpret_cast<const uint8_t*>(&c->sqe)[kFcType];
  const auto* raw = reinterpret_cast<const uint8_t*>(&c->sqe);
  std::span<const uint8_t> sq(raw, 64);
  switch (fctype) {
    case fabrics::kConnect: return connect(std::move(c));
    case fabrics::kAuthSend: return authenticate(std::move(c), true);
    case fabrics::kAuthReceive: return authenticate(std::move(c), false);
    case fabrics::kPropertyGet: {
      if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));
      if (!authenticated_) return complete(std::move(c), st(status::kAuthRequired));
      const uint32_t off = get<uint32_t>(sq, kPropOffset);
      uint64_t v = 0;
      if (off == kPropCap) {
        // MQES 15:0 (0-based), CQR bit 16, TO 31:24 (500 ms units), CSS NVM bit 37.
        v = (kMaxQueueSize - 1) | (1ull << 16) | (20ull << 24) | (1ull << 37);
      } else if (off == kPropVs) {
        v = 0x00010400;
      } else if (off == kPropCc) {
        v = ctrl_->cc;
      } else if (off == kPropCsts) {
        v = ctrl_->csts;
      } else {
        return complete(std::move(c), st(status::kInvalidField));
      }
      c->cqe.dw1 = static_cast<uint32_t>(v >> 32);
      return complete(std::move(c), 0, static_cast<uint32_t>(v));
    }
    case fabrics::kPropertySet: {
      if (!ctrl_) return complete(std::move(c), st(status::kInvalidOpcode));
      if (!authenticated_) return complete(std::move(c), st(status::kAuthRequired));
      const uint32_t off = get<uint32_t>(sq, kPropOffset);
      const uint32_t v = static_cast<uint32_t>(get<uint64_t>(sq, kPropValue));
      if (off != kPropCc) return complete(std::move(c), st(status::kInvalidField));
      ctrl_->cc = v;
      ctrl_->csts = (v & 1) ? 1 : 0;                // RDY follows EN
      if ((v >> 14) & 3) ctrl_->csts |= (2u << 2);  // shutdown requested: complete at once
      return complete(std::move(c), 0);
    }
    default: return complete(std::move(c), st(status::kInvalidField));
  }
}

void Connection::connect(std::unique_ptr<Command> c) {
  std::span<const uint8_t> sq(reinterpret_cast<const uint8_t*>(&c->sqe), 64);
  if (c->data_len < kConnectDataSize) return complete(std::move(c), st(status::kSglLengthInvalid));
  std::span<const uint8_t> d(c->data, c->data_len);
  const uint16_t qid = get<uint16_t>(sq, kConnectQid);
  const uint16_t sqsize = get<uint16_t>(sq, kConnectSqsize);
  const std::string subnqn = get_nqn(d, kCdSubnqn), hostnqn = get_nqn(d, kCdHostnqn);
  if (ctrl_ || sqsize == 0 || sqsize >= kMaxQueueSize) {
    return complete(std::move(c), st(status::kConnectInvalidParam), kConnectSqsize);
  }
  const bool discovery = subnqn == kDiscoveryNqn;
  Subsystem* s = discovery ? nullptr : t_.subsystem(subnqn);
  if (!discovery && !s) {
    return complete(std::move(c), st(status::kConnectInvalidParam), (1u << 16) | kCdSubnqn);
  }
  if (s && !s->allows(hostnqn)) {
    log_warning(fmt::format("serve: host {} refused for {}: not an allowed host", hostnqn, subnqn));
    return complete(std::move(c), st(status::kConnectInvalidHost));
  }
  // Connect Invalid Parameters says where the bad value is: IATTR (bit 16: in the data) and
  // IPO (the byte offset).
  auto invalid = [&](bool in_data, uint32_t offset) {
    const uint32_t where = (in_data ? 1u << 16 : 0) | offset;
    complete(std::move(c), st(status::kConnectInvalidParam), where);
  };
  if (qid == 0) {
    ctrl_ = t_.new_controller(s, hostnqn);
    if (!ctrl_) {
      log_warning(fmt::format("serve: host {} refused for {}: every controller ID is in use",
                              hostnqn, subnqn));
      return complete(std::move(c), st(status::kConnectControllerBusy));
    }
    ctrl_->kato_ms = c->sqe.cdw12;
  } else {
    switch (t_.join_controller(get<uint16_t>(d, kCdCntlid), s, hostnqn, qid, ctrl_)) {
      case TargetImpl::Join::ok: break;
      case TargetImpl::Join::no_controller: return invalid(true, kCdCntlid);
      case TargetImpl::Join::bad_qid:
      case TargetImpl::Join::duplicate_qid: return invalid(false, kConnectQid);
    }
  }
  qid_ = qid;
  queue_depth_ = sqsize + 1u;
  sq_flow_disabled_ = get<uint8_t>(sq, kConnectCattr) & kCattrDisableSqFlow;
  c->cqe.sqid = qid;
  uint32_t dw0 = ctrl_->cntlid;
  if (const HostKeys* keys = t_.keys_for(hostnqn)) {
    auth_ = std::make_unique<AuthSession>(*keys, hostnqn, subnqn);
    authenticated_ = false;
    dw0 |= 1u << 17;  // ATR: authentication required before anything else
  }
  complete(std::move(c), 0, dw0);
}

// Auth Send (a message from the host) and Auth Receive (the next one for it).
void Connection::authenticate(std::unique_ptr<Command> c, bool send) {
  if (!ctrl_ || !auth_) return complete(std::move(c), st(status::kCommandSequenceError));
  const uint32_t length = c->sqe.cdw11;  // TL or AL
  if (c->sqe.cdw10 != auth::kAuthCdw10 || length == 0 || length > c->data_len) {
    return complete(std::move(c), st(status::kInvalidField));
  }
  if (send) {
    auth_->send({c->data, length});
  } else {
    std::memset(c->data, 0, c->data_len);  // nothing but the message goes back
    if (!auth_->receive({c->data, length})) {
      return complete(std::move(c), st(status::kCommandSequenceError));
    }
  }
  if (!auth_failure_logged_ && !auth_->failure().empty()) {
    auth_failure_logged_ = true;
    log_warning(fmt::format("serve: host {} failed DH-HMAC-CHAP authentication on queue {} of "
                            "{}: {}",
                            ctrl_->hostnqn, qid_,
                            ctrl_->subsys ? ctrl_->subsys->cfg.nqn : kDiscoveryNqn, auth_->failure()));
  }
  if (!authenticated_ && auth_->authenticated()) {
    authenticated_ = true;
    log_info(fmt::format("serve: host {} authenticated on queue {}", ctrl_->hostnqn, qid_));
  }
  if (send) return complete(std::move(c), 0);
  send_data(std::move(c));
}

// The admin commands this controller serves: the table drives dispatch and the Commands
// Supported and Effects log alike (CSUPP for each).
const Connection::AdminOp Connection::kAdminOps[] = {
    {admin::kGetLogPage, &Connection::get_log_page},
    {admin::kIdentify, &Connection::identify},
    {admin::kAbort, &Connection::abort_command},
    {admin::kSetFeatures, &Connection::features},
    {admin::kGetFeatures, &Connection::features},
    {admin::kAsyncEvent, &Connection::async_event},
    {admin::kKeepAlive, &Connection::keep_alive},
};

void Connection::admin(std::unique_ptr<Command> c) {
  for (const AdminOp& op : kAdminOps) {
    if (op.opcode == c->sqe.opcode) return (this->*op.run)(std::move(c));
  }
  complete(std::move(c), st(status::kInvalidOpcode));
}

void Connection::identify(std::unique_ptr<Command> c) {
  Controller& ctrl = *ctrl_;
  Subsystem* s = ctrl.subsys;
  const uint32_t cdw10 = c->sqe.cdw10;
  if (c->data_len < 4096) return complete(std::move(c), st(status::kSglLengthInvalid));
  std::span<uint8_t, 4096> out(c->data, 4096);
  const uint8_t cns = cdw10 & 0xFF;
  if (cns == kCnsController) {
    ControllerIdentity id;
    id.cntlid = ctrl.cntlid;
    id.discovery = !s;
    id.subnqn = s ? s->cfg.nqn : kDiscoveryNqn;
    id.serial = s ? s->serial : "blkcopy-discovery";
    id.nn = s && !s->ns.empty() ? s->ns.rbegin()->first : 0;
    id.ioccsz = (64 + kInCapsule) / 16;
    id.kas = 1;
    build_identify_controller(id, out);
  } else if (cns == kCnsNamespace && s) {
    auto it = s->ns.find(c->sqe.nsid);
    if (it == s->ns.end()) {
      if (c->sqe.nsid == 0 || c->sqe.nsid == 0xFFFFFFFF) {
        return complete(std::move(c), st(status::kInvalidNamespace));
      }
      std::fill(out.begin(), out.end(), 0);  // an inactive namespace: all zeroes
    } else {
      build_identify_namespace(it->second.id, out);
    }
  } else if (cns == kCnsActiveNsList && s) {
    std::fill(out.begin(), out.end(), 0);
    size_t i = 0;
    for (auto& [nsid, ns] : s->ns) {
      if (nsid > c->sqe.nsid && i < 1024) put<uint32_t>(out, 4 * i++, nsid);
    }
  } else if (cns == kCnsNsDescriptors && s && s->ns.count(c->sqe.nsid)) {
    std::fill(out.begin(), out.end(), 0);
    const Namespace& n = s->ns.at(c->sqe.nsid);
    out[0] = 2;   // NIDT: NGUID
    out[1] = 16;  // NIDL
    std::memcpy(out.data() + 4, n.id.nguid, 16);
    if (n.has_uuid) {
      out[20] = 3;  // NIDT: UUID
      out[21] = 16;
      std::memcpy(out.data() + 24, n.uuid, 16);
    }
  } else {
    return complete(std::move(c), st(status::kInvalidField));
  }
  return send_data(std::move(c));
}

void Connection::get_log_page(std::unique_ptr<Command> c) {
  Controller& ctrl = *ctrl_;
  Subsystem* s = ctrl.subsys;
  const uint32_t cdw10 = c->sqe.cdw10, cdw11 = c->sqe.cdw11;
  const uint8_t lid = cdw10 & 0xFF;
  const uint64_t numd = ((cdw10 >> 16) | (uint64_t(cdw11 & 0xFFFF) << 16)) + 1;
  const uint64_t offset = c->sqe.cdw12 | (uint64_t(c->sqe.cdw13) << 32);
  const uint64_t len = std::min<uint64_t>(numd * 4, c->data_len);
  std::vector<uint8_t> page;
  if (lid == kLogDiscovery && !s) {
    page = t_.discovery_log(ctrl.hostnqn, local_addr_);
  } else if (lid == kLogCmdEffects && s) {
    page.assign(4096, 0);
    std::span<uint8_t> p(page);
    for (uint8_t op : {admin::kGetLogPage, admin::kIdentify, admin::kAbort,
                       admin::kSetFeatures, admin::kGetFeatures, admin::kAsyncEvent,
                       admin::kKeepAlive}) {
      put<uint32_t>(p, op * 4, 1);  // CSUPP
    }
    for (uint8_t op : {io::kFlush, io::kWrite, io::kRead, io::kWriteZeroes, io::kDsm,
                       io::kCopy}) {
      put<uint32_t>(p, 1024 + op * 4, (op & 1) || op == io::kDsm ? 0x3 : 0x1);  // LBCC
    }
  } else if ((lid == kLogError || lid == kLogSmart) && s) {
    page.assign(lid == kLogError ? 64 : 512, 0);
  } else if (lid == kLogFirmwareSlot && s) {  // one slot, active, holding this version
    page.assign(512, 0);
    page[0] = 1;  // AFI: slot 1 is running
    const std::string fr = ControllerIdentity{}.firmware;
    std::memset(page.data() + 8, ' ', 8);
    std::memcpy(page.data() + 8, fr.data(), std::min<size_t>(fr.size(), 8));
  } else {
    return complete(std::move(c), st(status::kInvalidLogPage));
  }
  std::memset(c->data, 0, c->data_len);
  if (offset < page.size()) {
    std::memcpy(c->data, page.data() + offset, std::min<uint64_t>(len, page.size() - offset));
  }
  return send_data(std::move(c));
}

void Connection::features(std::unique_ptr<Command> c) {
  Controller& ctrl = *ctrl_;
  Subsystem* s = ctrl.subsys;
  const uint32_t cdw10 = c->sqe.cdw10, cdw11 = c->sqe.cdw11;
  const bool set = c->sqe.opcode == admin::kSetFeatures;
  const uint8_t fid = cdw10 & 0xFF;
  uint32_t dw0 = 0;
  if (fid == kFeatNumQueues) {
    if (set) ctrl.queues = static_cast<uint16_t>(std::min<uint32_t>((cdw11 & 0xFFFF) + 1, 8));
    dw0 = uint32_t(ctrl.queues - 1) | (uint32_t(ctrl.queues - 1) << 16);
  } else if (fid == kFeatKato) {
    if (set) ctrl.kato_ms = cdw11;
    dw0 = ctrl.kato_ms;
  } else if (fid == kFeatAsyncEvent) {
    dw0 = 0;
  } else if (fid == kFeatArbitration) {
    if (set) ctrl.arbitration = cdw11;
    dw0 = ctrl.arbitration;
  } else if (fid == kFeatPowerMgmt) {
    if (set && (cdw11 & 0x1F) != 0) return complete(std::move(c), st(status::kInvalidField));
    dw0 = 0;  // power state 0, the only one (NPSS 0)
  } else if (fid == kFeatTempThreshold) {
    const uint32_t tmpsel = (cdw11 >> 16) & 0xF, thsel = (cdw11 >> 20) & 0x3;
    if (thsel > 1 || (tmpsel != 0 && tmpsel != 0xF)) {  // composite (or all) only
      return complete(std::move(c), st(status::kInvalidField));
    }
    auto& t = thsel == 0 ? ctrl.temp_over : ctrl.temp_under;
    if (set) t = cdw11 & 0xFFFF;
    dw0 = t;
  } else if (fid == kFeatErrorRecovery) {
    if (set && (cdw11 & (1u << 16))) {  // DULBE: no deallocated-block errors here
      return complete(std::move(c), st(status::kInvalidField));
    }
    if (set) ctrl.error_recovery = cdw11 & 0xFFFF;  // TLER
    dw0 = ctrl.error_recovery;
  } else if (fid == kFeatHostBehavior && s) {
    if (set) {
      if (c->data_len < 512) return complete(std::move(c), st(status::kSglLengthInvalid));
      const uint16_t cdfe = get<uint16_t>(std::span<const uint8_t>(c->data, 512), kHostBehaviorCdfe);
      ctrl.format2 = cdfe & (1u << 2);
    } else {
      if (c->data_len < 512) return complete(std::move(c), st(status::kSglLengthInvalid));
      std::memset(c->data, 0, c->data_len);
      put<uint16_t>(std::span<uint8_t>(c->data, 512), kHostBehaviorCdfe, ctrl.format2 ? 4 : 0);
      return send_data(std::move(c));
    }
  } else {
    return complete(std::move(c), st(status::kInvalidField));
  }
  return complete(std::move(c), 0, dw0);
}

void Connection::keep_alive(std::unique_ptr<Command> c) { complete(std::move(c), 0); }

void Connection::async_event(std::unique_ptr<Command> c) {
  if (aers_.size() >= 4) return complete(std::move(c), cqe_status(0x105, true));  // AER limit
  aers_.push_back(std::move(c));  // held: no events are raised yet
}

void Connection::abort_command(std::unique_ptr<Command> c) {
  complete(std::move(c), 0, 1);  // not aborted
}

}  // namespace blkcopy::nvme
