// DH-HMAC-CHAP against hostile peers (issue 19): a target that talks the host down to the null
// group, squatters holding queue and controller IDs or keeping a controller alive, guessers and
// restarters, a failed re-authentication, and IDs running out while a host authenticates.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include <blkcopy/open.h>
#include "tests/auth_target.h"
#include "tests/scripted_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;
using namespace test::auth_peer;

void answer(int fd, uint16_t cid, uint32_t dw0) {
  CapsuleResp r{};
  r.hdr = {pdu::kCapsuleResp, 0, 24, 0, 24};
  r.cqe.cid = cid;
  r.cqe.dw0 = dw0;
  test::ScriptedTarget::send(fd, &r, sizeof r);
}

// A controller that asks to authenticate and then challenges with the null DH group whatever
// the host offered (as one copying the real target's challenge would): Connect (authentication
// required), Negotiate, then a null-group Challenge.
void null_group_challenge(int fd, const Sqe& connect, std::atomic<bool>& challenged) {
  using test::ScriptedTarget;
  answer(fd, connect.cid, 1 | (1u << 17));  // CNTLID 1, authentication required
  auto negotiate = ScriptedTarget::capsule(fd);
  if (!negotiate) return;
  answer(fd, negotiate->cid, 0);
  auto receive = ScriptedTarget::capsule(fd);
  if (!receive) return;
  const auto m = auth::encode_challenge({1, auth::Hash::sha256, auth::kDhNull, 7,
                                         auth::Bytes(32, 0x42), {}});
  DataPdu d{};
  d.hdr = {pdu::kC2HData, pdu::kFlagLast, 24, 24, static_cast<uint32_t>(24 + m.size())};
  d.cccid = receive->cid;
  d.datal = static_cast<uint32_t>(m.size());
  std::vector<uint8_t> out(sizeof d + m.size());
  std::memcpy(out.data(), &d, sizeof d);
  std::memcpy(out.data() + sizeof d, m.data(), m.size());
  ScriptedTarget::send(fd, out.data(), out.size());
  answer(fd, receive->cid, 0);
  challenged = true;
}

// A host that requires key agreement (dhchap_dhgroup without null) refuses a null-group
// challenge: its answer could otherwise be relayed to log an attacker in as this host.
TEST(DhchapOverLoopback2, AHostThatRequiresADhGroupRefusesTheNullGroup) {
  std::atomic<bool> challenged{false};
  test::ScriptedTarget t([&](int fd, const Sqe& connect) { null_group_challenge(fd, connect, challenged); });
  auto loop = test::make_loop();
  auto bad = open_device(*loop, fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}"
                                            "&dhchap_secret={}&dhchap_dhgroup=ffdhe2048,ffdhe3072",
                                            t.port(), kSub, kHost, kKey));
  ASSERT_FALSE(bad);
  t.join();
  EXPECT_TRUE(challenged) << bad.error().message();
  EXPECT_EQ(bad.error().code(), EACCES) << bad.error().message();
  EXPECT_NE(bad.error().message().find("chose DH group null, which dhchap_dhgroup does not accept"),
            std::string::npos)
      << bad.error().message();
  auto typo = open_device(*loop, fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&dhchap_dhgroup=ffdhe999",
                                             t.port(), kSub));
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().message().find("dhchap_dhgroup"), std::string::npos) << typo.error().message();
}

// With the group it requires, against blkcopy's own target, the host gets in.
TEST(DhchapOverLoopback2, ARequiredGroupTheTargetUsesConnects) {
  AuthTarget t("hmac(sha256)", "ffdhe2048");
  auto loop = test::make_loop();
  auto d = open_device(*loop, t.spec("&dhchap_secret=" + kKey + "&dhchap_dhgroup=ffdhe2048"));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(test::read_bytes(**d, 0, 4096), test::pattern(0, 4096, 31));
}

// A peer guessing responses gets three tries per connection, not a thousand a second; a host
// that fails to re-authenticate loses its controller instead of staying authenticated.
TEST(DhchapOverLoopback2, GuessesEndTheConnectionAndAFailedReauthenticationTheController) {
  AuthTarget t("hmac(sha256)", "null");
  test::NvmeClient guesser;
  ASSERT_TRUE(guesser.open(t.port()));
  ASSERT_EQ(guesser.connect(0, kSub, kHost).status, 0);
  int tries = 0;
  while (tries < 10 && transaction(guesser, static_cast<uint16_t>(tries + 1), false)) ++tries;
  EXPECT_EQ(tries, 2) << "the third failed transaction ends the connection";
  EXPECT_TRUE(guesser.closed_by_peer());

  test::NvmeClient admin, io;
  ASSERT_TRUE(admin.open(t.port()));
  auto c = admin.connect(0, kSub, kHost);
  ASSERT_EQ(c.status, 0);
  ASSERT_TRUE(transaction(admin, 1, true));
  std::vector<uint8_t> id;
  ASSERT_EQ(admin.identify(kCnsController, 0, id).status, 0) << "authenticated";
  transaction(admin, 2, false);  // re-authentication, failed
  EXPECT_TRUE(admin.closed_by_peer());
  ASSERT_TRUE(io.open(t.port()));
  EXPECT_NE(io.connect(1, kSub, kHost, static_cast<uint16_t>(c.dw0 & 0xFFFF)).status, 0)
      << "the controller outlived a failed re-authentication";
}

