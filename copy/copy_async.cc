// copy_async, the engine's front door: checks a copy (ranges, blocks, capacity, overlap, options)
// before anything is submitted, works out its plan (chunk, memmove order, longest piece) and
// hands it to the shortest way that can do it: one offload request, one emulated chunk, or the
// general walk (engine.cc). copy_ranges and copy wait for it on the destination's loop.
#include <blkcopy/copy.h>
#include <fmt/format.h>

#include "core/checked.h"

#include <algorithm>

#include "copy/fast_paths.h"

namespace blkcopy {
namespace {

constexpr size_t kMaxSources = 65536;

Status invalid(int code, std::string msg) { return Status::error(code, std::move(msg)); }

bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

// Checks one range of `dev` against its block size, the granule and its capacity. `index`
// (1-based) numbers a source range of several in the message; its text is built only on error.
Status check_range(const char* kind, size_t index, const Device& dev, uint64_t offset,
                   uint64_t length, uint32_t granule) {
  if (length && offset % granule == 0 && length % granule == 0 &&
      offset <= dev.limits().capacity && length <= dev.limits().capacity - offset) {
    return {};
  }
  const std::string name = index ? fmt::format("{} {}", kind, index) : kind;
  const char* what = name.c_str();
  if (length == 0) return invalid(EINVAL, fmt::format("{} has zero length", what));
  if (offset % granule) {
    return invalid(EINVAL, fmt::format("{} offset {} is not a multiple of the logical block size "
                                       "{} (of {} and the other devices in the copy)",
                                       what, offset, granule, dev.name()));
  }
  if (length % granule) {
    return invalid(EINVAL, fmt::format("{} length {} is not a multiple of the logical block size "
                                       "{} (of {} and the other devices in the copy)",
                                       what, length, granule, dev.name()));
  }
  const uint64_t cap = dev.limits().capacity;
  if (offset > cap || length > cap - offset) {
    return invalid(ERANGE, fmt::format("{} [{}, {}) is beyond the end of {} (capacity {})", what,
                                       offset, offset + length, dev.name(), cap));
  }
  return {};
}

}  // namespace

Status copy_async(std::vector<CopySegment> sources, Device& dst, uint64_t dst_offset,
                  const CopyOptions& opt, std::function<void(CopyResult)> done) {
  return copy_async(std::span<const CopySegment>(sources), dst, dst_offset, opt, std::move(done));
}

Status copy_async(std::span<const CopySegment> sources, Device& dst, uint64_t dst_offset,
                  const CopyOptions& opt, std::function<void(CopyResult)> done) {
  if (sources.empty()) return invalid(EINVAL, "no source ranges given");
  if (sources.size() > kMaxSources) {
    return invalid(EINVAL, fmt::format("{} source ranges: at most {} are allowed",
                                       sources.size(), kMaxSources));
  }
  uint32_t granule = dst.limits().logical_block_size;
  for (const CopySegment& s : sources) {
    if (!s.dev) return invalid(EINVAL, "source range without a device");
    if (&s.dev->loop() != &dst.loop()) {
      return invalid(EINVAL, "source and destination devices run on different event loops");
    }
    granule = std::max(granule, s.dev->limits().logical_block_size);
  }
  uint64_t total = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (Status s = check_range("source range", sources.size() == 1 ? 0 : i + 1, *sources[i].dev,
                               sources[i].offset, sources[i].length, granule);
        !s.ok()) {
      return s;
    }
    // Lengths a caller sums past 2^64 must not wrap into a small copy that "succeeds".
    const auto sum = checked_add(total, sources[i].length);
    if (!sum) return invalid(EINVAL, "the source ranges add up to more than 2^64 bytes");
    total = *sum;
  }
  if (Status s = check_range("destination range", 0, dst, dst_offset, total, granule); !s.ok()) {
    return s;
  }
  if (dst.limits().read_only) {
    return invalid(EROFS, fmt::format("destination {} is read-only", dst.name()));
  }
  if (opt.buffer_bytes < granule || opt.chunk_bytes < granule) {
    return invalid(EINVAL, fmt::format("emulation buffer {} and chunk {} must each hold at least "
                                       "one block of {} bytes",
                                       opt.buffer_bytes, opt.chunk_bytes, granule));
  }
  if (opt.max_copies_in_flight == 0) {
    return invalid(EINVAL, "max_copies_in_flight must be at least 1");
  }

