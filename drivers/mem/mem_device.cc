#include "drivers/mem/mem_device.h"

#include <blkcopy/units.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string>

namespace blkcopy {
namespace {

uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

void fill_pattern(std::byte* dst, uint64_t offset, uint64_t length, uint64_t seed) {
  const uint64_t base = seed * 0x100000001b3ull;
  for (uint64_t i = 0; i < length; i += 8) {
    uint64_t w = splitmix(base + (offset + i) / 8);
    std::memcpy(dst + i, &w, std::min<uint64_t>(8, length - i));  // a length that ends mid-word
  }
}

Result<MemConfig> parse_mem_config(std::string_view spec) {
  MemConfig cfg;
  bool first = true;
  for (size_t at = 0; at <= spec.size();) {
    size_t comma = std::min(spec.find(',', at), spec.size());
    std::string_view item = spec.substr(at, comma - at);
    at = comma + 1;
    if (first) {
      first = false;
      auto size = parse_size(item);
      if (!size) return std::unexpected(size.error());
      cfg.size = *size;
      continue;
    }
    size_t eq = item.find('=');
    std::string_view key = item.substr(0, eq);
    std::string_view value = eq == item.npos ? std::string_view() : item.substr(eq + 1);
    auto size_option = [&](uint64_t& out) -> Status {
      auto v = parse_size(value);
      if (!v) return Status::error(EINVAL, fmt::format("mem option {}: {}", key,
                                                       v.error().message()));
      out = *v;
      return {};
    };
    Status st;
    uint64_t tmp = 0;
    if (key == "block") {
      st = size_option(tmp);
      cfg.block = static_cast<uint32_t>(tmp);
      if (st.ok() && (tmp < 512 || tmp > 65536 || (tmp & (tmp - 1)))) {
        st = Status::error(EINVAL, fmt::format("mem option block={}: must be a power of two "
                                               "from 512 to 64k",
                                               value));
      }
    } else if (key == "copy_max") {
      st = size_option(cfg.copy_max);
    } else if (key == "segment_max") {
      st = size_option(cfg.segment_max);
    } else if (key == "max_segments") {
      st = size_option(tmp);
      cfg.max_segments = static_cast<uint32_t>(std::min<uint64_t>(tmp, 65536));
    } else if (key == "nocopy" && value.empty()) {
      cfg.copy = false;
    } else if (key == "nodata" && value.empty()) {
      cfg.data = false;
    } else if (key == "nozeroes" && value.empty()) {
      cfg.zeroes = false;
    } else if (key == "ro" && value.empty()) {
      cfg.read_only = true;
    } else if (key == "latency") {
      auto ns = parse_duration_ns(value);
      if (!ns) return std::unexpected(ns.error());
      cfg.latency_ns = *ns;
    } else if (key == "jitter") {
      auto ns = parse_duration_ns(value);
      if (!ns) return std::unexpected(ns.error());
      cfg.jitter_ns = *ns;
    } else if (key == "bw") {
      st = size_option(cfg.bandwidth);
    } else if (key == "seed") {
      st = size_option(cfg.seed);
    } else if (key == "fail") {
      auto f = parse_fault_rule(value, false);
      if (!f) return std::unexpected(f.error());
      cfg.fault = *f;
    } else {
      return fail(EINVAL, fmt::format("unknown mem option '{}' (known: block, copy_max, "
                                      "segment_max, max_segments, nocopy, nodata, nozeroes, ro, "
                                      "latency, jitter, bw, seed, fail)",
                                      item));
    }
    if (!st.ok()) return std::unexpected(st);
  }
  if (cfg.size == 0 || cfg.size % cfg.block) {
    return fail(EINVAL, fmt::format("mem size {} must be a non-zero multiple of the block size {}",
                                    cfg.size, cfg.block));
  }
  if (cfg.copy_max % cfg.block || cfg.segment_max % cfg.block) {
    return fail(EINVAL, fmt::format("mem copy_max {} and segment_max {} must be multiples of the "
                                    "block size {}",
                                    cfg.copy_max, cfg.segment_max, cfg.block));
  }
  return cfg;
}

MemDevice::MemDevice(EventLoop& loop, std::string name, const MemConfig& cfg,
                     std::shared_ptr<Store> store)
    : Device(loop, std::move(name)), cfg_(cfg), store_(std::move(store)), delays_(loop) {
  limits_.logical_block_size = cfg.block;
  limits_.capacity = cfg.size;
  limits_.max_io_bytes = 1u << 30;
  limits_.read_only = cfg.read_only;
  if (cfg.copy && cfg.copy_max && cfg.segment_max && cfg.max_segments) {
    limits_.copy_max_hw_bytes = cfg.copy_max;
    limits_.copy_segment_max_bytes = std::min(cfg.segment_max, cfg.copy_max);
    limits_.copy_max_src_segments = cfg.max_segments;
    limits_.copy_max_bytes = cfg.copy_max;
  }
}

MemDevice::Store::~Store() {
  if (data) munmap(data, size);
}

Result<std::unique_ptr<MemDevice>> MemDevice::create(EventLoop& loop, std::string name,
                                                     const MemConfig& cfg) {
  auto store = std::make_shared<Store>();
  store->size = cfg.size;
  if (cfg.data) {
    void* p = mmap(nullptr, cfg.size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return std::unexpected(Status::from_errno(errno, name));
    store->data = static_cast<std::byte*>(p);
    // A device filled now (seed) asks for transparent huge pages: random 4 KiB requests over a
    // large RAM device otherwise miss the TLB on nearly every access (SPDK's malloc bdev sits in
    // hugepages). Not for one touched lazily: a first write to a huge page zeroes 2 MiB and
    // here stalled requests for up to 0.2 s.
    if (cfg.seed) {
      (void)madvise(p, cfg.size, MADV_HUGEPAGE);
      fill_pattern(store->data, 0, cfg.size, cfg.seed);
    }
  }
  return std::unique_ptr<MemDevice>(new MemDevice(loop, std::move(name), cfg, std::move(store)));
}

Result<std::unique_ptr<Device>> MemDevice::channel(EventLoop& loop) {
  auto c = std::unique_ptr<MemDevice>(new MemDevice(loop, name(), cfg_, store_));
  c->limits_ = limits_;  // copy_max_bytes as set on this device
  return std::unique_ptr<Device>(std::move(c));
}

bool MemDevice::same_storage(const Device& other) const {
  if (&other == this) return true;  // the common case, without a dynamic_cast
  auto* m = dynamic_cast<const MemDevice*>(&other);
  return m && m->store_ == store_;
}

bool MemDevice::supports(Op op) const {
  switch (op) {
    case Op::copy: return cfg_.copy && limits_.can_offload();
    case Op::write_zeroes:
    case Op::discard: return cfg_.zeroes;
    default: return true;
  }
}

Status MemDevice::execute(const Request& req) {
  std::byte* data = store_->data;
  switch (req.op) {
    case Op::read:
      if (data) {
        std::memcpy(req.buf, data + req.offset, req.length);
      } else {
        std::memset(req.buf, 0, req.length);
      }
      return {};
    case Op::write:
      if (data) std::memcpy(data + req.offset, req.buf, req.length);
      return {};
    case Op::write_zeroes:
    case Op::discard:  // discarded blocks read back as zeroes
      if (data) std::memset(data + req.offset, 0, req.length);
      return {};
    case Op::flush: return {};
    case Op::copy: break;
  }
  if (!data) return {};
  uint64_t at = req.copy->dst.offset;
  for (const CopySegment& s : req.copy->sources) {
    std::memmove(data + at, data + s.offset, s.length);
    at += s.length;
  }
  return {};
}

void MemDevice::finish(Completion done, Status s) {
  pending_.push_back(Pending{Request{}, std::move(done), std::move(s), false});
  if (deliver_posted_) return;
  deliver_posted_ = true;
  loop().post([this] { deliver(); });
}

void MemDevice::queue(const Request& req, Completion done) {
  pending_.push_back(Pending{req, std::move(done), Status(), true});
  if (deliver_posted_) return;
  deliver_posted_ = true;
  loop().post([this] { deliver(); });
}

void MemDevice::deliver() {
  deliver_posted_ = false;
  running_.swap(pending_);  // requests submitted by these completions go to a coming turn
  uint64_t moved = 0;
  size_t i = 0;
  for (; i < running_.size() && moved < kTurnBytes; ++i) {
    Pending& p = running_[i];
    if (!p.run) {
      p.done(std::move(p.outcome));
      continue;
    }
    moved += p.req.op == Op::copy ? p.req.copy->dst.length : p.req.length;
    p.done(execute(p.req));
  }
  if (i < running_.size()) {  // what did not fit this turn goes first on the next
    pending_.insert(pending_.begin(), std::make_move_iterator(running_.begin() + static_cast<std::ptrdiff_t>(i)),
                    std::make_move_iterator(running_.end()));
  }
  running_.clear();
  if (!pending_.empty() && !deliver_posted_) {
    deliver_posted_ = true;
    loop().post([this] { deliver(); });
  }
}

void MemDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return finish(std::move(done), std::move(s));
  if (!supports(req.op) && req.op != Op::copy) {
    return finish(std::move(done), Status::error(EOPNOTSUPP, fmt::format("{}: no {} (nozeroes)", name(),
                                                                          op_name(req.op))));
  }
  faults_.note(req.op);
  if (faults_.fires(req.op, cfg_.fault)) {
    if (req.op == Op::copy && cfg_.fault.error == EOPNOTSUPP) {  // a refusal, not a failure
      return not_offloaded(req, std::move(done),
                           fmt::format("{}: injected refusal of copy #{}", name(),
                                       faults_.seen(req.op)));
    }
    return finish(std::move(done),
                  Status::from_errno(cfg_.fault.error,
                                     fmt::format("{}: injected fault on {} #{}", name(),
                                                 op_name(req.op), faults_.seen(req.op))));
  }
  if (req.op == Op::copy) {
    const bool domain = std::all_of(req.copy->sources.begin(), req.copy->sources.end(),
                                    [&](const CopySegment& s) { return same_copy_domain(*s.dev); });
    if (!supports(Op::copy) || !domain) {
      return not_offloaded(req, std::move(done),
                           fmt::format("{}: copy not supported ({})", name(),
                                       domain ? "offload off" : "other device"));
    }
  }
  if (!cfg_.latency_ns && !cfg_.jitter_ns && !cfg_.bandwidth) {
    return queue(req, std::move(done));  // no timing to model: no clock to read
  }
  // The command completes at an absolute time, so the order of completions follows the
  // bandwidth cap's schedule.
  const uint64_t now = now_ns();
  uint64_t done_at = now + cfg_.latency_ns;
  if (cfg_.jitter_ns) done_at += splitmix(jitter_state_++) % (cfg_.jitter_ns + 1);
  if (cfg_.bandwidth) {
    const uint64_t bytes = req.op == Op::copy ? req.copy->dst.length : req.length;
    const auto cost = static_cast<uint64_t>(bytes * 1e9 / static_cast<double>(cfg_.bandwidth));
    uint64_t busy = store_->busy_until_ns.load();
    uint64_t until;
    do {
      until = std::max(busy, now) + cost;
    } while (!store_->busy_until_ns.compare_exchange_weak(busy, until));
    done_at += until - now;
  }
  delays_.at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(done_at)),
             [this, req, done = std::move(done)]() mutable { done(execute(req)); });
}

DeviceInfo MemDevice::describe() const {
  DeviceInfo info{"mem", name(), "", {}};
  if (!cfg_.copy) {
    info.copy_method = "none (nocopy): copies are emulated";
  } else {
    info.copy_method = "in-device memmove (no host I/O)";
    info.offloaded_by = "the RAM device, by memmove";
  }
  info.details.emplace_back("data", cfg_.data ? "stored" : "none (reads return zeroes)");
  if (cfg_.latency_ns) info.details.emplace_back("latency_ns", std::to_string(cfg_.latency_ns));
  if (cfg_.jitter_ns) info.details.emplace_back("jitter_ns", std::to_string(cfg_.jitter_ns));
  if (cfg_.bandwidth) info.details.emplace_back("bandwidth", format_bytes(cfg_.bandwidth) + "/s");
  if (cfg_.fault.nth) info.details.emplace_back("fault", cfg_.fault.describe());
  return info;
}

}  // namespace blkcopy
