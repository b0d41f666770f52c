#include "block/fault.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <vector>

namespace blkcopy {

Result<uint64_t> parse_duration_ns(std::string_view text) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  std::string_view unit(end, text.data() + text.size() - end);
  if (ec != std::errc() || end == text.data()) unit = "?";
  if (unit == "ns") return v;
  if (unit == "us") return v * 1000;
  if (unit == "ms" || unit.empty()) return v * 1'000'000;
  if (unit == "s") return v * 1'000'000'000;
  return fail(EINVAL, fmt::format("invalid latency '{}': expected a number with ns, us, ms or s",
                                  text));
}

namespace {

Result<int> parse_errno(std::string_view text) {
  static constexpr std::pair<std::string_view, int> kNames[] = {
      {"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EINVAL", EINVAL}, {"ENOMEM", ENOMEM},
      {"ETIMEDOUT", ETIMEDOUT}, {"EOPNOTSUPP", EOPNOTSUPP}, {"EILSEQ", EILSEQ}};
  for (auto [name, code] : kNames) {
    if (text == name) return code;
  }
  int code = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), code);
  if (ec != std::errc() || end != text.data() + text.size() || code <= 0) {
    return fail(EINVAL, fmt::format("invalid error code '{}': expected EIO, ENOSPC, ... or a "
                                    "positive errno",
                                    text));
  }
  return code;
}

// fail=OP:N[:ERROR][:every]
}  // namespace

Result<FaultRule> parse_fault_rule(std::string_view text, bool delay) {
  FaultRule f;
  std::vector<std::string_view> parts;
  for (size_t at = 0; at <= text.size();) {
    size_t colon = std::min(text.find(':', at), text.size());
    parts.push_back(text.substr(at, colon - at));
    at = colon + 1;
  }
  const char* form = delay ? "OP:N:TIME[:every]" : "OP:N[:ERROR][:every]";
  if (parts.size() < (delay ? 3u : 2u) || parts.size() > 4) {
    return fail(EINVAL, fmt::format("invalid fault '{}': expected {}", text, form));
  }
  if (parts[0] == "any") {
    f.any_op = true;
  } else {
    auto it = std::find_if(std::begin(kAllOps), std::end(kAllOps),
                           [&](Op op) { return parts[0] == op_name(op); });
    if (it == std::end(kAllOps)) {
      return fail(EINVAL, fmt::format("invalid fault '{}': unknown request type '{}' (read, "
                                      "write, flush, write_zeroes, discard, copy, any)",
                                      text, parts[0]));
    }
    f.op = *it;
  }
  auto [end, ec] = std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), f.nth);
  if (ec != std::errc() || end != parts[1].data() + parts[1].size() || f.nth == 0) {
    return fail(EINVAL, fmt::format("invalid fault '{}': N must be a positive count", text));
  }
  for (size_t i = 2; i < parts.size(); ++i) {
    if (parts[i] == "every") {
      f.every = true;
      continue;
    }
    if (delay) {
      auto ns = parse_duration_ns(parts[i]);
      if (!ns) return std::unexpected(ns.error());
      f.delay_ns = *ns;
      continue;
    }
    auto code = parse_errno(parts[i]);
    if (!code) return std::unexpected(code.error());
    f.error = *code;
  }
  return f;
}


std::string FaultRule::describe() const {
  const std::string what = fmt::format("{} #{}{}", any_op ? "any" : op_name(op), nth,
                                       every ? " (and every one after that many)" : "");
  if (delay_ns) return fmt::format("{} is delayed by {} us", what, delay_ns / 1000);
  return fmt::format("{} fails with errno {}", what, error);
}

bool FaultCounter::fires(Op op, const FaultRule& rule) const {
  if (rule.nth == 0 || (!rule.any_op && rule.op != op)) return false;
  const uint64_t c = rule.any_op ? any_ : seen(op);
  return rule.every ? c % rule.nth == 0 : c == rule.nth;
}

}  // namespace blkcopy
