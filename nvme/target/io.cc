// I/O commands: read, write, write zeroes, flush, deallocate and Copy, run on the devices'
// loop.
#include "nvme/status.h"
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

// The I/O commands this controller serves, with their Commands Supported and Effects entries:
// the table drives dispatch and the log alike.
const Connection::IoOp Connection::kIoOps[] = {
    {io::kFlush, kCsupp, &Connection::read_write},
    {io::kWrite, kCsupp | kLbcc, &Connection::read_write},
    {io::kRead, kCsupp, &Connection::read_write},
    {io::kWriteZeroes, kCsupp | kLbcc, &Connection::read_write},
    {io::kDsm, kCsupp | kLbcc, &Connection::deallocate},
    {io::kCopy, kCsupp | kLbcc, &Connection::copy},
};

void Connection::io(std::unique_ptr<Command> c) {
  Subsystem* s = ctrl_->subsys;
  if (!s) return complete(std::move(c), st(status::kInvalidOpcode));
  const IoOp* op = nullptr;
  for (const IoOp& o : kIoOps) {
    if (o.opcode == c->sqe.opcode) op = &o;
  }
  if (!op) return complete(std::move(c), st(status::kInvalidOpcode));
  auto it = s->ns.find(c->sqe.nsid);
  if (it == s->ns.end()) return complete(std::move(c), st(status::kInvalidNamespace));
  (this->*op->run)(std::move(c), it->second);
}

// Read, write, write zeroes and flush: one request on the namespace's device.
void Connection::read_write(std::unique_ptr<Command> c, Namespace& ns) {
  const uint8_t op = c->sqe.opcode;
  const uint64_t slba = c->sqe.cdw10 | (uint64_t(c->sqe.cdw11) << 32);
  const uint64_t blocks = (c->sqe.cdw12 & 0xFFFF) + 1ull;
  Request req;
  if (op == io::kFlush) {
    req.op = Op::flush;
  } else {
    if (!in_bounds(slba, blocks, ns.id.blocks)) {
      return complete(std::move(c), st(status::kLbaOutOfRange));
    }
    req.op = op == io::kRead ? Op::read : op == io::kWrite ? Op::write : Op::write_zeroes;
    req.offset = slba * ns.lbs;
    req.length = blocks * ns.lbs;
    if (op != io::kWriteZeroes) {
      if (c->data_len != req.length) return complete(std::move(c), st(status::kSglLengthInvalid));
      req.buf = c->data;
    }
  }
  auto done = to_devices<Status>(std::move(c), [this, op, req](std::unique_ptr<Command> cmd, Status r) {
    if (r.ok() && op == io::kRead) {
      t_.mut_stats().read_bytes += req.length;
      return send_data(std::move(cmd));
    }
    if (r.ok() && op == io::kWrite) t_.mut_stats().written_bytes += req.length;
    complete(std::move(cmd), status_for_io_error(r, op == io::kRead));
  });
  at_home([dev = ns.dev.get(), req, done] { dev->submit(req, done); });
}

// Dataset Management: only the deallocate attribute acts. Every range is checked before any
// is discarded, so a bad range changes nothing; then the ranges are discarded one after
// another on the devices' loop, and the first error is the answer.
void Connection::deallocate(std::unique_ptr<Command> c, Namespace& ns) {
  if (!(c->sqe.cdw11 & (1u << 2))) return complete(std::move(c), 0);
  const uint32_t nr = (c->sqe.cdw10 & 0xFF) + 1;
  if (c->data_len < nr * sizeof(DsmRange)) {
    return complete(std::move(c), st(status::kSglLengthInvalid));
  }
  std::vector<Request> discards;
  for (uint32_t i = 0; i < nr; ++i) {
    DsmRange r;
    std::memcpy(&r, c->data + i * sizeof r, sizeof r);
    if (r.nlb == 0) continue;
    if (!in_bounds(r.slba, r.nlb, ns.id.blocks)) {
      return complete(std::move(c), st(status::kLbaOutOfRange));
    }
    discards.push_back(Request{Op::discard, r.slba * ns.lbs, uint64_t(r.nlb) * ns.lbs});
  }
  auto finish = to_devices<uint16_t>(
      std::move(c), [this](std::unique_ptr<Command> cmd, uint16_t code) { complete(std::move(cmd), code); });
  // The job frees itself when the last range is done.
  struct Job {
    Device* dev;
    std::vector<Request> left;
    std::function<void(uint16_t)> finish;
    size_t next = 0;
    void step() {
      if (next == left.size()) return end({});
      dev->submit(left[next++], [this](Status r) {
        if (!r.ok()) return end(r);
        step();
      });
    }
    void end(const Status& r) {
      // A device that cannot deallocate has nothing to free: deallocation is advisory.
      const uint16_t code = r.ok() || r.code() == EOPNOTSUPP ? 0 : status_for_io_error(r, false);
      auto f = std::move(finish);
      delete this;
      f(code);
    }
  };
  auto* job = new Job{ns.dev.get(), std::move(discards), std::move(finish)};
  at_home([job] { job->step(); });
}

