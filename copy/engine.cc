// The copy engine. One CopyRun per copy walks the copy's logical range [0, length) in
// processing order:
//
//   next_      everything before it is planned: offloaded, emulating, or queued to emulate
//   emulate_   ranges queued for emulation (pieces the device answered "not supported")
//   pending_   starts of units whose source has not been read yet: offloads in flight,
//              queued emulation ranges, chunks being read. A destination write at position p
//              waits until no pending unit starts before p. That one rule gives memmove order
//              for overlapping copies (pieces no longer than the overlap distance, walked away
//              from it) and keeps a failed read from being followed by later writes.
//   done_      completed ranges past the in-order prefix, which is the reported progress.
#include <blkcopy/copy.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "block/split.h"
#include "copy/fast_paths.h"
#include "core/buffer.h"

namespace blkcopy {
namespace {

using Clock = std::chrono::steady_clock;
constexpr unsigned kMaxChunksInFlight = 64;

class CopyRun {
 public:
  CopyRun(CopyLayout layout, Device& dst, const CopyOptions& opt, uint64_t piece_cap,
          uint32_t granule, uint64_t chunk, std::function<void(CopyResult)> done)
      : layout_(std::move(layout)),
        dst_(dst),
        opt_(opt),
        piece_cap_(piece_cap),
        granule_(granule),
        chunk_(chunk),
        done_cb_(std::move(done)),
        start_(Clock::now()) {
    result_.backward = layout_.backward();
    offload_ = opt_.emulation != Emulation::force && dst_.limits().can_offload();
    overlap_ = piece_cap_ != UINT64_MAX;
  }

  // Takes ownership of itself; deletes itself after calling `done`.
  void start() {
    if (!offload_ && opt_.emulation == Emulation::never) {
      fail_at(0, Status::error(EOPNOTSUPP, fmt::format("{} cannot offload copies (copy_max_bytes "
                                                       "is 0) and emulation is off",
                                                       dst_.name())));
    }
    dst_.loop().post([this] { pump(); });
  }

 private:
  struct Piece {  // an offloaded copy command
    uint64_t pos;
    CopyDesc desc;
    CopyReport report;
  };
  struct Chunk {  // an emulated unit: one read into buf, then one write from it
    uint64_t pos;
    CopyDesc desc;
    std::byte* buf;
  };

  uint64_t total() const { return layout_.length(); }
  bool failed() const { return fail_pos_.has_value(); }
  bool gate_open(uint64_t pos) const { return pending_.empty() || *pending_.begin() >= pos; }

  void pump() {
    if (pumping_) return;
    if (opt_.cancel && opt_.cancel->load() && !failed() && prefix_ < total()) {
      fail_at(prefix_, Status::error(ECANCELED, "the copy was interrupted"));
    }
    pumping_ = true;
    issue_writes();
    issue_offloads();
    issue_reads();
    pumping_ = false;
    maybe_finish();
  }

  void issue_offloads() {
    while (!failed() && offload_ && next_ < total() &&
           copies_in_flight_ < opt_.max_copies_in_flight && (!overlap_ || gate_open(next_))) {
      auto piece = std::make_unique<Piece>(
          Piece{next_, layout_.piece(next_, piece_cap_, dst_.limits(), granule_), {}});
      if (piece->desc.sources.empty()) {  // the limits cannot take even one block
        offload_ = false;
        break;
      }
      const uint64_t pos = next_;
      next_ += piece->desc.dst.length;
      pending_.insert(pos);
      ++copies_in_flight_;
      ++result_.commands;
      Piece* p = piece.release();
      dst_.submit(Request{Op::copy, 0, 0, nullptr, &p->desc, &p->report},
                  [this, p](Status st) { on_offload(p, std::move(st)); });
    }
    if (!failed() && !offload_ && next_ < total()) {
      if (opt_.emulation == Emulation::never) {
        fail_at(next_, Status::error(EOPNOTSUPP, fmt::format("{}: its copy limits cannot take "
                                                             "this copy and emulation is off",
                                                             dst_.name())));
        return;
      }
      because(fmt::format("{}: its copy limits cannot take this copy", dst_.name()));
      queue_emulation(next_, total() - next_);
      next_ = total();
    }
  }

  void because(const std::string& why) {
    if (opt_.explain_emulation && result_.emulated_because.empty()) result_.emulated_because = why;
  }

  void on_offload(Piece* raw, Status st) {
    std::unique_ptr<Piece> p(raw);
    --copies_in_flight_;
    const uint64_t len = p->desc.dst.length;
    if (st.ok() && !p->report.not_supported.empty() && opt_.emulation == Emulation::never) {
      fail_at(p->pos, Status::error(EOPNOTSUPP, fmt::format("{} and emulation is off",
                                                            p->report.why_not_supported)));
    } else if (st.ok()) {
      pending_.erase(p->pos);
      offloaded(*p);
    } else {
      // The device may say how much of the piece's start it copied before failing (a forward
      // copy only: a backward piece's start is its highest bytes).
      const uint64_t part = layout_.backward() ? 0 : std::min(p->report.done_before_error, len);
      if (part) {
        complete_range(p->pos, part, true);
        result_.offloaded_bytes += part;
        by_device_[&dst_] += part;
      }
      fail_at(p->pos + part, std::move(st));  // stays pending: nothing after it gets written
    }
    pump();
  }

