#include "stack/dm_device.h"

#include "block/fanout.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace blkcopy {
namespace fs = std::filesystem;

namespace {

// Tables being opened on this thread, outermost first: a table naming one of them is a loop.
thread_local std::vector<std::string> g_opening;

uint64_t align_down(uint64_t v, uint64_t a) { return v - v % a; }

}  // namespace

Result<DmConfig> parse_dm_config(std::string_view spec) {
  if (spec.empty()) return fail(EINVAL, "dm device: expected dm:TABLEFILE");
  return DmConfig{std::string(spec)};
}

std::string Target::describe() const {
  switch (kind) {
    case TargetKind::linear: return fmt::format("linear at {}", legs[0].offset);
    case TargetKind::flakey:
      return fmt::format("flakey at {} ({} rule{})", legs[0].offset, faults.size(),
                         faults.size() == 1 ? "" : "s");
    case TargetKind::striped:
      return fmt::format("striped over {}, chunk {}", legs.size(), chunk);
    case TargetKind::error: return "error";
    case TargetKind::zero: return "zero";
    case TargetKind::clone: return "clone";
  }
  return "?";
}

Result<std::unique_ptr<DmDevice>> DmDevice::open(EventLoop& loop, std::string name,
                                                 const std::string& table_path, bool read_only,
                                                 ChildOpener open_child) {
  if (!open_child) return fail(EINVAL, "dm: no device opener given (open stacks with open_device)");
  std::error_code ec;
  const std::string key = fs::weakly_canonical(table_path, ec).string();
  if (std::find(g_opening.begin(), g_opening.end(), key) != g_opening.end()) {
    std::string chain;
    for (const std::string& t : g_opening) chain += t + " -> ";
    return fail(ELOOP, fmt::format("table loop: {}{}", chain, key));
  }
  std::ifstream in(table_path);
  if (!in) {
    return std::unexpected(Status::from_errno(errno ? errno : ENOENT,
                                              fmt::format("cannot read table {}", table_path)));
  }
  std::stringstream text;
  text << in.rdbuf();
  auto entries = parse_table(text.str(), table_path);
  if (!entries) return std::unexpected(entries.error());

  g_opening.push_back(key);
  std::unique_ptr<DmDevice> dev(new DmDevice(loop, std::move(name)));
  dev->table_path_ = table_path;
  dev->open_child_ = std::move(open_child);
  dev->entries_ = *entries;
  dev->table_dir_ = fs::path(table_path).parent_path().string();
  dev->read_only_ = read_only;
  Status s = dev->build(*entries, dev->table_dir_, read_only);
  g_opening.pop_back();
  if (!s.ok()) return std::unexpected(s);
  return dev;
}

// The same table on another loop, built from channels of this stack's children: the stack's
// state is its table, so the channel routes exactly as this device does. A clone target keeps
// state (which regions are hydrated) that cannot be shared: such stacks have no channels.
Result<std::unique_ptr<Device>> DmDevice::channel(EventLoop& other) {
  if (!clones_.empty()) return fail(ENOTSUP, fmt::format("{}: a stack with a clone target has no "
                                                         "channel for another event loop",
                                                         name()));
  std::unique_ptr<DmDevice> c(new DmDevice(other, name()));
  c->table_path_ = table_path_;
  c->entries_ = entries_;
  c->table_dir_ = table_dir_;
  c->read_only_ = read_only_;
  c->identity_ = identity_;
  c->open_child_ = [this](EventLoop& l, std::string_view spec,
                          bool) -> Result<std::unique_ptr<Device>> {
    auto it = children_.find(std::string(spec));
    if (it == children_.end()) return fail(ENOENT, fmt::format("{}: no child {}", name(), spec));
    return it->second->channel(l);
  };
  if (Status s = c->build(entries_, table_dir_, read_only_); !s.ok()) return std::unexpected(s);
  c->limits_.copy_max_bytes = std::min(c->limits_.copy_max_bytes, limits_.copy_max_bytes);
  c->open_child_ = nullptr;
  return std::unique_ptr<Device>(std::move(c));
}

Status DmDevice::lock_storage() {
  for (auto& [spec, child] : children_) {
    if (child->limits().read_only) continue;  // a clone's source: never written, often shared
    if (Status s = child->claim(name()); !s.ok()) return s;
  }
  return {};
}

