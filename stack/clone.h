// The clone target: a device that reads through to a SOURCE until each region has been copied
// to DEST ("hydrated"), like dm-clone. Writes go to DEST; a write covering part of a region not
// yet copied first copies that region. A background copier hydrates region by region through
// the copy service (offloaded where SOURCE and DEST share a copy domain), with a bound on the
// copies in flight and a rate limit. Which regions are hydrated is kept in a small metadata area
// on DEST right after the data, committed after the data is flushed, so a clone resumes where
// it stopped and never serves stale data. The source is never written.
#pragma once

#include <blkcopy/clone.h>
#include <blkcopy/device.h>

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <vector>

#include <blkcopy/service.h>
#include "core/buffer.h"

namespace blkcopy {

struct CloneOptions {
  uint64_t region = 0;      // bytes per region
  bool background = false;  // start hydrating when opened
  unsigned in_flight = 4;   // region copies at once
  uint64_t rate = 0;        // bytes per second, 0 = unlimited
};

class CloneDevice final : public Device, public CloneTarget {
 public:
  // Reads the metadata from DEST, or starts it afresh when DEST has none.
  static Result<std::unique_ptr<CloneDevice>> open(EventLoop& loop, std::string name,
                                                   Device& source, Device& dest, uint64_t length,
                                                   const CloneOptions& options);
  ~CloneDevice() override;  // stops hydrating, waits for copies in flight, commits

  void submit(const Request& req, Completion done) override;
  DeviceInfo describe() const override;

  const std::string& clone_name() const override { return name(); }
  CloneStatus status() const override;
  void start_hydration() override;
  Status stop_hydration() override;
  Status hydrate_all(const std::function<void(uint64_t, uint64_t)>& progress = {},
                     const std::atomic<bool>* stop = nullptr) override;
  // Commits the metadata now, running the loop until done.
  Status commit_sync();

  static constexpr uint64_t meta_bytes(uint64_t regions, uint32_t block) {
    return (kHeader + (regions + 7) / 8 + block - 1) / block * block;
  }

 private:
  enum class State : uint8_t { clean, hydrating, hydrated };
  static constexpr uint64_t kHeader = 64;

  CloneDevice(EventLoop& loop, std::string name, Device& source, Device& dest, uint64_t length,
              const CloneOptions& o);
  Status load_metadata();
  uint64_t region_len(uint64_t r) const { return std::min(opt_.region, length_ - r * opt_.region); }
  void hydrate(uint64_t r, CopyService::Priority p, std::function<void(Status)> then);
  void on_hydrated(uint64_t r, const CopyResult& res);
  void settle(uint64_t r, const Status& st);
  void queue_copy(uint64_t r, CopyService::Priority p);
  void pump_background();
  void commit(Completion done);
  void write_piece(const Request& piece, Completion done);

  Device& source_;
  Device& dest_;
  uint64_t length_;
  CloneOptions opt_;
  std::vector<State> state_;
  std::vector<uint8_t> durable_;  // the bitmap as last committed
  bool meta_on_disk_ = false;     // DEST holds this clone's metadata (found at open, or committed)
  std::map<uint64_t, std::vector<std::function<void(Status)>>> waiters_;
  CopyService service_;
  std::set<uint64_t> in_service_;  // regions whose copy job the service holds
  bool background_ = false;
  uint64_t next_region_ = 0;  // the background copier's cursor
  unsigned queued_background_ = 0;
  uint64_t copied_ = 0, offloaded_ = 0, emulated_ = 0;
  std::string error_;

  uint64_t meta_offset_;
  AlignedBuffer meta_;
  bool commit_running_ = false, commit_again_ = false;
  std::vector<Completion> commit_waiters_;
};

}  // namespace blkcopy
