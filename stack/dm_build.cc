// Building a stack from its table: each line's target with its legs, the children they name
// (opened once each, relative paths taken from the table's folder), and the checks that make a
// table an error before anything is served (gaps, sizes, alignment to the children's blocks).
#include "stack/dm_device.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

namespace blkcopy {
namespace fs = std::filesystem;

namespace {

// A child's device string with a relative path made relative to the table's folder.
std::string resolve(const std::string& spec, const std::string& dir) {
  std::string prefix;
  std::string path = spec;
  for (const char* p : {"dm:", "file:"}) {
    if (spec.starts_with(p)) {
      prefix = p;
      path = spec.substr(prefix.size());
    }
  }
  const bool has_scheme = prefix.empty() && spec.find(':') != std::string::npos &&
                          spec.find('/') == std::string::npos;
  if (has_scheme || path.empty() || path[0] == '/') return spec;  // mem:..., absolute paths
  return prefix + (fs::path(dir) / path).string();
}

}  // namespace

Result<Device*> DmDevice::child(const std::string& spec, const std::string& dir, bool read_only) {
  const std::string resolved = resolve(spec, dir);
  auto it = children_.find(resolved);
  if (it != children_.end()) return it->second.get();
  auto dev = open_child_(loop(), resolved, read_only);
  if (!dev) return std::unexpected(dev.error());
  Device* raw = dev->get();
  children_.emplace(resolved, std::move(*dev));
  return raw;
}

Status DmDevice::build(const std::vector<TableEntry>& entries, const std::string& dir,
                       bool read_only) {
  // Every byte of a child belongs to one place in the stack: two legs on the same storage
  // (the same string twice is one device) must not overlap, or writes to one part of the stack
  // land in another.
  struct Used {
    const Device* dev;
    uint64_t from, to;
    int line;
  };
  std::vector<Used> used;
  for (const TableEntry& e : entries) {
    const std::string where = fmt::format("{} line {}", table_path_, e.line);
    auto bad = [&](int code, const std::string& msg) {
      return Status::error(code, fmt::format("{}: {}", where, msg));
    };
    Target t;
    t.start = e.start * kSector;
    t.length = e.length * kSector;
    t.line = e.line;
    // One leg: child device at an offset (in sectors), checked against its size.
    auto leg = [&](const std::string& spec, const std::string& off_text,
                   uint64_t bytes) -> Result<CopySegment> {
      auto off = parse_count(off_text, "offset", where);
      if (!off) return std::unexpected(off.error());
      auto dev = child(spec, dir, read_only);
      if (!dev) return std::unexpected(bad(dev.error().code(), dev.error().message()));
      const uint64_t at = *off * kSector, cap = (*dev)->limits().capacity;
      if (at > cap || bytes > cap - at) {
        return std::unexpected(bad(ERANGE, fmt::format("{} is too small: the target needs "
                                                       "bytes [{}, {}) of it, it has {}",
                                                       (*dev)->name(), at, at + bytes, cap)));
      }
      for (const Used& u : used) {
        if ((u.dev == *dev || u.dev->same_storage(**dev)) && at < u.to && u.from < at + bytes) {
          return std::unexpected(bad(EINVAL, fmt::format(
              "bytes [{}, {}) of {} are used by line {} too (bytes [{}, {})): writes to one part "
              "of the stack would land in the other (the same string names one device: for "
              "separate RAM devices make the strings differ, such as mem:512M,seed=1)",
              at, at + bytes, (*dev)->name(), u.line, u.from, u.to)));
        }
      }
      used.push_back({*dev, at, at + bytes, e.line});
      return CopySegment{*dev, at, bytes};
    };
    if (e.target == "linear" || e.target == "flakey") {
      const bool flakey = e.target == "flakey";
      if (flakey ? e.args.size() < 3 : e.args.size() != 2) {
        return bad(EINVAL, flakey ? "flakey takes DEV OFFSET RULE... (fail=OP:N[:ERROR][:every] "
                                    "or delay=OP:N:TIME[:every])"
                                  : "linear takes DEV OFFSET");
      }
      auto l = leg(e.args[0], e.args[1], t.length);
      if (!l) return l.error();
      t.kind = flakey ? TargetKind::flakey : TargetKind::linear;
      t.legs.push_back(*l);
      for (size_t i = 2; i < e.args.size(); ++i) {
        const std::string& r = e.args[i];
        const bool delay = r.starts_with("delay=");
        if (!delay && !r.starts_with("fail=")) {
          return bad(EINVAL, fmt::format("flakey rule '{}': expected fail=... or delay=...", r));
        }
        auto rule = parse_fault_rule(std::string_view(r).substr(r.find('=') + 1), delay);
        if (!rule) return bad(EINVAL, rule.error().message());
        t.faults.push_back(*rule);
      }
    } else if (e.target == "striped") {
      if (e.args.size() < 2) return bad(EINVAL, "striped takes N CHUNK DEV1 OFF1 ... DEVn OFFn");
      auto n = parse_count(e.args[0], "stripe count", where);
      if (!n) return n.error();
      auto chunk = parse_count(e.args[1], "chunk size", where);
      if (!chunk) return chunk.error();
      if (*n == 0 || e.args.size() != 2 + 2 * *n) {
        return bad(EINVAL, fmt::format("striped over {} devices needs {} DEV OFFSET pairs, got "
                                       "{} arguments after N CHUNK",
                                       *n, *n, e.args.size() - 2));
      }
      t.chunk = *chunk * kSector;
      if (t.chunk == 0 || t.length % (*n * t.chunk) != 0) {
        return bad(EINVAL, fmt::format("bad chunk size {} sectors: it must be non-zero and the "
                                       "target length {} sectors must be a multiple of stripes x "
                                       "chunk ({} x {})",
                                       *chunk, e.length, *n, *chunk));
      }
      for (uint64_t i = 0; i < *n; ++i) {
        auto l = leg(e.args[2 + 2 * i], e.args[3 + 2 * i], t.length / *n);
        if (!l) return l.error();
        t.legs.push_back(*l);
      }
      t.kind = TargetKind::striped;
    } else if (e.target == "clone") {
      if (e.args.size() < 3) {
        return bad(EINVAL, "clone takes SOURCE DEST REGION_SIZE [hydrate] [inflight=N] "
                           "[rate=BYTES]");
      }
      auto src = child(e.args[0], dir, /*read_only=*/true);  // the source is never written
      if (!src) return bad(src.error().code(), src.error().message());
      auto dst = child(e.args[1], dir, read_only);
      if (!dst) return bad(dst.error().code(), dst.error().message());
      auto region = parse_count(e.args[2], "region size", where);
      if (!region) return region.error();
      CloneOptions o{.region = *region * kSector};
      for (size_t i = 3; i < e.args.size(); ++i) {
        const std::string& a = e.args[i];
        if (a == "hydrate") {
          o.background = true;
        } else if (a.starts_with("inflight=")) {
          auto n = parse_count(a.substr(9), "inflight", where);
          if (!n || *n == 0) return bad(EINVAL, "inflight must be a positive count");
          o.in_flight = static_cast<unsigned>(*n);
        } else if (a.starts_with("rate=")) {
          auto r = parse_size(a.substr(5));
          if (!r) return bad(EINVAL, r.error().message());
          o.rate = *r;
        } else {
          return bad(EINVAL, fmt::format("unknown clone option '{}' (hydrate, inflight=N, "
                                         "rate=BYTES)",
                                         a));
        }
      }
      auto clone = CloneDevice::open(loop(), fmt::format("clone(line {})", e.line), **src, **dst,
                                     t.length, o);
      if (!clone) return bad(clone.error().code(), clone.error().message());
      t.kind = TargetKind::clone;
      t.legs.push_back({clone->get(), 0, t.length});
      clones_.push_back(std::move(*clone));
    } else if (e.target == "error" || e.target == "zero") {
      if (!e.args.empty()) return bad(EINVAL, fmt::format("{} takes no arguments", e.target));
      t.kind = e.target == "error" ? TargetKind::error : TargetKind::zero;
    } else {
      return bad(EINVAL, fmt::format("unknown target '{}' (linear, striped, error, zero, "
                                     "flakey, clone)",
                                     e.target));
    }
    targets_.push_back(std::move(t));
  }
  limits_.read_only = read_only;
  derive_limits();
  // Every boundary must fall on a block of the stack, so child requests stay aligned.
  const uint64_t lbs = limits_.logical_block_size;
  for (const Target& t : targets_) {
    bool aligned = t.start % lbs == 0 && t.length % lbs == 0 && t.chunk % lbs == 0;
    for (const CopySegment& l : t.legs) aligned &= l.offset % lbs == 0;
    if (!aligned) {
      return Status::error(EINVAL, fmt::format("{} line {}: not aligned to the logical block "
                                               "size {} of the stack's children",
                                               table_path_, t.line, lbs));
    }
  }
  return {};
}

}  // namespace blkcopy
