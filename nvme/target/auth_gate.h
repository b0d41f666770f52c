// Who may begin a DH-HMAC-CHAP handshake now: a host that keeps failing from one address backs
// off (its Negotiates are refused, at no DH cost, for a time that doubles with each failure),
// and one host and address has at most a bounded number of handshakes in progress. Keyed by
// host NQN *and* peer address: keyed by NQN alone, anyone who knows a host's NQN could lock the
// real host out. Shared by every loop of a target (one lock; handshakes are rare).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace blkcopy::nvme {

class AuthGate {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr unsigned kFreeFailures = 3;   // a connection's tries pass without back-off
  static constexpr unsigned kMaxInProgress = 64;  // per host and address (each costs a DH key)
  static constexpr size_t kMaxKeys = 4096;        // hosts and addresses remembered
  static constexpr auto kForget = std::chrono::minutes(10);  // a failure counts this long

  // A handshake in progress; ends (and frees its place) when succeeded(), failed() or dropped.
  // Dropped without success (its connection closed, a new Negotiate restarted it) it counts as
  // a failure: each began a DH key pair, so a peer cannot Negotiate, hang up and repeat.
  class Ticket {
   public:
    Ticket() {}  // user-provided: clang 16 otherwise sees no default constructor in Decision
    Ticket(Ticket&& o) noexcept { *this = std::move(o); }
    Ticket& operator=(Ticket&& o) noexcept;
    ~Ticket() { end(false, true); }
    void succeeded() { end(true, false); }
    void failed() { end(false, true); }

   private:
    friend class AuthGate;
    void end(bool success, bool failure);
    AuthGate* gate_ = nullptr;
    std::pair<std::string, std::string> key_;
  };

  struct Decision {
    std::optional<Ticket> ticket;  // empty: refused, for `why`
    std::string why;
    bool log = false;  // a refusal worth a log line (the 1st, 2nd, 4th, 8th... of a run)
  };
  Decision begin(const std::string& host, const std::string& address, Clock::time_point now);

 private:
  struct Entry {
    unsigned failures = 0, in_progress = 0, refused = 0;
    Clock::time_point until{}, last{};
  };
  void end(const std::pair<std::string, std::string>& key, bool success, bool failure);
  bool make_room(Clock::time_point now);  // under mu_

  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
};

}  // namespace blkcopy::nvme
