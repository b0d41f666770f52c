#include "copy/fast_paths.h"

#include <chrono>
#include <memory>
#include <vector>

#include "block/split.h"
#include "core/buffer.h"

namespace blkcopy::engine {
namespace {

using Clock = std::chrono::steady_clock;

// Objects of type T reused per thread, at most `keep` of them.
template <class T, size_t keep>
class ThreadPool {
 public:
  static T* take() {
    auto& free = list();
    if (free.empty()) return new T;
    T* t = free.back().release();
    free.pop_back();
    return t;
  }
  static void give(T* t) {
    auto& free = list();
    if (free.size() < keep) return free.emplace_back(t), void();
    delete t;
  }

 private:
  static std::vector<std::unique_ptr<T>>& list() {
    thread_local std::vector<std::unique_ptr<T>> free;
    return free;
  }
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One copy request (run_one_piece).
struct OnePiece {
  CopyDesc desc;
  CopyReport report;
  Plan plan;
  CopyOptions opt;
  std::function<void(CopyResult)> done;
  Clock::time_point start;

  void on_done(Status st);
  void give() {
    desc.sources.clear();
    report.not_supported.clear();
    report.why_not_supported.clear();
    report.offloaded_on.clear();
    report.done_before_error = 0;
    opt = CopyOptions{};
    done = nullptr;
    ThreadPool<OnePiece, 256>::give(this);
  }
};

void OnePiece::on_done(Status st) {
  const uint64_t len = desc.dst.length;
  if (st.ok() && !report.not_supported.empty()) {  // emulate it, from the start
    auto finish = [done = std::move(done),
                   why = opt.explain_emulation ? report.why_not_supported : std::string()](CopyResult r) {
      if (r.emulated_because.empty()) r.emulated_because = why;
      done(std::move(r));
    };
    const bool none = report.not_supported.size() == 1 && report.not_supported[0].first == 0 &&
                      report.not_supported[0].second == len;
    // Parts of a stack that were offloaded would be offloaded again by the general walk.
    if (none && one_chunk(desc.sources, plan, opt)) {
      run_one_chunk(desc.sources[0], plan, opt, 1, std::move(finish));
    } else {
      run_general(desc.sources, plan, opt, [finish = std::move(finish)](CopyResult r) {
        ++r.commands;  // the one the device did not take whole
        finish(std::move(r));
      });
    }
    return give();
  }
  CopyResult r;
  r.commands = 1;
  r.status = std::move(st);
  r.bytes = r.offloaded_bytes = r.status.ok() ? len : std::min(report.done_before_error, len);
  if (opt.per_device && r.bytes && report.offloaded_on.empty()) {
    r.offloaded_by_device.emplace_back(plan.dst->name(), r.bytes);
  } else if (opt.per_device && r.status.ok()) {
    for (auto [dev, n] : report.offloaded_on) {
      if (n) r.offloaded_by_device.emplace_back(dev->name(), n);
    }
  }
  r.seconds = seconds_since(start);
  if (r.status.ok() && opt.progress) opt.progress(len, len);
  auto finish = std::move(done);
  give();
  finish(std::move(r));
}

// One read, then one write (run_one_chunk).
struct OneChunk {
  static constexpr uint64_t kKeepOwn = 128 << 10;  // own buffers kept for the next copy up to this
  CopySegment src;
  Plan plan;
  CopyOptions opt;
  std::function<void(CopyResult)> done;
  Clock::time_point start;
  AlignedBuffer own;
  std::byte* buf = nullptr;
  CopyResult result;

  void read() {
    if (opt.buffers) {
      buf = opt.buffers->take(plan.chunk, [this] { read(); });
      if (!buf) return;  // called again when there may be room
    } else {
      if (own.size() < plan.chunk) own = AlignedBuffer(plan.chunk);
      buf = own.data();
    }
    ++result.commands;
    src.dev->submit(Request{Op::read, src.offset, plan.total, buf}, [this](Status st) {
      if (!st.ok()) return finish(std::move(st));
      result.host_read_bytes = plan.total;
      write();
    });
  }
  void write() {
    ++result.commands;
    plan.dst->submit(Request{Op::write, plan.dst_offset, plan.total, buf}, [this](Status st) {
      if (!st.ok()) return finish(std::move(st));
      result.host_written_bytes = result.emulated_bytes = result.bytes = plan.total;
      if (opt.progress) opt.progress(plan.total, plan.total);
      finish({});
    });
  }
  void finish(Status st) {
    if (opt.buffers) opt.buffers->give(buf, plan.chunk);
    buf = nullptr;
    result.status = std::move(st);
    result.seconds = seconds_since(start);
    CopyResult r = std::move(result);
    auto cb = std::move(done);
    result = CopyResult{};
    opt = CopyOptions{};
    if (own.size() > kKeepOwn) own = AlignedBuffer();
    ThreadPool<OneChunk, 64>::give(this);
    cb(std::move(r));
  }
};

}  // namespace

bool one_piece(std::span<const CopySegment> sources, const Plan& p) {
  const QueueLimits& l = p.dst->limits();
  if (p.piece_cap != UINT64_MAX || !l.can_offload() || sources.size() > l.copy_max_src_segments) {
    return false;
  }
  const PieceCaps caps = piece_caps(l, p.granule);
  if (p.total > caps.max_bytes) return false;
  for (const CopySegment& s : sources) {
    if (s.length > caps.segment_max) return false;
  }
  return true;
}

void run_one_piece(std::span<const CopySegment> sources, const Plan& p, const CopyOptions& opt,
                   std::function<void(CopyResult)> done) {
  OnePiece* f = ThreadPool<OnePiece, 256>::take();
  f->desc.sources.assign(sources.begin(), sources.end());
  f->desc.dst = {p.dst, p.dst_offset, p.total};
  f->plan = p;
  f->opt = opt;
  f->done = std::move(done);
  f->start = Clock::now();
  p.dst->submit(Request{Op::copy, 0, 0, nullptr, &f->desc, &f->report},
                [f](Status st) { f->on_done(std::move(st)); });
}

bool one_chunk(std::span<const CopySegment> sources, const Plan& p, const CopyOptions& opt) {
  return sources.size() == 1 && p.piece_cap == UINT64_MAX && p.total == p.chunk &&
         opt.emulation != Emulation::never && !(opt.cancel && opt.cancel->load());
}

void run_one_chunk(const CopySegment& src, const Plan& p, const CopyOptions& opt,
                   uint64_t commands, std::function<void(CopyResult)> done) {
  OneChunk* c = ThreadPool<OneChunk, 64>::take();
  c->src = src;
  c->plan = p;
  c->opt = opt;
  c->done = std::move(done);
  c->start = Clock::now();
  c->result.commands = commands;
  // Later, as CopyRun starts: a copy's callback never runs inside copy_async.
  p.dst->loop().post([c] { c->read(); });
}

}  // namespace blkcopy::engine
