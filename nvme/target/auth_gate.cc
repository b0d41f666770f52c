#include "nvme/target/auth_gate.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

namespace blkcopy::nvme {

AuthGate::Ticket& AuthGate::Ticket::operator=(Ticket&& o) noexcept {
  if (this != &o) {
    end(false, true);
    gate_ = std::exchange(o.gate_, nullptr);
    key_ = std::move(o.key_);
  }
  return *this;
}

void AuthGate::Ticket::end(bool success, bool failure) {
  if (AuthGate* g = std::exchange(gate_, nullptr)) g->end(key_, success, failure);
}

AuthGate::Decision AuthGate::begin(const std::string& host, const std::string& address,
                                   Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(host, address);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (!make_room(now)) {
      return {std::nullopt, "too many DH-HMAC-CHAP handshakes in progress on this target", true};
    }
    it = entries_.emplace(key, Entry{}).first;
  }
  Entry& e = it->second;
  if (e.failures && now - e.last > kForget) e.failures = 0;
  std::string why;
  if (now < e.until) {
    const auto left = std::chrono::ceil<std::chrono::seconds>(e.until - now).count();
    why = fmt::format("{} failed DH-HMAC-CHAP transactions from {}: backing off, try again in "
                      "{} s",
                      e.failures, address, left);
  } else if (e.in_progress >= kMaxInProgress) {
    why = fmt::format("{} DH-HMAC-CHAP handshakes already in progress from {}", e.in_progress,
                      address);
  }
  if (!why.empty()) {
    ++e.refused;
    return {std::nullopt, why, std::has_single_bit(e.refused)};
  }
  e.refused = 0;
  ++e.in_progress;
  Decision d;
  d.ticket.emplace();
  d.ticket->gate_ = this;
  d.ticket->key_ = std::move(key);
  return d;
}

void AuthGate::end(const std::pair<std::string, std::string>& key, bool success, bool failure) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  e.in_progress -= e.in_progress > 0;
  const auto now = Clock::now();
  if (success) e.failures = 0;
  if (failure) {
    ++e.failures;
    e.last = now;
    if (e.failures > kFreeFailures) {  // 1 s, 2 s, 4 s ... 64 s
      e.until = now + std::chrono::seconds(1u << std::min(e.failures - kFreeFailures - 1, 6u));
    }
  }
  if (e.in_progress == 0 && e.failures == 0) entries_.erase(it);
}

bool AuthGate::make_room(Clock::time_point now) {
  if (entries_.size() < kMaxKeys) return true;
  // The oldest entry not in progress, preferring one not backing off (evicting those would let a
  // peer with many addresses wipe its own back-off).
  auto oldest = entries_.end();
  auto rank = [&](const Entry& e) { return std::make_pair(now < e.until, e.last); };
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->second.in_progress) continue;
    if (now - it->second.last > kForget && now >= it->second.until) {
      entries_.erase(it);
      return true;
    }
    if (oldest == entries_.end() || rank(it->second) < rank(oldest->second)) oldest = it;
  }
  if (oldest == entries_.end()) return false;  // every one has a handshake in progress
  entries_.erase(oldest);
  return true;
}

}  // namespace blkcopy::nvme
