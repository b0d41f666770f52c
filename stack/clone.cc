#include "stack/clone.h"

#include <blkcopy/units.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "block/fanout.h"

namespace blkcopy {
namespace {

constexpr char kMagic[8] = {'B', 'L', 'K', 'C', 'L', 'O', 'N', '1'};

struct Header {  // the first bytes of the metadata area; the bitmap follows at kHeader
  char magic[8];
  uint64_t region;
  uint64_t length;
  uint64_t regions;
};

bool test_bit(const uint8_t* bits, uint64_t i) { return bits[i / 8] & (1u << (i % 8)); }

}  // namespace

CloneDevice::CloneDevice(EventLoop& loop, std::string name, Device& source, Device& dest,
                         uint64_t length, const CloneOptions& o)
    : Device(loop, std::move(name)),
      source_(source),
      dest_(dest),
      length_(length),
      opt_(o),
      service_(loop, {.max_in_flight = std::max(1u, o.in_flight), .rate_bytes_per_s = o.rate}) {
  const uint64_t regions = (length + o.region - 1) / o.region;
  state_.assign(regions, State::clean);
  durable_.assign((regions + 7) / 8, 0);
  const uint32_t block = dest.limits().logical_block_size;
  meta_offset_ = (length + block - 1) / block * block;
  meta_ = AlignedBuffer(meta_bytes(regions, block));
  limits_.logical_block_size = std::max(source.limits().logical_block_size, block);
  limits_.capacity = length;
  limits_.max_io_bytes = std::min(source.limits().max_io_bytes, dest.limits().max_io_bytes);
  limits_.read_only = dest.limits().read_only;
  // Copies on a clone are emulated: reads and writes keep the region bookkeeping right.
}

Result<std::unique_ptr<CloneDevice>> CloneDevice::open(EventLoop& loop, std::string name,
                                                       Device& source, Device& dest,
                                                       uint64_t length, const CloneOptions& o) {
  const uint32_t block = std::max(source.limits().logical_block_size,
                                  dest.limits().logical_block_size);
  if (o.region == 0 || o.region % block) {
    return fail(EINVAL, fmt::format("clone region size {} must be a non-zero multiple of the "
                                    "block size {}",
                                    o.region, block));
  }
  if (source.limits().capacity < length) {
    return fail(ERANGE, fmt::format("clone source {} is too small: {} bytes, the target needs {}",
                                    source.name(), source.limits().capacity, length));
  }
  std::unique_ptr<CloneDevice> dev(new CloneDevice(loop, std::move(name), source, dest, length, o));
  const uint64_t need = dev->meta_offset_ + dev->meta_.size();
  if (dest.limits().capacity < need) {
    return fail(ERANGE, fmt::format("clone destination {} is too small: {} bytes, the target "
                                    "needs {} for data and {} for its metadata",
                                    dest.name(), dest.limits().capacity, length,
                                    dev->meta_.size()));
  }
  // One clone per destination: two would both hydrate it and overwrite each other's bitmap.
  if (Status s = dest.claim(dev->name()); !s.ok()) {
    return fail(EBUSY, fmt::format("clone destination {}: a destination takes one clone at a "
                                   "time (close the other first; to hydrate while serving, put "
                                   "`hydrate` in the table)",
                                   s.message()));
  }
  if (Status s = dev->load_metadata(); !s.ok()) return std::unexpected(s);
  if (o.background) dev->start_hydration();
  return dev;
}

Status CloneDevice::load_metadata() {
  if (Status s = submit_and_wait(dest_, Request{Op::read, meta_offset_, meta_.size(), meta_.data()});
      !s.ok()) {
    return s;
  }
  Header h;
  std::memcpy(&h, meta_.data(), sizeof h);
  const uint64_t regions = state_.size();
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) {
    // No clone metadata on DEST yet: start afresh with nothing hydrated. It is written with the
    // first bitmap (after a flush), not now: opening a clone (`clone status`, a table refused
    // further on) writes nothing.
    std::memset(meta_.data(), 0, meta_.size());
    h = Header{{}, opt_.region, length_, regions};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    std::memcpy(meta_.data(), &h, sizeof h);
    return {};
  }
  if (h.region != opt_.region || h.length != length_ || h.regions != regions) {
    return Status::error(EINVAL, fmt::format("clone metadata on {} is for {} bytes in regions of "
                                             "{}, the table says {} in regions of {}",
                                             dest_.name(), h.length, h.region, length_,
                                             opt_.region));
  }
  meta_on_disk_ = true;
  const auto* bits = reinterpret_cast<const uint8_t*>(meta_.data() + kHeader);
  std::memcpy(durable_.data(), bits, durable_.size());
  for (uint64_t r = 0; r < regions; ++r) {
    if (test_bit(bits, r)) state_[r] = State::hydrated;
  }
  return {};
}

