// What the completion of one nvme-tcp device command needs, pooled per controller: sending a
// command takes one and its completion gives it back, so once the pool has grown to the most
// commands in flight the I/O path allocates nothing (the queue's callback holds only a pointer).
#pragma once

#include <blkcopy/device.h>

#include <memory>
#include <string>
#include <vector>

#include "nvme/copy_ranges.h"
#include "nvme/spec.h"

namespace blkcopy::nvme {

class HostIoPool;

struct HostIo {
  HostIoPool* pool = nullptr;
  Completion done;
  std::shared_ptr<const std::string> label;  // the device's name: the device may go first
  const char* op = "";
  CopyReport* report = nullptr;     // copy: where "not supported" goes
  uint64_t length = 0;              // copy: destination bytes
  std::vector<CopySource> sources;  // copy: scratch, storage kept
  std::vector<uint8_t> payload;     // the command's data (copy ranges, a DSM range), storage kept
  void (*end)(HostIo&, Status, const Cqe&) = nullptr;  // the completion, by kind of command
};

class HostIoPool {
 public:
  HostIo& take() {
    if (free_.empty()) {
      all_.push_back(std::make_unique<HostIo>());
      all_.back()->pool = this;
      free_.reserve(all_.size());
      return *all_.back();
    }
    HostIo* io = free_.back();
    free_.pop_back();
    return *io;
  }
  void put(HostIo& io) {
    io.done = nullptr;
    io.label.reset();
    io.report = nullptr;
    free_.push_back(&io);
  }

 private:
  std::vector<std::unique_ptr<HostIo>> all_;
  std::vector<HostIo*> free_;
};

}  // namespace blkcopy::nvme
