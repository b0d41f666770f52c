// Copy: every check the specification asks for, then the copy engine runs it where the
// namespaces' devices are, offloaded into the backing device where it can, emulated on the
// target otherwise (its buffers from the copy budget). A Copy never crosses the network.
#include "core/checked.h"
#include "nvme/copy_ranges.h"
#include "nvme/status.h"
#include "nvme/target/internal.h"
#include "nvme/target/io.h"
#include "nvme/target/ops.h"

namespace blkcopy::nvme {
namespace {

// Emulation on the target: 1 MiB chunks (a buffer size class), at most 8 MiB per Copy.
constexpr uint64_t kChunk = 1u << 20, kPerCopy = 8u << 20;
// What one source range costs in a request's vectors (decoded, its namespace and the hold on it,
// bytes, segment).
constexpr uint32_t kBytesPerRange = sizeof(CopySource) + sizeof(Namespace*) +
                                    sizeof(std::shared_ptr<Namespace>) + sizeof(uint32_t) +
                                    sizeof(CopySegment);

void copy_done(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  const CopyResult& res = r.copy_result;
  auto& stats = q.target().mut_stats();
  ++stats.copies;
  stats.copy_offloaded_bytes += res.offloaded_bytes;
  stats.copy_emulated_bytes += res.emulated_bytes;
  if (Controller* ctrl = q.session.ctrl.get()) {  // gone when its host reset meanwhile
    ctrl->copies.fetch_add(1, std::memory_order_relaxed);
    ctrl->copy_device_bytes.fetch_add(res.offloaded_bytes, std::memory_order_relaxed);
    ctrl->copy_emulated_bytes.fetch_add(res.emulated_bytes, std::memory_order_relaxed);
  }
  if (res.status.ok()) return q.complete(r, 0);
  if (res.invalid) return q.complete(r, status_for_invalid_copy(res.status));
  // DW0: the first range not (fully) copied.
  uint64_t left = res.bytes;
  uint32_t first = 0;
  while (first < r.range_bytes.size() && left >= r.range_bytes[first]) left -= r.range_bytes[first++];
  q.complete(r, status_for_io_error(res.status, false), first);
}

void start_copy(TargetRequest& r) {
  for (size_t i = 0; i < r.copy.sources.size(); ++i) {
    r.copy.sources[i].dev = r.range_ns[i]->on(r.dev_worker);
  }
  Device& dst = *r.ns->on(r.dev_worker);
  CopyOptions opt;
  opt.chunk_bytes = kChunk;
  opt.buffer_bytes = kPerCopy;
  opt.buffers = &r.copy_buffers;
  opt.per_device = false;  // the target counts totals only
  opt.explain_emulation = false;
  opt.cancel = &r.queue->cancelled();
  Status s = copy_async(std::span<const CopySegment>(r.copy.sources), dst, r.copy.dst.offset, opt,
                        [&r](CopyResult res) {
    r.copy_buffers.finish();  // here, on the loop of its account (loop 0's after a hop)
    r.copy_result = std::move(res);
    from_devices(r, &copy_done);
  });
  if (!s.ok()) {
    r.copy_buffers.finish();
    r.copy_result = CopyResult{};
    r.copy_result.status = std::move(s);
    r.copy_result.invalid = true;
    r.queue->loop().post([&r] { from_devices(r, &copy_done); });
  }
}

}  // namespace

void copy(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  Controller& ctrl = *q.session.ctrl;
  Subsystem& s = *ctrl.subsys;
  Namespace& ns = *r.ns;
  const uint64_t sdlba = r.sqe.cdw10 | (uint64_t(r.sqe.cdw11) << 32);
  const uint32_t nr = (r.sqe.cdw12 & 0xFF) + 1;
  const uint8_t fmt = (r.sqe.cdw12 >> 8) & 0xF;
  if (fmt != 0 && !(fmt == 2 && ctrl.format2)) return q.complete(r, st(status::kInvalidField));
  if (nr > ns.id.msrc + 1u) return q.complete(r, st(status::kCommandSizeLimit));
  if (!decode_copy_ranges({r.data, r.data_len}, nr, fmt, r.ranges).ok()) {
    return q.complete(r, st(status::kSglLengthInvalid));
  }
  q.drop_data(r);  // decoded: a Copy that waits for the copy budget holds no data buffer
  if (nr > TargetRequest::kKeptRanges) q.hold(r, nr * kBytesPerRange);  // but its ranges
  uint64_t total = 0;
  bool here = ns.on(q.worker()) != nullptr;
  for (uint32_t i = 0; i < nr; ++i) {
    const CopySource& c = r.ranges[i];
    Namespace* src = &ns;
    if (fmt == 2 && c.snsid != ns.nsid) {
      auto other = s.ns(c.snsid);
      if (!other) return q.complete(r, st(status::kInvalidNamespace), i);
      src = other.get();
      // Held while the copy runs, once per namespace (a removal waits for it).
      if (std::find(r.pinned.begin(), r.pinned.end(), other) == r.pinned.end()) {
        r.pinned.push_back(std::move(other));
      }
      if (src->lbs != ns.lbs) return q.complete(r, st(status::kIncompatibleNamespace), i);
    }
    if (c.blocks > ns.id.mssrl) return q.complete(r, st(status::kCommandSizeLimit), i);
    if (!in_bounds(c.slba, c.blocks, src->id.blocks)) {
      return q.complete(r, st(status::kLbaOutOfRange), i);
    }
    here &= src->on(q.worker()) != nullptr;
    // The device comes in start_copy: the one of the loop that runs the copy.
    r.range_ns.push_back(src);
    r.copy.sources.push_back({nullptr, c.slba * src->lbs, uint64_t(c.blocks) * src->lbs});
    r.range_bytes.push_back(c.blocks * src->lbs);
    total += c.blocks;
  }
  if (total > ns.id.mcl) return q.complete(r, st(status::kCommandSizeLimit));
  if (!in_bounds(sdlba, total, ns.id.blocks)) return q.complete(r, st(status::kLbaOutOfRange));
  r.copy.dst = {nullptr, sdlba * ns.lbs, total * ns.lbs};
  r.copy_buffers.account = here ? &q.copy_account() : &q.target().hop_copy_account();
  to_devices(r, here, &start_copy);
}

}  // namespace blkcopy::nvme
