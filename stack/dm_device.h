// dm: a device stacked on others like device-mapper, from a table file (stack/table.h).
//
// Targets: linear DEV OFFSET; striped N CHUNK DEV1 OFF1 ... DEVn OFFn; error; zero;
// flakey DEV OFFSET RULE... (RULE: fail=OP:N[:ERROR][:every] or delay=OP:N:TIME[:every]);
// clone SOURCE DEST REGION [hydrate] [inflight=N] [rate=BYTES] (stack/clone.h).
// Children are device strings, so stacks nest; relative paths are relative to the table file.
//
// Every request is split at target and stripe boundaries and routed to the children. A copy's
// legs are translated one by one: the parts whose source and destination land in one child's
// copy domain go down as copies (grouped within that child's limits); the rest are reported
// back as not supported (CopyReport) and the engine emulates only those.
#pragma once

#include <blkcopy/device.h>

#include <functional>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/fault.h"
#include "core/deadline_queue.h"
#include "stack/clone.h"
#include "stack/table.h"

namespace blkcopy {

enum class TargetKind { linear, striped, error, zero, flakey, clone };

struct Target {
  TargetKind kind = TargetKind::error;
  uint64_t start = 0, length = 0;  // bytes of the stacked device
  std::vector<CopySegment> legs;   // linear, flakey, clone: one; striped: one per stripe
  uint64_t chunk = 0;              // striped: bytes per chunk
  std::vector<FaultRule> faults;   // flakey
  mutable FaultCounter counter;    // flakey
  int line = 0;                    // in the table file
  std::string describe() const;
};

// Where a stretch of the stacked device lies: on a child, or on an error or zero target.
struct Mapped {
  const Target* target;
  Device* dev;      // nullptr for error and zero targets
  uint64_t offset;  // on dev
  uint64_t length;  // never crosses a target or stripe boundary
};

// How a stack opens the devices its table names: the device-string registry, which sits above
// the stack, hands itself down (the stack never includes it).
using ChildOpener = std::function<Result<std::unique_ptr<Device>>(EventLoop&, std::string_view spec,
                                                                  bool read_only)>;

struct DmConfig {
  std::string path;  // the table file
  bool read_only = false;
  ChildOpener open_child;  // set by the registry
};
// Parses "TABLEFILE" (the part after "dm:").
Result<DmConfig> parse_dm_config(std::string_view spec);

class DmDevice final : public Device {
 public:
  static Result<std::unique_ptr<DmDevice>> create(EventLoop& loop, std::string name,
                                                  const DmConfig& cfg) {
    return open(loop, std::move(name), cfg.path, cfg.read_only, cfg.open_child);
  }
  // Opens the table file and every child it names.
  static Result<std::unique_ptr<DmDevice>> open(EventLoop& loop, std::string name,
                                                const std::string& table_path, bool read_only,
                                                ChildOpener open_child);

  void submit(const Request& req, Completion done) override;
  bool supports(Op op) const override;
  Result<std::unique_ptr<Device>> channel(EventLoop& loop) override;
  bool same_copy_domain(const Device& other) const override { return same_storage(other); }
  bool same_storage(const Device& other) const override;
  DeviceInfo describe() const override;
  Status lock_storage() override;  // claims every child written through it

  // The first stretch of [offset, offset + max_len). REQUIRES: offset < capacity.
  Mapped map(uint64_t offset, uint64_t max_len) const;
  const std::vector<Target>& targets() const { return targets_; }
  // The clone targets' devices, in table order.
  std::vector<CloneDevice*> clones() const;

 private:
  struct Join;
  DmDevice(EventLoop& loop, std::string name) : Device(loop, std::move(name)), delays_(loop) {}
  Status build(const std::vector<TableEntry>& entries, const std::string& table_dir,
               bool read_only);
  Result<Device*> child(const std::string& spec, const std::string& table_dir, bool read_only);
  void derive_limits();
  void route_io(const Request& req, Join* j);
  void route_copy(const Request& req, Join* j);
  void send(const Target* t, Device* dev, const Request& child_req, Join* j,
            std::function<void(Status)> on_done);

  std::string table_path_;
  std::vector<TableEntry> entries_;  // the table as parsed: channels build from it
  std::string table_dir_;
  bool read_only_ = false;
  std::shared_ptr<const int> identity_ = std::make_shared<const int>(0);  // shared by channels
  std::map<std::string, std::unique_ptr<Device>> children_;  // by device string: one each
  ChildOpener open_child_;
  std::vector<Target> targets_;
  std::vector<std::unique_ptr<CloneDevice>> clones_;  // after children_: destroyed first
  DeadlineQueue delays_;  // flakey delay rules: requests held back, dropped with the stack
};

}  // namespace blkcopy