// A peer without the key, knowing only the host's NQN (and guessing its controller ID), takes
// nothing the host needs: not its I/O queue IDs, not its controller IDs.
TEST(DhchapOverLoopback2, AnUnauthenticatedPeerCannotSquatQueueOrControllerIds) {
  AuthTarget t("hmac(sha256)", "null", kKey384, 2);  // controller IDs 1 and 2 only
  test::NvmeClient admin, squatter, io;
  ASSERT_TRUE(admin.open(t.port()));
  auto c = admin.connect(0, kSub, kHost);
  ASSERT_EQ(c.status, 0);
  ASSERT_TRUE(transaction(admin, 1, true));
  const auto cntlid = static_cast<uint16_t>(c.dw0 & 0xFFFF);
  ASSERT_TRUE(squatter.open(t.port()));
  ASSERT_EQ(squatter.connect(1, kSub, kHost, cntlid).status, 0);  // unauthenticated, waiting
  ASSERT_TRUE(io.open(t.port()));
  ASSERT_EQ(io.connect(1, kSub, kHost, cntlid).status, 0) << "the squatter held I/O queue 1";
  ASSERT_TRUE(transaction(io, 1, true));
  std::vector<uint8_t> got;
  ASSERT_EQ(io.read(1, 0, 8, 512, got).status, 0);
  EXPECT_EQ(got, [] {
    auto b = test::pattern(0, 4096, 31);
    return std::vector<uint8_t>(reinterpret_cast<uint8_t*>(b.data()),
                                reinterpret_cast<uint8_t*>(b.data()) + b.size());
  }());
  // The squatter authenticating later still cannot have queue 1.
  EXPECT_FALSE(transaction(squatter, 1, true) && squatter.read(1, 0, 8, 512, got).status == 0);

  // Controller IDs: two unauthenticated admin queues hold both; a host with the key still gets
  // one (the oldest unproven controller gives its ID up and is closed).
  admin.close();
  io.close();
  squatter.close();
  test::NvmeClient hold1, hold2, real;
  ASSERT_TRUE(hold1.open(t.port()));
  ASSERT_TRUE(hold2.open(t.port()));
  // The closed controller's ID comes free once the target has seen the close: wait for it.
  uint16_t s1 = 0xFFFF, s2 = 0xFFFF;
  for (int i = 0; i < 200 && s1 != 0; ++i) {
    s1 = hold1.connect(0, kSub, kHost).status;
    if (s1 != 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(s1, 0);
  s2 = hold2.connect(0, kSub, kHost).status;
  ASSERT_EQ(s2, 0);
  ASSERT_TRUE(real.open(t.port()));
  ASSERT_EQ(real.connect(0, kSub, kHost).status, 0) << "unauthenticated peers held every ID";
  ASSERT_TRUE(transaction(real, 1, true));
  EXPECT_TRUE(hold1.closed_by_peer(10000)) << "the oldest unproven controller was not closed";
}

// A squatter's unauthenticated capsules do not keep a silent host's controller alive past its
// keep-alive timeout: the target ends it (and the squatter's queue with it).
TEST(DhchapOverLoopback2, UnauthenticatedCapsulesDoNotKeepAControllerAlive) {
  AuthTarget t("hmac(sha256)", "null");
  test::NvmeClient admin, squatter;
  ASSERT_TRUE(admin.open(t.port()));
  auto c = admin.connect(0, kSub, kHost, 0xFFFF, 500);  // KATO 500 ms
  ASSERT_EQ(c.status, 0);
  ASSERT_TRUE(transaction(admin, 1, true));
  ASSERT_TRUE(squatter.open(t.port()));
  ASSERT_EQ(squatter.connect(1, kSub, kHost, static_cast<uint16_t>(c.dw0 & 0xFFFF)).status, 0);
  // The host falls silent; the squatter keeps sending reads (refused: not authenticated) until
  // the target closes the controller's admin queue, for up to 20 s (KATO is 0.5 s).
  std::atomic<bool> stop{false};
  std::thread pump([&] {
    std::vector<uint8_t> got;
    while (!stop && squatter.read(1, 0, 8, 512, got).status == status::kAuthRequired) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const bool closed = admin.closed_by_peer(20000);
  stop = true;
  pump.join();
  EXPECT_TRUE(closed) << "the squatter kept the controller alive past its keep-alive timeout";
}

// Each Negotiate costs the target a DH key pair: restarting is a try too, and the fourth
// handshake begun on a connection without success ends it.
TEST(DhchapOverLoopback2, RestartingHandshakesEndsTheConnectionAfterThree) {
  AuthTarget t("hmac(sha256)", "ffdhe2048");
  test::NvmeClient peer;
  ASSERT_TRUE(peer.open(t.port()));
  ASSERT_EQ(peer.connect(0, kSub, kHost).status, 0);
  int begun = 0;
  for (uint16_t tid = 1; tid <= 10 && !negotiate(peer, tid, {1}).empty(); ++tid) ++begun;
  EXPECT_EQ(begun, 3);
  EXPECT_TRUE(peer.closed_by_peer());
}

// When every controller ID is live, an unproven controller that has begun to authenticate keeps
// its ID: Connects that only name the host's NQN cannot push a host out mid-handshake.
TEST(DhchapOverLoopback2, AHostAuthenticatingKeepsItsControllerIdWhenIdsRunOut) {
  AuthTarget t("hmac(sha256)", "null", kKey384, 2);  // controller IDs 1 and 2 only
  test::NvmeClient host, squat1, squat2;
  ASSERT_TRUE(host.open(t.port()));
  ASSERT_EQ(host.connect(0, kSub, kHost).status, 0);
  auto ch = auth::decode_challenge(negotiate(host, 1, {auth::kDhNull}));
  ASSERT_TRUE(ch);
  ASSERT_TRUE(squat1.open(t.port()));
  ASSERT_EQ(squat1.connect(0, kSub, kHost).status, 0);  // the last free ID
  ASSERT_TRUE(squat2.open(t.port()));
  EXPECT_EQ(squat2.connect(0, kSub, kHost).status, 0) << "squat1 (not authenticating) gives way";
  EXPECT_TRUE(squat1.closed_by_peer(10000));
  // The host finishes its handshake and is served.
  const auto reply = right_reply(*ch);
  std::vector<uint8_t> msg;
  ASSERT_EQ(host.command(auth_command(fabrics::kAuthSend, reply.size()), reply).status, 0);
  ASSERT_EQ(host.command(auth_command(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status, 0);
  std::vector<uint8_t> id;
  EXPECT_EQ(host.identify(kCnsController, 0, id).status, 0) << "the host lost its controller";
}

// A host that keeps failing from one address backs off: its Negotiates are refused at once (no
// DH work) for a time that doubles; the same NQN from another address is not locked out.
TEST(DhchapOverLoopback2, AHostThatKeepsFailingBacksOffAtItsAddressOnly) {
  AuthTarget t("hmac(sha256)", "ffdhe2048");
  const std::vector<uint8_t> groups{auth::kDhNull, 1};  // the target wants ffdhe2048 (1)
  auto fail_once = [&](test::NvmeClient& c, uint16_t tid) {
    auto ch = auth::decode_challenge(negotiate(c, tid, groups));
    if (!ch) return false;
    const auto reply = auth::encode_reply({tid, 0, false, auth::Bytes(32, 0x55), {},
                                           auth::Bytes(256, 2)}, 32);
    std::vector<uint8_t> msg;
    return c.command(auth_command(fabrics::kAuthSend, reply.size()), reply).status == 0 &&
           c.command(auth_command(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status == 0;
  };
  constexpr uint32_t kOtherHost = 0x7F000002;  // 127.0.0.2
  test::NvmeClient first, second;
  ASSERT_TRUE(first.open(t.port()));
  ASSERT_EQ(first.connect(0, kSub, kHost).status, 0);
  for (uint16_t tid = 1; tid <= 2; ++tid) ASSERT_TRUE(fail_once(first, tid));
  fail_once(first, 3);  // the third ends the connection; no back-off yet
  ASSERT_TRUE(second.open(t.port()));
  ASSERT_EQ(second.connect(0, kSub, kHost).status, 0);
  ASSERT_TRUE(fail_once(second, 4)) << "three failures cost no back-off";
  // The fourth failure from 127.0.0.1: the next Negotiate gets Failure1, not a Challenge.
  auto refused = negotiate(second, 5, groups);
  ASSERT_GE(refused.size(), 2u);
  EXPECT_EQ(refused[1], auth::kIdFailure1);
  // The host itself, at another address, is not locked out by what 127.0.0.1 did.
  test::NvmeClient real;
  real.source = kOtherHost;
  ASSERT_TRUE(real.open(t.port()));
  ASSERT_EQ(real.connect(0, kSub, kHost).status, 0);
  auto ch = auth::decode_challenge(negotiate(real, 1, groups));
  ASSERT_TRUE(ch) << "refused at an address that never failed";
  // Once the back-off (1 s) has passed, 127.0.0.1 may try again.
  bool challenged = false;
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!challenged && std::chrono::steady_clock::now() < limit) {
    test::NvmeClient again;
    ASSERT_TRUE(again.open(t.port()));
    ASSERT_EQ(again.connect(0, kSub, kHost).status, 0);
    auto m = negotiate(again, 6, groups);
    challenged = auth::decode_challenge(m).has_value();
    if (!challenged) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(challenged) << "the back-off never ended";
}

}  // namespace
}  // namespace blkcopy
