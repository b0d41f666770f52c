// scsi: a SCSI logical unit (a SAN LUN, LIO, a disk) whose copy manager runs EXTENDED COPY
// (LID1). Copies go to the LUN as EXTENDED COPY through SG_IO with identification (E4h) CSCD
// descriptors naming the LUNs by their NAA designators and block-to-block (02h) segments; two
// LUNs of one copy manager are one copy domain, and the copy manager decides what it can reach
// (a refusal makes the engine emulate). Reads, writes, flush, write zeroes and discard go
// through io_uring on the block device (the kernel's sd driver turns them into READ/WRITE(16),
// SYNCHRONIZE CACHE, WRITE SAME and UNMAP).
//
// Device strings: /dev/sdX or /dev/sgN (recognised), or scsi:PATH[,ro][,timeout=MS].
#pragma once

#include <blkcopy/device.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "block/path_config.h"
#include "drivers/file/file_device.h"
#include "drivers/scsi/scsi_proto.h"

namespace blkcopy {

using ScsiConfig = PathConfig;  // timeout_ms: the base per command; a copy adds by its length

// Parses "PATH[,ro][,timeout=MS]" (the part after "scsi:"); the timeout defaults to 60 s.
Result<ScsiConfig> parse_scsi_config(std::string_view spec);

// The nodes behind /dev/sdX (a whole disk) or /dev/sgN, from sysfs; nullopt for anything that
// is not a SCSI device here (partitions included).
struct ScsiNodes {
  std::string block;    // /dev/sdX
  std::string generic;  // /dev/sgN, "" when the sg module is not loaded
  std::string hctl;     // host:channel:target:lun
};
std::optional<ScsiNodes> scsi_nodes(std::string_view path);

class ScsiDevice final : public Device {
 public:
  // ENOSYS when the LUN does not answer SG_IO (the registry then opens the block device as a
  // file, copies emulated).
  static Result<std::unique_ptr<ScsiDevice>> open(EventLoop& loop, std::string name,
                                                  const ScsiConfig& config);
  ~ScsiDevice() override;

  void submit(const Request& req, Completion done) override;
  bool supports(Op op) const override;
  bool same_copy_domain(const Device& other) const override;
  bool same_storage(const Device& other) const override;
  DeviceInfo describe() const override;
  Status lock_storage() override;  // flock on the descriptor

  struct Counters {
    uint64_t xcopies = 0, retries = 0, refused = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  struct Xcopy;
  ScsiDevice(EventLoop& loop, std::string name) : Device(loop, std::move(name)) {}
  void copy(const Request& req, Completion done);
  void send(std::shared_ptr<Xcopy> x);

  std::unique_ptr<FileDevice> data_;  // reads, writes and the rest, on the block device
  ScsiNodes nodes_;
  int fd_ = -1;  // SG_IO goes here: the generic device if given, else the block device
  uint32_t timeout_ms_ = 60000;
  uint32_t block_size_ = 512;
  scsi::Inquiry inquiry_;
  std::optional<scsi::Designator> naa_;
  std::optional<scsi::CopyParameters> params_;
  std::optional<scsi::BlockLimits> block_limits_;
  bool rod_tokens_ = false;    // VPD 0x8F present
  std::string no_offload_;     // why copies are emulated, when they are
  uint8_t next_list_id_ = 0;
  unsigned inflight_ = 0;
  // Source LUNs (by designator) this LUN's copy manager said it cannot reach: emulated at once.
  mutable std::set<std::string> unreachable_;
  Counters counters_;
};

}  // namespace blkcopy
