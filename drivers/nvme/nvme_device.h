// nvme: a local NVMe namespace through the kernel's generic character device /dev/ngXnY and
// io_uring passthrough (IORING_OP_URING_CMD, Linux 5.19+). Reads, writes, flush, write zeroes,
// deallocate and Copy all go to the controller as NVMe commands, asynchronously at full queue
// depth; Copy with range format 0 inside a namespace, and format 2 between namespaces of one
// controller where it offers it. Identify and Set Features go through the admin ioctl.
//
// Device strings: /dev/nvmeXnY or /dev/ngXnY (recognised), or nvme:PATH[,ro][,timeout=MS].
#pragma once

#include <blkcopy/device.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "block/path_config.h"
#include "nvme/namespace.h"

namespace blkcopy {

using NvmeLocalConfig = PathConfig;  // timeout_ms per command; the kernel aborts and resets past it

// Parses "PATH[,ro][,timeout=MS]" (the part after "nvme:"); the timeout defaults to 30 s.
Result<NvmeLocalConfig> parse_nvme_local_config(std::string_view spec);

// The nodes behind a namespace path /dev/nvmeXnY or /dev/ngXnY; nullopt for anything else
// (partitions included).
struct NvmeNodes {
  std::string block;       // /dev/nvmeXnY
  std::string generic;     // /dev/ngXnY
  std::string controller;  // /dev/nvmeX
};
std::optional<NvmeNodes> nvme_nodes(std::string_view path);

class NvmeLocalDevice final : public Device {
 public:
  // EOPNOTSUPP when this kernel's io_uring cannot pass commands through (the registry then
  // opens the block device as a file, copies emulated).
  static Result<std::unique_ptr<NvmeLocalDevice>> open(EventLoop& loop, std::string name,
                                                       const NvmeLocalConfig& config);
  ~NvmeLocalDevice() override;

  void submit(const Request& req, Completion done) override;
  bool supports(Op op) const override;
  // The same namespace through a duplicated descriptor, submitting on `loop`.
  Result<std::unique_ptr<Device>> channel(EventLoop& loop) override;
  bool same_copy_domain(const Device& other) const override;
  bool same_storage(const Device& other) const override;
  DeviceInfo describe() const override;
  Status lock_storage() override;  // flock on the descriptor

  struct Counters {
    uint64_t commands = 0, copies = 0, retries = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  struct Controller;
  struct Command;
  NvmeLocalDevice(EventLoop& loop, std::string name) : Device(loop, std::move(name)) {}
  void issue(std::shared_ptr<Command> c);
  void copy(const Request& req, Completion done);

  std::shared_ptr<Controller> ctrl_;
  NvmeNodes nodes_;
  int fd_ = -1;  // the generic device
  uint32_t nsid_ = 0;
  uint32_t timeout_ms_ = 30000;
  unsigned inflight_ = 0;
  nvme::NamespaceGeometry geo_;
  Counters counters_;
};

}  // namespace blkcopy
