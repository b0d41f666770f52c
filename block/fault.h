// Fault injection rules, shared by the mem driver and the flakey stacking target:
// "fail=OP:N[:ERROR][:every]" fails the Nth request of a type (or every Nth) with an errno;
// "delay=OP:N:TIME[:every]" holds it back for TIME first. OP is a request type or "any".
#pragma once

#include <blkcopy/device.h>

#include <array>
#include <string>
#include <string_view>

namespace blkcopy {

struct FaultRule {
  bool any_op = false;  // count requests of every type
  Op op = Op::read;
  uint64_t nth = 0;  // 1-based; 0 = never fires
  bool every = false;
  int error = EIO;        // fail rules
  uint64_t delay_ns = 0;  // delay rules (then error is unused)

  std::string describe() const;
};

// Parses the text after "fail=" (delay = false) or "delay=" (delay = true).
Result<FaultRule> parse_fault_rule(std::string_view text, bool delay);
Result<uint64_t> parse_duration_ns(std::string_view text);

// Counts requests per type; says whether a rule fires for the request counted last.
class FaultCounter {
 public:
  void note(Op op) {
    ++counts_[static_cast<size_t>(op)];
    ++any_;
  }
  // After note(op): does `rule` fire for that request?
  bool fires(Op op, const FaultRule& rule) const;
  uint64_t seen(Op op) const { return counts_[static_cast<size_t>(op)]; }

 private:
  std::array<uint64_t, std::size(kAllOps)> counts_{};
  uint64_t any_ = 0;
};

}  // namespace blkcopy