CloneDevice::~CloneDevice() {
  (void)stop_hydration();
  // A fresh clone that hydrated nothing leaves DEST as it found it: `clone status`, or a table
  // refused by a later line, writes nothing.
  if (meta_on_disk_ || std::find(state_.begin(), state_.end(), State::hydrated) != state_.end()) {
    (void)commit_sync();
  }
}

CloneStatus CloneDevice::status() const {
  CloneStatus s;
  s.length = length_;
  s.region = opt_.region;
  s.regions = state_.size();
  s.hydrated = static_cast<uint64_t>(std::count(state_.begin(), state_.end(), State::hydrated));
  for (uint64_t r = 0; r < s.regions; ++r) s.durable += test_bit(durable_.data(), r);
  s.copied = copied_;
  s.offloaded_bytes = offloaded_;
  s.emulated_bytes = emulated_;
  s.meta_offset = meta_offset_;
  s.hydrating = background_;
  s.error = error_;
  return s;
}

void CloneDevice::hydrate(uint64_t r, CopyService::Priority p, std::function<void(Status)> then) {
  if (state_[r] == State::hydrated) {
    if (then) loop().post([then] { then(Status()); });
    return;
  }
  if (then) waiters_[r].push_back(std::move(then));
  if (state_[r] == State::hydrating) return;
  state_[r] = State::hydrating;
  queue_copy(r, p);
}

void CloneDevice::queue_copy(uint64_t r, CopyService::Priority p) {
  const uint64_t off = r * opt_.region;
  in_service_.insert(r);
  service_.submit({{&source_, off, region_len(r)}}, dest_, off, p, [this, r](CopyResult res) {
    in_service_.erase(r);
    on_hydrated(r, res);
  });
}

void CloneDevice::on_hydrated(uint64_t r, const CopyResult& res) {
  if (res.status.ok()) {
    ++copied_;
    offloaded_ += res.offloaded_bytes;
    emulated_ += res.emulated_bytes;
  } else {
    error_ = fmt::format("region {}: {}", r, res.status.message());
    background_ = false;  // stop on the first error; the status says why
  }
  settle(r, res.status);
  pump_background();
}

// Region r is on DEST now (or failed to get there): wake what waited for it.
void CloneDevice::settle(uint64_t r, const Status& st) {
  state_[r] = st.ok() ? State::hydrated : State::clean;
  if (st.ok()) commit(nullptr);
  auto waiting = std::move(waiters_[r]);
  waiters_.erase(r);
  for (auto& w : waiting) w(st);
}

void CloneDevice::start_hydration() {
  background_ = true;
  error_.clear();
  pump_background();
}

void CloneDevice::pump_background() {
  while (background_ && service_.queued() < 2 * std::max(1u, opt_.in_flight) &&
         next_region_ < state_.size()) {
    const uint64_t r = next_region_++;
    if (state_[r] == State::clean) hydrate(r, CopyService::Priority::low, nullptr);
  }
  if (background_ && next_region_ == state_.size() && service_.idle()) background_ = false;
}

Status CloneDevice::stop_hydration() {
  background_ = false;
  next_region_ = 0;
  // Copies in flight finish; those still queued are dropped and their regions are clean again,
  // except where a write waits for one: that region is queued again for the write.
  Status s = service_.drain();
  auto dropped = std::move(in_service_);
  in_service_.clear();
  for (uint64_t r : dropped) {
    if (waiters_.count(r)) {
      queue_copy(r, CopyService::Priority::high);
    } else {
      state_[r] = State::clean;
    }
  }
  return s;
}

Status CloneDevice::hydrate_all(const std::function<void(uint64_t, uint64_t)>& progress,
                                const std::atomic<bool>* stop) {
  start_hydration();
  uint64_t last = UINT64_MAX;
  auto hydrated = [this] {
    return static_cast<uint64_t>(std::count(state_.begin(), state_.end(), State::hydrated));
  };
  Status s = loop().run_until([&] {
    const uint64_t n = hydrated();
    if (progress && n != last) progress(n, state_.size());
    last = n;
    return n == state_.size() || !error_.empty() || (stop && stop->load());
  });
  if (!s.ok()) return s;
  if (stop && stop->load() && hydrated() < state_.size()) {
    Status halted = stop_hydration();
    Status committed = commit_sync();
    if (!halted.ok()) return halted;
    if (!committed.ok()) return committed;
    return Status::error(ECANCELED, fmt::format("{}: hydration interrupted with {} of {} regions "
                                                "hydrated (kept: hydrate again to go on)",
                                                name(), hydrated(), state_.size()));
  }
  if (!error_.empty()) return Status::error(EIO, fmt::format("{}: hydration stopped: {}", name(), error_));
  return commit_sync();
}

