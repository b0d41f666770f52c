// What the metrics endpoint reports (metrics.cc), counted as commands complete, from any loop:
// per namespace and kind of command the commands, bytes, errors and a latency histogram; the
// Copies a namespace received, offloaded or emulated; admin commands and error statuses for
// the whole target.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>

namespace blkcopy::nvme {

enum class OpKind : uint8_t { read, write, copy, flush, write_zeroes, discard, admin };
inline constexpr size_t kIoKinds = 6;  // all but admin
const char* op_kind_name(OpKind k);

struct LatencyHistogram {
  // Upper bounds of the buckets, microseconds; the last bucket is everything above.
  static constexpr std::array<uint64_t, 15> kUpperUs = {10,    25,    50,     100,    250,
                                                        500,   1000,  2500,   5000,   10000,
                                                        25000, 50000, 100000, 250000, 1000000};
  std::array<std::atomic<uint64_t>, kUpperUs.size() + 1> buckets{};
  std::atomic<uint64_t> sum_us{0};
  void add(uint64_t us);
};

struct OpCounters {
  std::atomic<uint64_t> commands{0}, bytes{0}, errors{0};
  LatencyHistogram latency;
};

struct NamespaceCounters {
  std::array<OpCounters, kIoKinds> ops;
  std::atomic<uint64_t> copy_offloaded_bytes{0}, copy_emulated_bytes{0};
};

// The target's own: admin commands, errors by status, DH-HMAC-CHAP failures.
class TargetCounters {
 public:
  OpCounters admin;
  std::atomic<uint64_t> auth_failures{0};
  void error(uint16_t status);
  std::map<uint16_t, uint64_t> errors() const;

 private:
  mutable std::mutex mu_;  // errors are few: a lock is fine
  std::map<uint16_t, uint64_t> errors_;
};

}  // namespace blkcopy::nvme