  // A piece the device completed: all of it offloaded, except the ranges its report says the
  // device could not take (a stack whose legs landed on different children), emulated now.
  void offloaded(const Piece& p) {
    const uint64_t len = p.desc.dst.length;
    auto gaps = p.report.not_supported;  // offsets from the piece's lowest byte
    if (layout_.backward()) {  // logical positions run from the piece's highest byte down
      for (auto& [off, n] : gaps) off = len - off - n;
    }
    std::sort(gaps.begin(), gaps.end());
    if (!gaps.empty()) because(p.report.why_not_supported);
    uint64_t at = 0, moved = 0;
    for (auto [off, n] : gaps) {
      if (off > at) complete_range(p.pos + at, off - at, true);
      moved += off > at ? off - at : 0;
      queue_emulation(p.pos + off, n);
      at = off + n;
    }
    if (at < len) complete_range(p.pos + at, len - at, true);
    moved += len > at ? len - at : 0;
    result_.offloaded_bytes += moved;
    if (p.report.offloaded_on.empty()) {
      by_device_[&dst_] += moved;
    } else {
      for (auto [dev, n] : p.report.offloaded_on) by_device_[dev] += n;
    }
  }

  void queue_emulation(uint64_t pos, uint64_t len) {
    emulate_.emplace(pos, pos + len);
    pending_.insert(pos);
  }

  void issue_reads() {
    while (!failed() && !emulate_.empty()) {
      std::byte* buf = take_buffer();
      if (!buf && !ready_.empty() && ready_.rbegin()->first > emulate_.begin()->first) {
        // Every buffer holds a chunk waiting behind a range queued below it (an offloaded piece
        // came back "not supported" late): give up the highest chunk and read it again later,
        // or the lower range could never be read and the copy would stall.
        auto last = std::prev(ready_.end());
        buf = last->second->buf;
        queue_emulation(last->first, last->second->desc.dst.length);
        ready_.erase(last);
      }
      if (!buf) return;
      auto [pos, end] = *emulate_.begin();
      emulate_.erase(emulate_.begin());
      auto chunk = std::make_unique<Chunk>(
          Chunk{pos, layout_.extent(pos, std::min({chunk_, end - pos, piece_cap_})), buf});
      const uint64_t len = chunk->desc.dst.length;
      if (pos + len < end) queue_emulation(pos + len, end - pos - len);
      // `pos` stays in pending_ until this chunk's read completes.
      const CopySegment& src = chunk->desc.sources[0];
      ++reads_in_flight_;
      ++result_.commands;
      Chunk* c = chunk.release();
      src.dev->submit(Request{Op::read, src.offset, len, buf},
                      [this, c](Status st) { on_read(c, std::move(st)); });
    }
  }

  void on_read(Chunk* raw, Status st) {
    std::unique_ptr<Chunk> c(raw);
    --reads_in_flight_;
    if (!st.ok()) {
      give_buffer(c->buf);
      fail_at(c->pos, std::move(st));
    } else {
      result_.host_read_bytes += c->desc.dst.length;
      pending_.erase(c->pos);
      ready_.emplace(c->pos, std::move(c));
    }
    pump();
  }

  void issue_writes() {
    while (!ready_.empty()) {
      auto it = ready_.begin();
      const uint64_t pos = it->first;
      if (failed() && pos >= *fail_pos_) return drop_ready(it);
      if (!gate_open(pos)) return;
      Chunk* c = it->second.release();
      ready_.erase(it);
      ++writes_in_flight_;
      ++result_.commands;
      dst_.submit(Request{Op::write, c->desc.dst.offset, c->desc.dst.length, c->buf},
                  [this, c](Status st) { on_write(c, std::move(st)); });
    }
  }

  // Chunks read beyond a failure are never written: their buffers go back at once. With shared
  // buffers others may be waiting for them (this copy's own next take among them: holding them
  // until the copy ends would wait for ever).
  void drop_ready(std::map<uint64_t, std::unique_ptr<Chunk>>::iterator from) {
    for (auto it = from; it != ready_.end(); ++it) give_buffer(it->second->buf);
    ready_.erase(from, ready_.end());
  }

  void on_write(Chunk* raw, Status st) {
    std::unique_ptr<Chunk> c(raw);
    --writes_in_flight_;
    give_buffer(c->buf);
    const uint64_t len = c->desc.dst.length;
    if (st.ok()) {
      result_.host_written_bytes += len;
      result_.emulated_bytes += len;
      complete_range(c->pos, len, false);
    } else {
      fail_at(c->pos, std::move(st));
    }
    pump();
  }