bool DmDevice::same_storage(const Device& other) const {
  auto* d = dynamic_cast<const DmDevice*>(&other);
  return d && d->identity_ == identity_;
}

bool DmDevice::supports(Op op) const {
  if (op == Op::copy || op == Op::read || op == Op::write || op == Op::flush) {
    return Device::supports(op);
  }
  for (const auto& [spec, dev] : children_) {
    if (!dev->supports(op)) return false;
  }
  return true;
}

void DmDevice::derive_limits() {
  QueueLimits& l = limits_;
  l.logical_block_size = 512;
  l.capacity = targets_.back().start + targets_.back().length;
  l.max_io_bytes = UINT64_MAX;
  bool offload = true, any = false;
  uint64_t copy_max = UINT64_MAX, seg_max = UINT64_MAX;
  uint32_t segs = UINT32_MAX;
  for (const Target& t : targets_) {
    for (const CopySegment& leg : t.legs) {
      const QueueLimits& c = leg.dev->limits();
      any = true;
      l.logical_block_size = std::max(l.logical_block_size, c.logical_block_size);
      l.max_io_bytes = std::min(l.max_io_bytes, c.max_io_bytes);
      l.read_only |= c.read_only;
      offload &= c.can_offload();
      copy_max = std::min(copy_max, c.copy_max_bytes);
      seg_max = std::min(seg_max, c.copy_segment_max_bytes);
      segs = std::min(segs, c.copy_max_src_segments);
    }
    if (t.kind == TargetKind::striped) {  // a piece beyond one chunk would always be split
      copy_max = std::min(copy_max, t.chunk);
      seg_max = std::min(seg_max, t.chunk);
    }
  }
  if (!any) l.max_io_bytes = 1u << 30;
  l.copy_max_hw_bytes = l.copy_max_bytes = l.copy_segment_max_bytes = 0;
  l.copy_max_src_segments = 0;
  if (offload && any) {
    l.copy_max_hw_bytes = l.copy_max_bytes = align_down(copy_max, l.logical_block_size);
    l.copy_segment_max_bytes = align_down(seg_max, l.logical_block_size);
    l.copy_max_src_segments = segs;
  }
}

Mapped DmDevice::map(uint64_t offset, uint64_t max_len) const {
  auto it = std::upper_bound(targets_.begin(), targets_.end(), offset,
                             [](uint64_t off, const Target& t) { return off < t.start; });
  const Target& t = *(it - 1);
  const uint64_t rel = offset - t.start;
  const uint64_t n = std::min(max_len, t.length - rel);
  switch (t.kind) {
    case TargetKind::linear:
    case TargetKind::flakey:
    case TargetKind::clone: return {&t, t.legs[0].dev, t.legs[0].offset + rel, n};
    case TargetKind::striped: {
      const uint64_t c = rel / t.chunk, within = rel % t.chunk;
      const CopySegment& leg = t.legs[c % t.legs.size()];
      return {&t, leg.dev, leg.offset + (c / t.legs.size()) * t.chunk + within,
              std::min(n, t.chunk - within)};
    }
    case TargetKind::error:
    case TargetKind::zero: break;
  }
  return {&t, nullptr, 0, n};
}

// One request of the stack in flight: its child requests and what they found.
struct DmDevice::Join {
  Fanout* fan;  // completes the request once every child request has
  CopyReport merged;
  std::vector<std::unique_ptr<CopyDesc>> descs;  // child copies live until the end
  std::vector<std::unique_ptr<CopyReport>> reports;

  void error(Status s) { fan->error(std::move(s)); }
};

void DmDevice::send(const Target* t, Device* dev, const Request& child_req, Join* j,
                    std::function<void(Status)> on_done) {
  Completion part = j->fan->part();
  auto go = [dev, child_req, on_done, part] {
    dev->submit(child_req, [on_done, part](Status st) {
      on_done(std::move(st));
      part(Status());
    });
  };
  if (!t || t->kind != TargetKind::flakey) return go();
  t->counter.note(child_req.op);
  uint64_t delay = 0;
  for (const FaultRule& r : t->faults) {
    if (!t->counter.fires(child_req.op, r)) continue;
    if (r.delay_ns == 0) {  // fail: the child never sees the request
      Status st = Status::from_errno(r.error, fmt::format("{}: flakey target (line {}) failed {} "
                                                          "#{}",
                                                          name(), t->line, op_name(child_req.op),
                                                          t->counter.seen(child_req.op)));
      loop().post([on_done, part, st] {
        on_done(st);
        part(Status());
      });
      return;
    }
    delay = std::max(delay, r.delay_ns);
  }
  if (delay) return delays_.at(std::chrono::steady_clock::now() + std::chrono::nanoseconds(delay), go);
  go();
}

void DmDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
  auto* j = new Join;
  CopyReport* out = req.op == Op::copy ? req.report : nullptr;
  j->fan = Fanout::start(loop(), [j, out, done = std::move(done)](Status s) {
    if (out && s.ok()) *out = std::move(j->merged);
    delete j;
    done(std::move(s));
  });
  if (req.op == Op::copy) {
    route_copy(req, j);
  } else {
    route_io(req, j);
  }
  j->fan->submitted();  // never completes inside submit()
}

void DmDevice::route_io(const Request& req, Join* j) {
  auto note = [j](Status s) {
    if (!s.ok()) j->error(std::move(s));
  };
  if (req.op == Op::flush) {
    for (auto& [spec, dev] : children_) send(nullptr, dev.get(), Request{Op::flush}, j, note);
    for (auto& c : clones_) send(nullptr, c.get(), Request{Op::flush}, j, note);  // metadata
    return;
  }
  const uint64_t end = req.offset + req.length;
  for (uint64_t pos = req.offset; pos < end;) {
    const Mapped m = map(pos, end - pos);
    std::byte* buf = req.buf ? static_cast<std::byte*>(req.buf) + (pos - req.offset) : nullptr;
    switch (m.target->kind) {
      case TargetKind::error:
        j->error(Status::error(EIO, fmt::format("{}: {} at {} hits the error target on line {}",
                                                name(), op_name(req.op), pos, m.target->line)));
        break;
      case TargetKind::zero:
        if (req.op == Op::read) std::memset(buf, 0, m.length);  // writes vanish
        break;
      default: send(m.target, m.dev, Request{req.op, m.offset, m.length, buf}, j, note);
    }
    pos += m.length;
  }
}

