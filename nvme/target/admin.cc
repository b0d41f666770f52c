// Admin commands: Identify, Get Log Page, Set/Get Features, Keep Alive, Asynchronous Event
// Request and Abort.
#include <array>
#include <cstring>

#include "nvme/codec.h"
#include "nvme/copy_report.h"
#include "nvme/target/internal.h"
#include "nvme/target/ops.h"

namespace blkcopy::nvme {

void identify(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  Controller& ctrl = *q.session.ctrl;
  Subsystem* s = ctrl.subsys.get();
  if (r.data_len < 4096) return q.complete(r, st(status::kSglLengthInvalid));
  std::span<uint8_t, 4096> out(r.data, 4096);
  const uint8_t cns = r.sqe.cdw10 & 0xFF;
  const uint32_t nsid = r.sqe.nsid;
  if (cns == kCnsController) {
    ControllerIdentity id;
    id.cntlid = ctrl.cntlid;
    id.discovery = !s;
    // Views, not a ?: of std::string and a literal (which would view a temporary).
    id.subnqn = s ? std::string_view(s->cfg.nqn) : std::string_view(kDiscoveryNqn);
    id.serial = s ? std::string_view(s->serial) : std::string_view("blkcopy-discovery");
    if (s) id.model = s->cfg.model;
    // Namespaces come and go (ctl add-ns): NN is the largest ID that may be used, as Linux
    // nvmet's 1024, or a larger one in use.
    id.nn = s ? std::max<uint32_t>(kLargestNsidAdvertised, s->largest_nsid()) : 0;
    id.namespace_events = s != nullptr;
    id.ioccsz = (64 + kInCapsule) / 16;
    id.kas = 1;
    build_identify_controller(id, out);
  } else if (cns == kCnsNamespace && s) {
    auto n = s->ns(nsid);
    if (!n) {
      if (nsid == 0 || nsid == 0xFFFFFFFF) return q.complete(r, st(status::kInvalidNamespace));
      std::fill(out.begin(), out.end(), 0);  // an inactive namespace: all zeroes
    } else {
      build_identify_namespace(n->id, out);
    }
  } else if (cns == kCnsActiveNsList && s) {
    std::fill(out.begin(), out.end(), 0);
    size_t i = 0;
    for (const auto& n : s->namespaces()) {
      if (n->nsid > nsid && i < 1024) put<uint32_t>(out, 4 * i++, n->nsid);
    }
  } else if (auto found = cns == kCnsNsDescriptors && s ? s->ns(nsid) : nullptr) {
    std::fill(out.begin(), out.end(), 0);
    const Namespace& n = *found;
    out[0] = 2;   // NIDT: NGUID
    out[1] = 16;  // NIDL
    std::memcpy(out.data() + 4, n.id.nguid, 16);
    if (n.has_uuid) {
      out[20] = 3;  // NIDT: UUID
      out[21] = 16;
      std::memcpy(out.data() + 24, n.uuid, 16);
    }
  } else {
    return q.complete(r, st(status::kInvalidField));
  }
  complete_with_data(r, 4096);
}

namespace {

// The log pages that are the same for every controller, made once.
struct FixedPages {
  std::array<uint8_t, 4096> effects{};
  std::array<uint8_t, 512> zeroes{};    // Error Information (64 bytes used) and SMART
  std::array<uint8_t, 512> firmware{};  // one slot, active, holding this version
  FixedPages() {
    fill_effects_log(effects);
    firmware[0] = 1;  // AFI: slot 1 is running
    const std::string fr(ControllerIdentity{}.firmware);
    std::memset(firmware.data() + 8, ' ', 8);
    std::memcpy(firmware.data() + 8, fr.data(), std::min<size_t>(fr.size(), 8));
  }
};
const FixedPages& fixed_pages() {
  static const FixedPages pages;
  return pages;
}

}  // namespace

void get_log_page(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  Controller& ctrl = *q.session.ctrl;
  Subsystem* s = ctrl.subsys.get();
  const uint32_t cdw10 = r.sqe.cdw10, cdw11 = r.sqe.cdw11;
  const uint8_t lid = cdw10 & 0xFF;
  const uint64_t numd = ((cdw10 >> 16) | (uint64_t(cdw11 & 0xFFFF) << 16)) + 1;
  const uint64_t offset = r.sqe.cdw12 | (uint64_t(r.sqe.cdw13) << 32);
  const uint64_t len = std::min<uint64_t>(numd * 4, r.data_len);
  const FixedPages& fixed = fixed_pages();
  std::vector<uint8_t> made;  // a page made for this controller
  std::span<const uint8_t> page;
  if (lid == kLogDiscovery && !s) {
    const auto* through = q.transport().came_through();
    const auto via = through ? through->lock() : nullptr;
    made = q.target().discovery_log(ctrl.hostnqn, q.transport().local_address(), via.get());
    page = made;
  } else if (lid == kLogChangedNs && s) {
    // Read with RAE (bit 15) 0, the list empties and the event may be sent again.
    const std::vector<uint32_t> changed = ctrl.changed_namespaces(!(cdw10 & (1u << 15)));
    made.assign(4096, 0);
    for (size_t i = 0; i < changed.size(); ++i) put<uint32_t>(std::span<uint8_t>(made), 4 * i, changed[i]);
    page = made;
  } else if (lid == kLogCmdEffects && s) {
    page = fixed.effects;
  } else if ((lid == kLogError || lid == kLogSmart) && s) {
    page = std::span<const uint8_t>(fixed.zeroes).first(lid == kLogError ? 64 : 512);
  } else if (lid == kLogFirmwareSlot && s) {
    page = fixed.firmware;
  } else if (lid == kLogCopyReport && s) {
    TargetCopyReport report{ctrl.copies.load(), ctrl.copy_device_bytes.load(), ctrl.copy_emulated_bytes.load(), {}};
    if (auto ns = r.sqe.nsid ? s->ns(r.sqe.nsid) : nullptr) {
      const DeviceInfo info = ns->dev->describe();
      report.device_copies_by = info.offloaded_by.empty() ? info.copy_method : info.offloaded_by;
    }
    made = encode_copy_report(report);
    page = made;
  } else {
    return q.complete(r, st(status::kInvalidLogPage));
  }
  uint64_t filled = 0;
  if (offset < page.size()) {
    filled = std::min<uint64_t>(len, page.size() - offset);
    std::memcpy(r.data, page.data() + offset, filled);
  }
  complete_with_data(r, static_cast<uint32_t>(filled));
}

void features(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  Controller& ctrl = *q.session.ctrl;
  Subsystem* s = ctrl.subsys.get();
  const uint32_t cdw10 = r.sqe.cdw10, cdw11 = r.sqe.cdw11;
  const bool set = r.sqe.opcode == admin::kSetFeatures;
  const uint8_t fid = cdw10 & 0xFF;
  uint32_t dw0 = 0;
  if (fid == kFeatNumQueues) {
    if (set) ctrl.queues = static_cast<uint16_t>(std::min<uint32_t>((cdw11 & 0xFFFF) + 1, 8));
    dw0 = uint32_t(ctrl.queues - 1) | (uint32_t(ctrl.queues - 1) << 16);
  } else if (fid == kFeatKato) {
    if (set) ctrl.kato_ms = cdw11;
    dw0 = ctrl.kato_ms;
  } else if (fid == kFeatAsyncEvent) {
    // Namespace Attribute Notices are the one event here (others are taken and not sent).
    if (set) ctrl.aen_config = cdw11 & kAenNamespaceAttribute;
    dw0 = ctrl.aen_config;
  } else if (fid == kFeatArbitration) {
    if (set) ctrl.arbitration = cdw11;
    dw0 = ctrl.arbitration;
  } else if (fid == kFeatPowerMgmt) {
    if (set && (cdw11 & 0x1F) != 0) return q.complete(r, st(status::kInvalidField));
    dw0 = 0;  // power state 0, the only one (NPSS 0)
  } else if (fid == kFeatTempThreshold) {
    const uint32_t tmpsel = (cdw11 >> 16) & 0xF, thsel = (cdw11 >> 20) & 0x3;
    if (thsel > 1 || (tmpsel != 0 && tmpsel != 0xF)) {  // composite (or all) only
      return q.complete(r, st(status::kInvalidField));
    }
    auto& t = thsel == 0 ? ctrl.temp_over : ctrl.temp_under;
    if (set) t = cdw11 & 0xFFFF;
    dw0 = t;
  } else if (fid == kFeatErrorRecovery) {
    if (set && (cdw11 & (1u << 16))) {  // DULBE: no deallocated-block errors here
      return q.complete(r, st(status::kInvalidField));
    }
    if (set) ctrl.error_recovery = cdw11 & 0xFFFF;  // TLER
    dw0 = ctrl.error_recovery;
  } else if (fid == kFeatHostBehavior && s) {
    if (r.data_len < 512) return q.complete(r, st(status::kSglLengthInvalid));
    std::span<uint8_t> hb(r.data, 512);
    if (!set) {
      std::memset(r.data, 0, r.data_len);
      put<uint16_t>(hb, kHostBehaviorCdfe, ctrl.format2 ? 4 : 0);
      return complete_with_data(r, 512);
    }
    ctrl.format2 = get<uint16_t>(hb, kHostBehaviorCdfe) & (1u << 2);
  } else {
    return q.complete(r, st(status::kInvalidField));
  }
  q.complete(r, 0, dw0);
}

void keep_alive(TargetRequest& r) { r.queue->complete(r, 0); }

void async_event(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  if (q.session.aers.size() >= 4) return q.complete(r, cqe_status(0x105, true));  // AER limit
  q.session.aers.push_back(&r);  // held until an event
  send_waiting_events(q);
}

void send_waiting_events(TargetQueue& q) {
  if (q.session.qid != 0 || !q.session.ctrl || q.session.aers.empty()) return;
  if (!q.session.ctrl->take_namespace_event()) return;
  TargetRequest& r = *q.session.aers.front();
  q.session.aers.erase(q.session.aers.begin());
  q.complete(r, 0, kAenNamespaceChanged);
}

void abort_command(TargetRequest& r) {
  r.queue->complete(r, 0, 1);  // not aborted
}

}  // namespace blkcopy::nvme