// Metadata commit: flush DEST (the copied data is durable), write the bitmap, flush again.
// Bits only go from 0 to 1, so a torn metadata write at worst makes a region be copied again.
void CloneDevice::commit(Completion done) {
  if (done) commit_waiters_.push_back(std::move(done));
  if (commit_running_) {
    commit_again_ = true;
    return;
  }
  commit_running_ = true;
  auto* bits = reinterpret_cast<uint8_t*>(meta_.data() + kHeader);
  std::vector<uint8_t> snapshot(durable_.size(), 0);
  for (uint64_t r = 0; r < state_.size(); ++r) {
    if (state_[r] == State::hydrated) snapshot[r / 8] |= static_cast<uint8_t>(1u << (r % 8));
  }
  std::memcpy(bits, snapshot.data(), snapshot.size());
  auto waiters = std::move(commit_waiters_);
  commit_waiters_.clear();
  auto finish = [this, waiters = std::move(waiters), snapshot](Status s) mutable {
    if (s.ok()) durable_ = snapshot, meta_on_disk_ = true;
    commit_running_ = false;
    for (auto& w : waiters) w(s);
    if (commit_again_) {
      commit_again_ = false;
      commit(nullptr);
    }
  };
  auto second_flush = [this, finish](Status s) mutable {
    if (!s.ok()) return finish(s);
    dest_.submit(Request{Op::flush}, finish);
  };
  auto write_meta = [this, second_flush](Status s) mutable {
    if (!s.ok()) return second_flush(s);
    dest_.submit(Request{Op::write, meta_offset_, meta_.size(), meta_.data()}, second_flush);
  };
  dest_.submit(Request{Op::flush}, write_meta);
}

Status CloneDevice::commit_sync() {
  bool done = false;
  Status result;
  commit([&](Status s) {
    result = std::move(s);
    done = true;
  });
  if (Status s = loop().run_until([&] { return done; }); !s.ok()) return s;
  return result;
}

void CloneDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
  if (req.op == Op::copy) return not_offloaded(req, std::move(done), "clone: copies are emulated");
  if (req.op == Op::flush) return commit(std::move(done));  // data is durable once the metadata points at it
  Fanout* f = Fanout::start(loop(), std::move(done));
  const uint64_t end = req.offset + req.length;
  for (uint64_t pos = req.offset; pos < end;) {
    const uint64_t r = pos / opt_.region;
    const uint64_t n = std::min(end, (r + 1) * opt_.region) - pos;
    Request piece = req;
    piece.offset = pos;
    piece.length = n;
    if (req.buf) piece.buf = static_cast<std::byte*>(req.buf) + (pos - req.offset);
    if (req.op == Op::read) {
      // Not hydrated (or hydrating): the source still holds the truth for this region.
      Device& from = state_[r] == State::hydrated ? dest_ : source_;
      from.submit(piece, f->part());
    } else if (state_[r] == State::hydrated) {
      write_piece(piece, f->part());
    } else if (req.op == Op::discard) {
      // Nothing to do: the region still reads from the source, and discarded data is undefined.
    } else if (state_[r] == State::clean && n == region_len(r)) {
      // Overwritten whole: no need to copy it first. Until the write is done, reads still come
      // from the source (old data, never DEST's garbage) and other writes wait.
      state_[r] = State::hydrating;
      Completion part = f->part();
      write_piece(piece, [this, r, part](Status s) {
        settle(r, s);
        part(std::move(s));
      });
    } else {
      Completion part = f->part();
      hydrate(r, CopyService::Priority::high, [this, piece, part](Status s) {
        if (!s.ok()) return part(s);
        write_piece(piece, part);
      });
    }
    pos += n;
  }
  f->submitted();
}

void CloneDevice::write_piece(const Request& piece, Completion done) {
  dest_.submit(piece, std::move(done));
}

DeviceInfo CloneDevice::describe() const {
  const CloneStatus s = status();
  DeviceInfo info{"clone", name(), "none: copies on a clone are emulated through it", {}, {}};
  info.details.emplace_back("hydrated", fmt::format("{} of {} regions of {}", s.hydrated,
                                                    s.regions, format_bytes(double(s.region))));
  info.details.emplace_back("metadata", fmt::format("{} at {}", dest_.name(), s.meta_offset));
  info.children.emplace_back("source", &source_);
  info.children.emplace_back("destination", &dest_);
  return info;
}

}  // namespace blkcopy