void DmDevice::route_copy(const Request& req, Join* j) {
  const CopyDesc& c = *req.copy;
  for (const CopySegment& s : c.sources) {
    if (!same_copy_domain(*s.dev)) {
      j->merged.none(c.dst.length, fmt::format("{}: copy from another device", name()));
      return;
    }
  }
  // The group being built: consecutive parts that go to one child as one copy.
  struct Group {
    const Target* target = nullptr;
    Device* dev = nullptr;
    uint64_t pos = 0;  // logical start within the copy
    CopyDesc desc;
  } g;
  // Ranges no child can take as one copy, and why (the first reason).
  auto unsupported = [j](uint64_t pos, uint64_t n, const std::string& why) {
    if (j->merged.why_not_supported.empty()) j->merged.why_not_supported = why;
    auto& ns = j->merged.not_supported;
    if (!ns.empty() && ns.back().first + ns.back().second == pos) {
      ns.back().second += n;
    } else {
      ns.emplace_back(pos, n);
    }
  };
  auto flush = [&] {
    if (!g.dev) return;
    auto desc = std::make_unique<CopyDesc>(std::move(g.desc));
    auto rep = std::make_unique<CopyReport>();
    const Request r{Op::copy, 0, 0, nullptr, desc.get(), rep.get()};
    const uint64_t p0 = g.pos, len = desc->dst.length;
    Device* dev = g.dev;
    CopyReport* rp = rep.get();
    j->descs.push_back(std::move(desc));
    j->reports.push_back(std::move(rep));
    send(g.target, dev, r, j, [j, p0, len, dev, rp](Status s) {
      if (!s.ok()) {
        j->error(std::move(s));
      } else {
        uint64_t skipped = 0;
        for (auto [o, n] : rp->not_supported) {
          j->merged.not_supported.emplace_back(p0 + o, n);
          skipped += n;
        }
        if (skipped && j->merged.why_not_supported.empty()) {
          j->merged.why_not_supported = rp->why_not_supported;
        }
        if (rp->offloaded_on.empty()) {
          j->merged.offloaded_on.emplace_back(dev, len - skipped);
        } else {
          for (auto& e : rp->offloaded_on) j->merged.offloaded_on.push_back(e);
        }
      }
    });
    g = Group{};
  };

  uint64_t p = 0;
  for (const CopySegment& src : c.sources) {
    for (uint64_t within = 0; within < src.length;) {
      const Mapped ms = map(src.offset + within, src.length - within);
      const Mapped md = map(c.dst.offset + p, ms.length);
      uint64_t n = md.length;
      const bool offloadable = ms.dev && md.dev && md.dev->limits().can_offload() &&
                               md.dev->same_copy_domain(*ms.dev);
      if (offloadable) {
        const QueueLimits& cl = md.dev->limits();
        n = std::min({n, align_down(cl.copy_max_bytes, limits_.logical_block_size),
                      align_down(cl.copy_segment_max_bytes, limits_.logical_block_size)});
      }
      if (!offloadable || n == 0) {
        const bool too_small = offloadable;  // the limits cannot take one block
        n = md.length;
        flush();
        unsupported(p, n, !ms.dev || !md.dev ? fmt::format("{}: a leg lands on an error or zero target", name())
                          : !md.dev->limits().can_offload()
                              ? fmt::format("{}: {} does not offload", name(), md.dev->name())
                          : too_small ? fmt::format("{}: {}'s copy limits cannot take a block", name(), md.dev->name())
                                   : fmt::format("{}: the source ({}, line {}) and the destination ({}, line {}) "
                                                 "are not in one copy domain",
                                                 name(), ms.dev->name(), ms.target->line, md.dev->name(),
                                                 md.target->line));
      } else {
        const QueueLimits& cl = md.dev->limits();
        auto& srcs = g.desc.sources;
        const bool joins = g.dev == md.dev && g.target == md.target &&
                           g.desc.dst.offset + g.desc.dst.length == md.offset &&
                           g.desc.dst.length + n <= cl.copy_max_bytes;
        const bool extends = joins && srcs.back().dev == ms.dev &&
                             srcs.back().offset + srcs.back().length == ms.offset &&
                             srcs.back().length + n <= cl.copy_segment_max_bytes;
        if (!joins || (!extends && srcs.size() >= cl.copy_max_src_segments)) {
          flush();
          g.target = md.target;
          g.dev = md.dev;
          g.pos = p;
          g.desc.dst = {md.dev, md.offset, 0};
        }
        if (extends && g.dev == md.dev && !srcs.empty()) {
          srcs.back().length += n;
        } else {
          srcs.push_back({ms.dev, ms.offset, n});
        }
        g.desc.dst.length += n;
      }
      p += n;
      within += n;
    }
  }
  flush();
}

std::vector<CloneDevice*> DmDevice::clones() const {
  std::vector<CloneDevice*> out;
  for (const auto& c : clones_) out.push_back(c.get());
  return out;
}

std::vector<CloneTarget*> clone_targets(Device& device) {
  std::vector<CloneTarget*> out;
  if (auto* dm = dynamic_cast<DmDevice*>(&device)) {
    for (CloneDevice* c : dm->clones()) out.push_back(c);
  }
  return out;
}

DeviceInfo DmDevice::describe() const {
  DeviceInfo info{"dm", name(), "", {}, {}};
  if (limits_.can_offload()) {
    info.copy_method = "passed down leg by leg: offloaded where both legs land in one child's "
                       "copy domain, emulated elsewhere";
    info.offloaded_by = "the devices below, each as its own kind does";
  } else {
    info.copy_method = "none: a child cannot offload, so copies are emulated";
  }
  info.details.emplace_back("table", table_path_);
  info.details.emplace_back("targets", std::to_string(targets_.size()));
  for (const Target& t : targets_) {
    const std::string range = fmt::format("sectors {}+{}", t.start / kSector, t.length / kSector);
    if (t.legs.empty()) info.children.emplace_back(range + " " + t.describe(), nullptr);
    for (size_t i = 0; i < t.legs.size(); ++i) {
      std::string role = range + " " + t.describe();
      if (t.kind == TargetKind::striped) {
        role = fmt::format("{} striped: stripe {} of {} at {}, chunk {}", range, i + 1,
                           t.legs.size(), t.legs[i].offset, t.chunk);
      }
      info.children.emplace_back(role, t.legs[i].dev);
    }
  }
  return info;
}

}  // namespace blkcopy