  // Overlap: memmove order for one range, rejected for vectored copies.
  uint64_t piece_cap = UINT64_MAX;
  bool backward = false;
  for (size_t i = 0; i < sources.size(); ++i) {
    const CopySegment& s = sources[i];
    if (!dst.same_storage(*s.dev) || !ranges_overlap(s.offset, s.length, dst_offset, total)) {
      continue;
    }
    if (sources.size() > 1) {
      return invalid(EINVAL, fmt::format("source range {} [{}, {}) overlaps the destination [{}, "
                                         "{}): vectored copies must not overlap it",
                                         i + 1, s.offset, s.offset + s.length, dst_offset,
                                         dst_offset + total));
    }
    backward = dst_offset > s.offset;
    piece_cap = backward ? dst_offset - s.offset : s.offset - dst_offset;
  }

  uint64_t chunk = std::min(opt.chunk_bytes, opt.buffer_bytes);
  chunk = std::min(chunk, dst.limits().max_io_bytes);
  for (const CopySegment& s : sources) chunk = std::min(chunk, s.dev->limits().max_io_bytes);
  chunk = std::max<uint64_t>(chunk / granule * granule, granule);
  chunk = std::min<uint64_t>(chunk, total);  // a small copy takes a small buffer

  if (piece_cap == 0) {  // copying a range onto itself: nothing to move
    dst.loop().post([done = std::move(done), total] {
      CopyResult r;
      r.bytes = total;
      done(r);
    });
    return {};
  }
  const engine::Plan plan{&dst, dst_offset, total, granule, chunk, backward, piece_cap};
  // Emulated from the start: say why, for every byte (a copy that offloads pays nothing for
  // this). The destination's own reason goes before any the engine found on the way.
  if (opt.explain_emulation && (opt.emulation == Emulation::force || !dst.limits().can_offload())) {
    const QueueLimits& l = dst.limits();
    std::string why = opt.emulation == Emulation::force ? "emulation was asked for"
                      : l.copy_max_bytes == 0 && l.copy_max_hw_bytes > 0
                          ? fmt::format("{}: copy_max_bytes is 0 (offload turned off)", dst.name())
                          : fmt::format("{} does not offload: {}", dst.name(), dst.describe().copy_method);
    done = [done = std::move(done), why = std::move(why)](CopyResult r) {
      if (r.emulated_bytes) r.emulated_because = why;
      done(std::move(r));
    };
  }
  if (opt.emulation != Emulation::force && !(opt.cancel && opt.cancel->load()) &&
      engine::one_piece(sources, plan)) {
    engine::run_one_piece(sources, plan, opt, std::move(done));
  } else if ((opt.emulation == Emulation::force || !dst.limits().can_offload()) &&
             engine::one_chunk(sources, plan, opt)) {
    engine::run_one_chunk(sources[0], plan, opt, 0, std::move(done));
  } else {
    engine::run_general(sources, plan, opt, std::move(done));
  }
  return {};
}

CopyResult copy_ranges(std::span<const CopySegment> sources, Device& dst, uint64_t dst_offset,
                       const CopyOptions& options) {
  CopyResult result;
  bool finished = false;
  Status s = copy_async(sources, dst, dst_offset, options,
                        [&](CopyResult r) {
                          result = std::move(r);
                          finished = true;
                        });
  if (!s.ok()) {
    result.status = std::move(s);
    result.invalid = true;
    return result;
  }
  if (Status ls = dst.loop().run_until([&] { return finished; }); !ls.ok()) result.status = ls;
  return result;
}

CopyResult copy(Device& src, uint64_t src_offset, Device& dst, uint64_t dst_offset,
                uint64_t length, const CopyOptions& options) {
  const CopySegment seg{&src, src_offset, length};
  return copy_ranges({&seg, 1}, dst, dst_offset, options);
}

}  // namespace blkcopy