// Copy: every check the specification asks for, then the copy engine runs it here, offloaded
// into the backing device where it can, emulated on the target otherwise.
void Connection::copy(std::unique_ptr<Command> c, Namespace& ns) {
  Subsystem& s = *ctrl_->subsys;
  const uint64_t sdlba = c->sqe.cdw10 | (uint64_t(c->sqe.cdw11) << 32);
  const uint32_t nr = (c->sqe.cdw12 & 0xFF) + 1;
  const uint8_t fmt = (c->sqe.cdw12 >> 8) & 0xF;
  if (fmt != 0 && !(fmt == 2 && ctrl_->format2)) return complete(std::move(c), st(status::kInvalidField));
  if (nr > ns.id.msrc + 1u) return complete(std::move(c), st(status::kCommandSizeLimit));
  auto ranges = decode_copy_ranges({c->data, c->data_len}, nr, fmt);
  if (!ranges) return complete(std::move(c), st(status::kSglLengthInvalid));
  uint64_t total = 0;
  for (uint32_t i = 0; i < nr; ++i) {
    const CopySource& r = (*ranges)[i];
    Namespace* src = &ns;
    if (fmt == 2) {
      auto it = s.ns.find(r.snsid);
      if (it == s.ns.end()) return complete(std::move(c), st(status::kInvalidNamespace), i);
      src = &it->second;
      if (src->lbs != ns.lbs) return complete(std::move(c), st(status::kIncompatibleNamespace), i);
    }
    if (r.blocks > ns.id.mssrl) return complete(std::move(c), st(status::kCommandSizeLimit), i);
    if (!in_bounds(r.slba, r.blocks, src->id.blocks)) {
      return complete(std::move(c), st(status::kLbaOutOfRange), i);
    }
    c->copy_src.push_back({src->dev.get(), r.slba * src->lbs, uint64_t(r.blocks) * src->lbs});
    c->range_bytes.push_back(r.blocks * src->lbs);
    total += r.blocks;
  }
  if (total > ns.id.mcl) return complete(std::move(c), st(status::kCommandSizeLimit));
  if (!in_bounds(sdlba, total, ns.id.blocks)) {
    return complete(std::move(c), st(status::kLbaOutOfRange));
  }
  const std::vector<CopySegment>* sources = &c->copy_src;  // lives with the command
  auto done = to_devices<CopyResult>(std::move(c), [this](std::unique_ptr<Command> cmd, CopyResult r) {
    auto& stats = t_.mut_stats();
    ++stats.copies;
    stats.copy_offloaded_bytes += r.offloaded_bytes;
    stats.copy_emulated_bytes += r.emulated_bytes;
    if (r.status.ok()) return complete(std::move(cmd), 0);
    if (r.invalid) {
      return complete(std::move(cmd), status_for_invalid_copy(r.status));
    }
    // DW0: the first range not (fully) copied.
    uint64_t left = r.bytes;
    uint32_t first = 0;
    while (first < cmd->range_bytes.size() && left >= cmd->range_bytes[first]) {
      left -= cmd->range_bytes[first++];
    }
    complete(std::move(cmd), status_for_io_error(r.status, false), first);
  });
  at_home([sources, dev = ns.dev.get(), at = sdlba * ns.lbs, done] {
    Status sub = copy_async(*sources, *dev, at, CopyOptions{}, done);
    if (!sub.ok()) {
      CopyResult r;
      r.status = sub;
      r.invalid = true;
      done(r);
    }
  });
}

}  // namespace blkcopy::nvme
