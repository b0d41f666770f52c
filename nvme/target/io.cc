// I/O commands: read, write, flush, write zeroes and deallocate (copy.cc has Copy), and how a
// request reaches its devices: through this loop's channels, or by a hop to the target's
// first loop where a device has none.
#include "nvme/target/io.h"

#include <sys/mman.h>

#include <cstring>

#include "core/checked.h"
#include "nvme/status.h"
#include "nvme/target/internal.h"
#include "nvme/target/ops.h"

namespace blkcopy::nvme {

void to_devices(TargetRequest& r, bool channels_here, Stage start) {
  TargetQueue& q = *r.queue;
  q.device_started();
  if (channels_here) {
    r.dev_worker = q.worker();
    return start(r);
  }
  r.dev_worker = 0;
  r.hopped = true;
  ++q.target().mut_stats().hops;
  q.target().home().post_remote([&r, start] { start(r); });
}

void from_devices(TargetRequest& r, Stage finish) {
  if (!r.hopped) {
    r.queue->device_ended();
    return finish(r);
  }
  r.queue->loop().post_remote([&r, finish] {
    r.queue->device_ended();
    finish(r);
  });
}

namespace {

Device& device(const TargetRequest& r) { return *r.ns->on(r.dev_worker); }
bool channel_here(const TargetRequest& r) { return r.ns->on(r.queue->worker()) != nullptr; }

// Submits r.io to the namespace's device; `finish` runs on the queue's loop with r.status.
void submit(TargetRequest& r, Stage finish) {
  r.then = finish;
  to_devices(r, channel_here(r), [](TargetRequest& req) {
    device(req).submit(req.io, [&req](Status s) {
      req.status = std::move(s);
      from_devices(req, req.then);
    });
  });
}

void rw_done(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  const bool read = r.sqe.opcode == io::kRead;
  if (!r.status.ok()) return q.complete(r, status_for_io_error(r.status, read));
  auto& stats = q.target().mut_stats();
  if (read) {
    stats.read_bytes += r.io.length;
    r.c2h = static_cast<uint32_t>(r.io.length);
  } else {
    stats.written_bytes += r.io.length;
  }
  q.complete(r, 0);
}

void flush_done(TargetRequest& r) {
  r.queue->complete(r, status_for_io_error(r.status, false));
}

// A zeroed buffer that writes of zeroes come from (never written: shared by every loop).
const std::byte* zeroes() {
  static const void* z = mmap(nullptr, kMaxTransfer, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return z == MAP_FAILED ? nullptr : static_cast<const std::byte*>(z);
}

// Write Zeroes where the device cannot zero itself: writes from the zeroed buffer, one after
// another; r.progress counts the bytes done.
void write_zero_pieces(TargetRequest& r) {
  const uint64_t start = r.sqe.cdw10 | (uint64_t(r.sqe.cdw11) << 32);
  const uint64_t total = ((r.sqe.cdw12 & 0xFFFF) + 1ull) * r.ns->lbs;
  if (!r.status.ok() || r.progress == total) {
    return r.queue->complete(r, status_for_io_error(r.status, false));
  }
  const std::byte* z = zeroes();
  if (!z) return r.queue->complete(r, st(status::kInternal));
  const uint64_t n = std::min<uint64_t>(kMaxTransfer, total - r.progress);
  r.io = Request{Op::write, start * r.ns->lbs + r.progress, n, const_cast<std::byte*>(z)};
  r.progress += n;
  submit(r, &write_zero_pieces);
}

void write_zeroes_done(TargetRequest& r) {
  if (r.status.code() == EOPNOTSUPP) {  // the file system refused at run time: zero by writing
    r.status = Status();
    r.progress = 0;
    return write_zero_pieces(r);
  }
  r.queue->complete(r, status_for_io_error(r.status, false));
}

// Dataset Management deallocate, one range after another from r.progress; the first error is
// the answer. A device that cannot deallocate has nothing to free: deallocation is advisory.
void next_discard(TargetRequest& r) {
  const uint32_t nr = (r.sqe.cdw10 & 0xFF) + 1;
  if (!r.status.ok() && r.status.code() != EOPNOTSUPP) {
    return r.queue->complete(r, status_for_io_error(r.status, false));
  }
  DsmRange range{};
  while (r.progress < nr) {
    std::memcpy(&range, r.data + r.progress++ * sizeof range, sizeof range);
    if (range.nlb) break;
  }
  if (!range.nlb) return r.queue->complete(r, 0);
  r.io = Request{Op::discard, range.slba * r.ns->lbs, uint64_t(range.nlb) * r.ns->lbs};
  submit(r, &next_discard);
}

}  // namespace

void read_write(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  const Namespace& ns = *r.ns;
  const uint64_t slba = r.sqe.cdw10 | (uint64_t(r.sqe.cdw11) << 32);
  const uint64_t blocks = (r.sqe.cdw12 & 0xFFFF) + 1ull;
  if (!in_bounds(slba, blocks, ns.id.blocks)) return q.complete(r, st(status::kLbaOutOfRange));
  const uint64_t len = blocks * ns.lbs;
  if (r.data_len != len) return q.complete(r, st(status::kSglLengthInvalid));
  r.io = Request{r.sqe.opcode == io::kRead ? Op::read : Op::write, slba * ns.lbs, len, r.data};
  submit(r, &rw_done);
}

void flush(TargetRequest& r) {
  r.io = Request{Op::flush};
  submit(r, &flush_done);
}

// Write Zeroes: on the device where it zeroes itself, else the target writes zeroes (so that
// the command is served on every namespace, as ONCS says).
void write_zeroes(TargetRequest& r) {
  const uint64_t slba = r.sqe.cdw10 | (uint64_t(r.sqe.cdw11) << 32);
  const uint64_t blocks = (r.sqe.cdw12 & 0xFFFF) + 1ull;
  if (!in_bounds(slba, blocks, r.ns->id.blocks)) {
    return r.queue->complete(r, st(status::kLbaOutOfRange));
  }
  if (!r.ns->write_zeroes) return write_zero_pieces(r);
  r.io = Request{Op::write_zeroes, slba * r.ns->lbs, blocks * r.ns->lbs};
  submit(r, &write_zeroes_done);
}

// Dataset Management: only the deallocate attribute acts. Every range is checked before any is
// discarded, so a bad range changes nothing.
void dataset_management(TargetRequest& r) {
  TargetQueue& q = *r.queue;
  if (!(r.sqe.cdw11 & (1u << 2))) return q.complete(r, 0);
  const uint32_t nr = (r.sqe.cdw10 & 0xFF) + 1;
  if (r.data_len < nr * sizeof(DsmRange)) return q.complete(r, st(status::kSglLengthInvalid));
  for (uint32_t i = 0; i < nr; ++i) {
    DsmRange range;
    std::memcpy(&range, r.data + i * sizeof range, sizeof range);
    if (range.nlb && !in_bounds(range.slba, range.nlb, r.ns->id.blocks)) {
      return q.complete(r, st(status::kLbaOutOfRange));
    }
  }
  if (!r.ns->dev->supports(Op::discard)) return q.complete(r, 0);
  r.progress = 0;
  next_discard(r);
}

}  // namespace blkcopy::nvme
