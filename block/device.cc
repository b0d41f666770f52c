#include <blkcopy/device.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "core/buffer.h"

namespace blkcopy {

const char* op_name(Op op) {
  switch (op) {
    case Op::read: return "read";
    case Op::write: return "write";
    case Op::flush: return "flush";
    case Op::write_zeroes: return "write_zeroes";
    case Op::discard: return "discard";
    case Op::copy: return "copy";
  }
  return "?";
}

Status Device::claim(std::string_view owner) {
  if (!claimed_by_.empty()) {
    return Status::error(EBUSY, fmt::format("{} is in use by {}", name_, claimed_by_));
  }
  if (Status s = lock_storage(); !s.ok()) return s;
  claimed_by_ = owner.empty() ? "an owner" : owner;
  return {};
}

Status Device::set_copy_max_bytes(uint64_t bytes) {
  if (bytes > limits_.copy_max_hw_bytes) {
    return Status::error(EINVAL, fmt::format("copy_max_bytes {} of {} is above its "
                                             "copy_max_hw_bytes {}",
                                             bytes, name_, limits_.copy_max_hw_bytes));
  }
  if (bytes % limits_.logical_block_size) {
    return Status::error(EINVAL, fmt::format("copy_max_bytes {} of {} is not a multiple of its "
                                             "logical block size {}",
                                             bytes, name_, limits_.logical_block_size));
  }
  limits_.copy_max_bytes = bytes;
  return {};
}

namespace {

Status check_range(const Device& dev, const char* what, uint64_t offset, uint64_t length) {
  const QueueLimits& l = dev.limits();
  if (offset % l.logical_block_size || length % l.logical_block_size) {
    return Status::error(EINVAL, fmt::format("{} of {} bytes at {} on {} is not aligned to its "
                                             "logical block size {}",
                                             what, length, offset, dev.name(),
                                             l.logical_block_size));
  }
  if (offset > l.capacity || length > l.capacity - offset) {
    return Status::error(ERANGE, fmt::format("{} of {} bytes at {} is beyond the capacity {} of "
                                             "{}",
                                             what, length, offset, l.capacity, dev.name()));
  }
  return {};
}

}  // namespace

Status Device::check(const Request& req) const {
  const bool writes = req.op != Op::read && req.op != Op::flush;
  if (writes && limits_.read_only) {
    return Status::error(EROFS, fmt::format("{} on {}: device is read-only", op_name(req.op),
                                            name_));
  }
  switch (req.op) {
    case Op::flush: return {};
    case Op::read:
    case Op::write:
      if (req.length > limits_.max_io_bytes) {
        return Status::error(EINVAL, fmt::format("{} of {} bytes on {} is above max_io_bytes {}",
                                                 op_name(req.op), req.length, name_,
                                                 limits_.max_io_bytes));
      }
      [[fallthrough]];
    case Op::write_zeroes:
    case Op::discard: return check_range(*this, op_name(req.op), req.offset, req.length);
    case Op::copy: break;
  }
  if (!req.copy || !req.report) return Status::error(EINVAL, "copy request without its context");
  const CopyDesc& c = *req.copy;
  if (c.dst.dev != this) return Status::error(EINVAL, "copy submitted to a device not its dst");
  if (c.sources.empty() || c.sources.size() > limits_.copy_max_src_segments) {
    return Status::error(EINVAL, fmt::format("copy with {} source segments on {}: limit is {}",
                                             c.sources.size(), name_,
                                             limits_.copy_max_src_segments));
  }
  uint64_t total = 0;
  for (const CopySegment& s : c.sources) {
    if (s.length > limits_.copy_segment_max_bytes) {
      return Status::error(EINVAL, fmt::format("copy segment of {} bytes on {} is above "
                                               "copy_segment_max_bytes {}",
                                               s.length, name_, limits_.copy_segment_max_bytes));
    }
    if (Status st = check_range(*s.dev, "copy source", s.offset, s.length); !st.ok()) return st;
    total += s.length;
  }
  if (total != c.dst.length || total == 0 || total > limits_.copy_max_bytes) {
    return Status::error(EINVAL, fmt::format("copy of {} bytes (destination {}) on {}: limit "
                                             "copy_max_bytes is {}",
                                             total, c.dst.length, name_,
                                             limits_.copy_max_bytes));
  }
  return check_range(*this, "copy destination", c.dst.offset, c.dst.length);
}

bool Device::supports(Op op) const {
  switch (op) {
    case Op::read:
    case Op::write:
    case Op::flush: return true;
    case Op::copy: return limits_.copy_max_hw_bytes > 0;
    default: return false;
  }
}

Result<std::unique_ptr<Device>> Device::channel(EventLoop&) {
  return fail(ENOTSUP, fmt::format("{}: no channel for another event loop", name_));
}

void Device::complete_later(Completion done, Status s) const {
  loop_.post([done = std::move(done), s = std::move(s)] { done(s); });
}

void Device::not_offloaded(const Request& req, Completion done, std::string why) const {
  req.report->none(req.copy->dst.length, std::move(why));
  loop_.post([done = std::move(done)] { done(Status()); });
}

Status submit_and_wait(Device& dev, const Request& req) {
  bool finished = false;
  Status result;
  dev.submit(req, [&](Status st) {
    result = std::move(st);
    finished = true;
  });
  if (Status s = dev.loop().run_until([&] { return finished; }); !s.ok()) return s;
  return result;
}

namespace {

// Moves `total` bytes in pieces of at most max_io through an aligned bounce buffer.
template <class Step>
Status chunked(Device& dev, uint64_t total, Step step) {
  const uint64_t piece = std::min<uint64_t>({total, dev.limits().max_io_bytes, 8u << 20});
  AlignedBuffer bounce(piece);
  for (uint64_t done = 0; done < total;) {
    const uint64_t n = std::min(piece, total - done);
    if (Status s = step(done, n, bounce.data()); !s.ok()) return s;
    done += n;
  }
  return {};
}

}  // namespace

Status read_sync(Device& dev, uint64_t offset, std::span<std::byte> buf) {
  return chunked(dev, buf.size(), [&](uint64_t done, uint64_t n, std::byte* bounce) {
    Status s = submit_and_wait(dev, Request{Op::read, offset + done, n, bounce});
    if (s.ok()) std::memcpy(buf.data() + done, bounce, n);
    return s;
  });
}

Status write_sync(Device& dev, uint64_t offset, std::span<const std::byte> buf) {
  return chunked(dev, buf.size(), [&](uint64_t done, uint64_t n, std::byte* bounce) {
    std::memcpy(bounce, buf.data() + done, n);
    return submit_and_wait(dev, Request{Op::write, offset + done, n, bounce});
  });
}

}  // namespace blkcopy
