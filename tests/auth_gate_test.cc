// The target's authentication gate (issue 19, items 5 and 6): back-off that doubles per host
// and address, a bound on handshakes in progress, a bounded table, rate-limited refusal lines.
#include "nvme/target/auth_gate.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace blkcopy::nvme {
namespace {

using namespace std::chrono_literals;

TEST(AuthGate, FailuresBeyondAConnectionsTriesBackOffDoublingAndASuccessForgets) {
  AuthGate g;
  auto fail = [&] {
    auto d = g.begin("h", "10.0.0.1", AuthGate::Clock::now());
    ASSERT_TRUE(d.ticket) << d.why;
    d.ticket->failed();
  };
  for (unsigned i = 0; i < AuthGate::kFreeFailures; ++i) fail();
  fail();  // three were free: the fourth may begin; it fails too: 1 s
  auto now = AuthGate::Clock::now();
  auto d = g.begin("h", "10.0.0.1", now);
  ASSERT_FALSE(d.ticket);
  EXPECT_NE(d.why.find("4 failed DH-HMAC-CHAP transactions from 10.0.0.1: backing off, try "
                       "again in 1 s"),
            std::string::npos)
      << d.why;
  EXPECT_TRUE(g.begin("h", "10.0.0.2", now).ticket) << "another address is not held back";
  EXPECT_TRUE(g.begin("other-host", "10.0.0.1", now).ticket) << "nor another host";
  auto later = g.begin("h", "10.0.0.1", now + 1100ms);
  ASSERT_TRUE(later.ticket);
  later.ticket->failed();  // the fifth: 2 s
  now = AuthGate::Clock::now();
  EXPECT_FALSE(g.begin("h", "10.0.0.1", now + 1500ms).ticket);
  auto ok = g.begin("h", "10.0.0.1", now + 2100ms);
  ASSERT_TRUE(ok.ticket);
  ok.ticket->succeeded();
  for (unsigned i = 0; i < AuthGate::kFreeFailures; ++i) fail();
  EXPECT_TRUE(g.begin("h", "10.0.0.1", AuthGate::Clock::now()).ticket) << "a success forgets";
}

// Each Negotiate costs a DH key pair: one dropped (its connection closed) or restarted without
// success is a failure, so Negotiate-and-hang-up does not dodge the back-off.
TEST(AuthGate, AHandshakeDroppedOrRestartedWithoutSuccessIsAFailure) {
  AuthGate g;
  for (unsigned i = 0; i < 3; ++i) {
    auto d = g.begin("h", "10.0.0.1", AuthGate::Clock::now());
    ASSERT_TRUE(d.ticket) << i;
    if (i == 1) *d.ticket = std::move(*g.begin("h", "10.0.0.1", AuthGate::Clock::now()).ticket);
  }  // failures: 1 (dropped), 2 (restarted, then dropped), 1 (dropped): four
  EXPECT_FALSE(g.begin("h", "10.0.0.1", AuthGate::Clock::now()).ticket);
}

TEST(AuthGate, HandshakesInProgressAreBoundedAndEndWhenDropped) {
  AuthGate g;
  const auto now = AuthGate::Clock::now();
  std::vector<AuthGate::Ticket> held;
  for (unsigned i = 0; i < AuthGate::kMaxInProgress; ++i) {
    auto d = g.begin("h", "10.0.0.1", now);
    ASSERT_TRUE(d.ticket) << i;
    held.push_back(std::move(*d.ticket));
  }
  // Refusals in a row log on the 1st, 2nd, 4th, 8th...: a flood makes a few lines.
  std::vector<bool> logged;
  for (int i = 0; i < 8; ++i) {
    auto d = g.begin("h", "10.0.0.1", now);
    ASSERT_FALSE(d.ticket);
    EXPECT_NE(d.why.find("64 DH-HMAC-CHAP handshakes already in progress"), std::string::npos);
    logged.push_back(d.log);
  }
  EXPECT_EQ(logged, (std::vector<bool>{true, true, false, true, false, false, false, true}));
  held.pop_back();  // a connection closed mid-handshake: its place is free
  EXPECT_TRUE(g.begin("h", "10.0.0.1", now).ticket);
}

TEST(AuthGate, TheTableIsBoundedAndFullOnlyOfHandshakesInProgress) {
  AuthGate g;
  const auto now = AuthGate::Clock::now();
  std::vector<AuthGate::Ticket> held;
  for (size_t i = 0; i < AuthGate::kMaxKeys; ++i) {
    auto d = g.begin("h", "10.1." + std::to_string(i), now);
    ASSERT_TRUE(d.ticket);
    held.push_back(std::move(*d.ticket));
  }
  auto full = g.begin("h", "10.2.0.1", now);
  ASSERT_FALSE(full.ticket);
  EXPECT_NE(full.why.find("too many DH-HMAC-CHAP handshakes in progress"), std::string::npos);
  held[0].failed();  // no longer in progress: its entry may be given up for a newcomer
  EXPECT_TRUE(g.begin("h", "10.2.0.1", now).ticket);
}

}  // namespace
}  // namespace blkcopy::nvme
