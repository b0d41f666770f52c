// Clone targets of a dm stack (`dm:...clone...`): a device that reads from SOURCE until each
// region has been copied to DEST (hydrated), the copies offloaded where the devices allow.
// Programs watch and drive hydration through this interface; everything runs on the loop the
// device was opened on, from that loop's thread.
#pragma once

#include <blkcopy/device.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace blkcopy {

struct CloneStatus {
  uint64_t length = 0, region = 0, regions = 0;
  uint64_t hydrated = 0;  // regions on DEST (in memory)
  uint64_t durable = 0;   // of those, recorded in the metadata
  uint64_t copied = 0;    // regions this process copied
  uint64_t offloaded_bytes = 0, emulated_bytes = 0;
  uint64_t meta_offset = 0;  // where the metadata lives on DEST
  bool hydrating = false;
  std::string error;  // the last hydration error, if any
};

class CloneTarget {
 public:
  virtual const std::string& clone_name() const = 0;
  virtual CloneStatus status() const = 0;
  // Starts hydrating in the background (the loop runs it).
  virtual void start_hydration() = 0;
  // Stops queueing new regions and waits for the ones in flight (their progress is kept).
  virtual Status stop_hydration() = 0;
  // Hydrates every region, running the loop until done; progress(hydrated, regions). When
  // `stop` turns true, hydration stops (regions in flight finish and are committed) and the
  // answer is ECANCELED.
  virtual Status hydrate_all(const std::function<void(uint64_t, uint64_t)>& progress = {},
                             const std::atomic<bool>* stop = nullptr) = 0;

 protected:
  ~CloneTarget() = default;  // owned by the device stack
};

// The clone targets in `device` (a dm stack's, in table order); empty for any other device.
std::vector<CloneTarget*> clone_targets(Device& device);

}  // namespace blkcopy
