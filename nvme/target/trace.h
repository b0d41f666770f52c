// The command trace (`serve --trace FILE`, `ctl trace on|off`): one JSON line per command as it
// completes, what a developer testing a host's copy offload needs to see:
//
//   {"time":"2026-12-06T22:10:00.123456Z","host":"nqn...","cntlid":1,"qid":1,"opcode":"copy",
//    "nsid":1,"sdlba":2048,"ranges":[{"snsid":0,"slba":0,"blocks":8}],"status":"0x0000",
//    "offloaded_bytes":4096,"emulated_bytes":0,"latency_us":35}
//
// "blocks" counts blocks (NVMe's NLB plus one); "snsid" is 0 in a format-0 Copy (the
// command's own namespace). read and write carry "slba" and "blocks"; a command that failed carries its status (the CQE's
// status field: SCT, SC, DNR) and, for a Copy, how much was offloaded or emulated before it
// stopped. Off, it costs one relaxed atomic load per command. On, each line is written under one
// lock, a write per line (so that `tail -f` sees each command as it ends; the loops wait for
// it: a trace is for looking, not for load), appended to a file of mode 0600 (NQNs are in it)
// that is the operator's to rotate or remove.
#pragma once

#include <blkcopy/status.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace blkcopy::nvme {

class TargetQueue;
struct TargetRequest;

class CommandTrace {
 public:
  ~CommandTrace() { stop(); }
  // Starts tracing into `path` (appended), or moves to it.
  Status start(const std::string& path);
  void stop();  // flushes and closes
  bool on() const { return on_.load(std::memory_order_relaxed); }
  std::string path() const;  // the file it writes, or last wrote; "" before the first
  // The line for a command that ends with `status` (from any loop).
  void record(const TargetQueue& q, const TargetRequest& r, uint16_t status);

 private:
  std::atomic<bool> on_{false};
  mutable std::mutex mu_;
  FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace blkcopy::nvme