  // With shared buffers (CopyOptions::buffers) a chunk's buffer is taken before its read and
  // given back after its write; the run keeps at most its own slot count. When none is free the
  // source calls back (pump) once there may be one.
  std::byte* take_buffer() {
    if (opt_.buffers) {
      if (shared_held_ >= slots() || waiting_for_buffer_) return nullptr;
      std::byte* b = opt_.buffers->take(chunk_, [this] {
        waiting_for_buffer_ = false;
        pump();
      });
      if (!b) {
        waiting_for_buffer_ = true;
        return nullptr;
      }
      ++shared_held_;
      return b;
    }
    if (pool_.size() == 0) {
      // No more buffers than the copy can fill: a small copy maps little memory.
      pool_ = AlignedBuffer(slots() * chunk_);
      for (uint64_t i = slots(); i-- > 0;) free_bufs_.push_back(pool_.data() + i * chunk_);
    }
    if (free_bufs_.empty()) return nullptr;
    std::byte* b = free_bufs_.back();
    free_bufs_.pop_back();
    return b;
  }

  void give_buffer(std::byte* b) {
    if (!opt_.buffers) return free_bufs_.push_back(b);
    --shared_held_;
    opt_.buffers->give(b, chunk_);
  }

  // Chunks in flight at most: no more than the copy can fill, so a small copy takes little.
  uint64_t slots() const {
    return std::clamp<uint64_t>(std::min(opt_.buffer_bytes / chunk_, (total() + chunk_ - 1) / chunk_),
                                1, kMaxChunksInFlight);
  }

  void complete_range(uint64_t pos, uint64_t len, bool offloaded) {
    done_.emplace(pos, Done{pos + len, offloaded});
    const uint64_t before = prefix_;
    for (auto it = done_.find(prefix_); it != done_.end(); it = done_.find(prefix_)) {
      prefix_ = it->second.end;
      done_.erase(it);
    }
    if (prefix_ != before && opt_.progress) opt_.progress(prefix_, total());
  }

  void fail_at(uint64_t pos, Status st) {
    if (fail_pos_ && *fail_pos_ <= pos) return;
    fail_pos_ = pos;
    result_.status = std::move(st);
  }

  void maybe_finish() {
    if (copies_in_flight_ || reads_in_flight_ || writes_in_flight_ || waiting_for_buffer_) return;
    if (!failed() && (next_ < total() || !emulate_.empty() || !ready_.empty())) return;
    drop_ready(ready_.begin());  // after a failure, chunks the gate held back are not written
    result_.bytes = prefix_;
    // Pieces that completed beyond the progress (after a failure before them) are not counted
    // as copied: offloaded + emulated == bytes, always.
    for (const auto& [pos, d] : done_) {
      (d.offloaded ? result_.offloaded_bytes : result_.emulated_bytes) -= d.end - pos;
    }
    for (auto [dev, n] : by_device_) {
      if (n && opt_.per_device) result_.offloaded_by_device.emplace_back(dev->name(), n);
    }
    result_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    auto done = std::move(done_cb_);
    CopyResult result = std::move(result_);
    delete this;
    done(std::move(result));
  }

  CopyLayout layout_;
  Device& dst_;
  CopyOptions opt_;
  const uint64_t piece_cap_;  // overlap distance for memmove order, else unlimited
  const uint32_t granule_;    // every cut is a multiple of it
  const uint64_t chunk_;      // emulation unit
  std::function<void(CopyResult)> done_cb_;
  Clock::time_point start_;
  bool offload_ = true;
  bool overlap_ = false;
  bool pumping_ = false;

  uint64_t next_ = 0;
  std::map<uint64_t, uint64_t> emulate_;
  std::set<uint64_t> pending_;
  struct Done {
    uint64_t end;
    bool offloaded;
  };
  std::map<uint64_t, Done> done_;
  uint64_t prefix_ = 0;
  std::map<uint64_t, std::unique_ptr<Chunk>> ready_;
  AlignedBuffer pool_;
  std::vector<std::byte*> free_bufs_;
  uint64_t shared_held_ = 0;         // buffers taken from opt_.buffers
  bool waiting_for_buffer_ = false;  // opt_.buffers will call back
  unsigned copies_in_flight_ = 0, reads_in_flight_ = 0, writes_in_flight_ = 0;
  std::optional<uint64_t> fail_pos_;
  std::map<const Device*, uint64_t> by_device_;
  CopyResult result_;
};

}  // namespace

void engine::run_general(std::span<const CopySegment> sources, const Plan& p, const CopyOptions& opt,
                         std::function<void(CopyResult)> done) {
  CopyLayout layout({sources.begin(), sources.end()}, p.dst, p.dst_offset, p.backward);
  (new CopyRun(std::move(layout), *p.dst, opt, p.piece_cap, p.granule, p.chunk, std::move(done)))
      ->start();
}

}  // namespace blkcopy
