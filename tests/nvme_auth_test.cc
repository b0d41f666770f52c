// DH-HMAC-CHAP: secrets as nvme-cli writes them (CRC and transform checked against zlib's CRC-32
// and Python's HMAC), and blkcopy's host against blkcopy's target over loopback with every
// outcome: the right key, a wrong one, none, bidirectional with the right and a wrong
// controller key, each DH group and hash; and a client that claims an allowed host's NQN
// without its key reaching nothing.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <vector>
#include <cstring>
#include <future>
#include <thread>

#include "nvme/auth/dhchap.h"
#include "nvme/codec.h"
#include <blkcopy/target.h>
#include "tests/nvme_client.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;

// Made with Python: base64(bytes(range(32)) + zlib.crc32 little-endian).
const std::string kKey = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
// bytes(range(100, 148)) with transform 02 (SHA-384).
const std::string kKey384 =
    "DHHC-1:02:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKTvGwQfg==:";

TEST(Dhchap, SecretsParseAsNvmeCliWritesThem) {
  auto s = auth::parse_secret(kKey);
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->key.size(), 32u);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(s->key[i], i);
  EXPECT_EQ(auth::transformed_key(*s, "nqn.x"), s->key) << "transform 00 uses the key as is";
  auto t = auth::parse_secret(kKey384);
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(t->transform, 2);
  // hmac.new(key, b"nqn.2024-01.io.example:h1NVMe-over-Fabrics", hashlib.sha384), from Python.
  EXPECT_EQ(fmt::format("{:02x}", fmt::join(auth::transformed_key(*t, "nqn.2024-01.io.example:h1"), "")),
            "00688d13723132983c601f124ef36c6d5e61aeb64a3684c0ffca830025e47090693767395e814d425f742f44446545ec");
  for (const char* bad : {"", "DHHC-1:00:", "DHHC-1:04:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
                          "DHHC-2:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
                          "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:", "DHHC-1:00:AAAA:"}) {
    EXPECT_FALSE(auth::parse_secret(bad)) << bad;
  }
}

TEST(Dhchap, BothSidesOfADhExchangeAgreeAndBadValuesAreRefused) {
  for (uint8_t g : {1, 2}) {
    auto a = auth::DhKey::generate(g).value();
    auto b = auth::DhKey::generate(g).value();
    auto ab = a.shared_secret(b.public_value());
    auto ba = b.shared_secret(a.public_value());
    ASSERT_TRUE(ab && ba);
    EXPECT_EQ(*ab, *ba);
    EXPECT_EQ(ab->size(), auth::dhgroup_bytes(g));
    auth::Bytes one(auth::dhgroup_bytes(g), 0);
    one.back() = 1;  // the public value 1 would make the secret known to anyone
    EXPECT_FALSE(a.shared_secret(one));
    EXPECT_FALSE(a.shared_secret(auth::Bytes(10, 7)));
  }
}

const std::string kSub = "nqn.2024-01.io.blkcopy.test:auth";
const std::string kHost = "nqn.2024-01.io.blkcopy.test:auth-host";
// A different valid 32-byte secret (bytes 100..131), made like kKey.
std::string other_key() { return "DHHC-1:00:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOeXryU:"; }

class AuthTarget {
 public:
  AuthTarget(const std::string& hash, const std::string& group, const std::string& ctrl_key = kKey384,
             uint16_t cntlid_max = 0xFFEF) {
    std::promise<uint16_t> ready;
    auto port = ready.get_future();
    thread_ = std::thread([this, hash, group, ctrl_key, cntlid_max, ready = std::move(ready)]() mutable {
      auto loop = EventLoop::create().value();
      TargetConfig cfg;
      cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}});
      cfg.discovery_port = 0;
      cfg.subsystems.push_back({kSub, false, {kHost}, {{1, "mem:1M,seed=31", "", true}}});
      cfg.subsystems.back().cntlid_max = cntlid_max;
      // A queue may stay unauthenticated for a minute: nothing here ends by that limit.
      cfg.limits.connect_ms = 60000;
      cfg.hosts.push_back({kHost, kKey, ctrl_key, hash, group});
      auto t = Target::create(*loop, cfg).value();
      if (!t->start().ok()) std::abort();
      ready.set_value(t->bound_ports()[0]);
      (void)loop->run_until([this] { return stop_.load(); });
    });
    port_ = port.get();
  }
  ~AuthTarget() {
    stop_ = true;
    thread_.join();
  }
  std::string spec(const std::string& extra) const {
    return fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}{}", port_, kSub, kHost, extra);
  }
  uint16_t port() const { return port_; }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  uint16_t port_ = 0;
};

struct Group {
  const char* hash;
  const char* group;
};
class DhchapOverLoopback : public ::testing::TestWithParam<Group> {};

TEST_P(DhchapOverLoopback, RightKeysConnectWrongOrMissingOnesAreRefused) {
  AuthTarget t(GetParam().hash, GetParam().group);
  auto loop = test::make_loop();
  // The right key: the data is there.
  auto d = open_device(*loop, t.spec("&dhchap_secret=" + kKey));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(test::read_bytes(**d, 0, 4096), test::pattern(0, 4096, 31));
  // The key is not in the name that reports, JSON and logs show.
  EXPECT_EQ((*d)->name().find(kKey), std::string::npos) << (*d)->name();
  EXPECT_NE((*d)->name().find("dhchap_secret=***"), std::string::npos) << (*d)->name();
  // Bidirectional: the controller proves it holds the controller key.
  auto both = open_device(*loop, t.spec("&dhchap_secret=" + kKey + "&dhchap_ctrl_secret=" + kKey384));
  ASSERT_TRUE(both) << both.error().message();
  EXPECT_EQ(test::read_bytes(**both, 4096, 4096), test::pattern(4096, 4096, 31));
  struct Refused {
    std::string extra;
    const char* want;
  };
  for (const Refused& r :
       {Refused{"", "requires DH-HMAC-CHAP authentication for host"},
        Refused{"&dhchap_secret=" + other_key(), "the controller refused host"},
        Refused{"&dhchap_secret=" + kKey + "&dhchap_ctrl_secret=" + other_key(),
                "the controller failed to prove it holds dhchap_ctrl_secret"}}) {
    auto bad = open_device(*loop, t.spec(r.extra));
    ASSERT_FALSE(bad) << r.extra;
    EXPECT_EQ(bad.error().code(), EACCES) << bad.error().message();
    EXPECT_NE(bad.error().message().find(r.want), std::string::npos) << bad.error().message();
  }
}

INSTANTIATE_TEST_SUITE_P(Groups, DhchapOverLoopback,
                         ::testing::Values(Group{"hmac(sha256)", "null"}, Group{"hmac(sha384)", "ffdhe2048"},
                                           Group{"hmac(sha512)", "ffdhe3072"}),
                         [](const ::testing::TestParamInfo<Group>& p) {
                           return std::string(p.param.group) + "_" + std::to_string(p.index);
                         });

TEST(DhchapOverLoopback2, AControllerWithoutACtrlKeyCannotProveItself) {
  AuthTarget t("hmac(sha256)", "null", "");
  auto loop = test::make_loop();
  auto bad = open_device(*loop, t.spec("&dhchap_secret=" + kKey + "&dhchap_ctrl_secret=" + kKey384));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("refused host"), std::string::npos) << bad.error().message();
}

// A client that sends the allowed host's NQN (anyone can) without its key gets no Identify, no
// property, no data and no discovery log entry.
TEST(DhchapOverLoopback2, AnAttackerWithoutTheKeyReachesNothing) {
  AuthTarget t("hmac(sha256)", "ffdhe2048");
  test::NvmeClient admin, io;
  ASSERT_TRUE(admin.open(t.port()));
  auto c = admin.connect(0, kSub, kHost);
  ASSERT_EQ(c.status, 0);
  EXPECT_TRUE(c.dw0 & (1u << 17)) << "ATR: authentication required";
  std::vector<uint8_t> id;
  EXPECT_EQ(admin.identify(kCnsController, 0, id).status, status::kAuthRequired);
  Sqe prop{};
  prop.opcode = admin::kFabrics;
  reinterpret_cast<uint8_t*>(&prop)[kFcType] = fabrics::kPropertyGet;
  EXPECT_EQ(admin.command(prop).status, status::kAuthRequired);
  ASSERT_TRUE(io.open(t.port()));
  auto q = io.connect(1, kSub, kHost, static_cast<uint16_t>(c.dw0 & 0xFFFF));
  ASSERT_EQ(q.status, 0);
  std::vector<uint8_t> got;
  EXPECT_EQ(io.read(1, 0, 8, 512, got).status, status::kAuthRequired);
  EXPECT_EQ(io.write(1, 0, std::vector<uint8_t>(512, 1), 512).status, status::kAuthRequired);
  // Guessing at the protocol: a Reply without a Negotiate is out of sequence and fails.
  Sqe send{};
  send.opcode = admin::kFabrics;
  reinterpret_cast<uint8_t*>(&send)[kFcType] = fabrics::kAuthSend;
  send.cdw10 = auth::kAuthCdw10;
  auto reply = auth::encode_reply({0, 0, false, auth::Bytes(32, 0), {}, {}}, 32);
  send.cdw11 = static_cast<uint32_t>(reply.size());
  EXPECT_EQ(admin.command(send, reply).status, 0);
  Sqe recv{};
  recv.opcode = admin::kFabrics;
  reinterpret_cast<uint8_t*>(&recv)[kFcType] = fabrics::kAuthReceive;
  recv.cdw10 = auth::kAuthCdw10;
  recv.cdw11 = 4096;
  std::vector<uint8_t> msg;
  EXPECT_EQ(admin.command(recv, {}, &msg, 4096).status, 0);
  ASSERT_GE(msg.size(), 8u);
  EXPECT_EQ(msg[1], auth::kIdFailure1);
  EXPECT_EQ(admin.identify(kCnsController, 0, id).status, status::kAuthRequired);
  // The discovery controller asks the same host to authenticate: no log page without it.
  test::NvmeClient disc;
  ASSERT_TRUE(disc.open(t.port()));
  auto dc = disc.connect(0, kDiscoveryNqn, kHost);
  ASSERT_EQ(dc.status, 0);
  EXPECT_TRUE(dc.dw0 & (1u << 17));
  Sqe log{};
  log.opcode = admin::kGetLogPage;
  log.cdw10 = kLogDiscovery | (255u << 16);
  std::vector<uint8_t> page;
  EXPECT_EQ(disc.command(log, {}, &page, 1024).status, status::kAuthRequired);
}

// A controller that asks to authenticate and then challenges with the null DH group whatever
// the host offered (as one relaying the real target's challenge would): scripted on a socket.
class NullGroupImpostor {
 public:
  NullGroupImpostor() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~NullGroupImpostor() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::atomic<bool> challenged{false};

 private:
  static bool read_all(int fd, void* p, size_t n) {
    auto* b = static_cast<uint8_t*>(p);
    for (ssize_t r; n; b += r, n -= static_cast<size_t>(r)) {
      if ((r = ::read(fd, b, n)) <= 0) return false;
    }
    return true;
  }
  static std::optional<Sqe> capsule(int fd) {  // reads one command capsule (and its data)
    PduHeader h;
    if (!read_all(fd, &h, sizeof h) || h.type != pdu::kCapsuleCmd) return std::nullopt;
    std::vector<uint8_t> rest(h.plen - sizeof h);
    if (!read_all(fd, rest.data(), rest.size())) return std::nullopt;
    Sqe sqe;
    std::memcpy(&sqe, rest.data(), sizeof sqe);
    return sqe;
  }
  static void answer(int fd, uint16_t cid, uint32_t dw0) {
    CapsuleResp r{};
    r.hdr = {pdu::kCapsuleResp, 0, 24, 0, 24};
    r.cqe.cid = cid;
    r.cqe.dw0 = dw0;
    (void)!::send(fd, &r, sizeof r, MSG_NOSIGNAL);
  }
  void serve() {
    const int c = accept(fd_, nullptr, nullptr);
    if (c < 0) return;
    ICReq req;
    ICResp resp{};
    resp.hdr = {pdu::kICResp, 0, 128, 0, 128};
    resp.maxh2cdata = 131072;
    if (read_all(c, &req, sizeof req) && ::write(c, &resp, sizeof resp) == sizeof resp) {
      auto connect = capsule(c);
      if (connect) answer(c, connect->cid, 1 | (1u << 17));  // CNTLID 1, authentication required
      auto negotiate = connect ? capsule(c) : std::nullopt;
      if (negotiate) answer(c, negotiate->cid, 0);
      auto receive = negotiate ? capsule(c) : std::nullopt;
      if (receive) {
        const auto m = auth::encode_challenge({1, auth::Hash::sha256, auth::kDhNull, 7,
                                               auth::Bytes(32, 0x42), {}});
        DataPdu d{};
        d.hdr = {pdu::kC2HData, pdu::kFlagLast, 24, 24, static_cast<uint32_t>(24 + m.size())};
        d.cccid = receive->cid;
        d.datal = static_cast<uint32_t>(m.size());
        std::vector<uint8_t> out(sizeof d + m.size());
        std::memcpy(out.data(), &d, sizeof d);
        std::memcpy(out.data() + sizeof d, m.data(), m.size());
        (void)!::send(c, out.data(), out.size(), MSG_NOSIGNAL);
        answer(c, receive->cid, 0);
        challenged = true;
      }
    }
    uint8_t b[4096];
    while (::read(c, b, sizeof b) > 0) {}  // whatever the host still says, until it hangs up
    ::close(c);
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// A host that requires key agreement (dhchap_dhgroup without null) refuses a null-group
// challenge: its answer could otherwise be relayed to log an attacker in as this host.
TEST(DhchapOverLoopback2, AHostThatRequiresADhGroupRefusesTheNullGroup) {
  NullGroupImpostor t;
  auto loop = test::make_loop();
  auto bad = open_device(*loop, fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}"
                                            "&dhchap_secret={}&dhchap_dhgroup=ffdhe2048,ffdhe3072",
                                            t.port(), kSub, kHost, kKey));
  ASSERT_FALSE(bad);
  EXPECT_TRUE(t.challenged) << bad.error().message();
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

Sqe auth_sqe(uint8_t fctype, size_t len) {
  Sqe sqe{};
  sqe.opcode = admin::kFabrics;
  reinterpret_cast<uint8_t*>(&sqe)[kFcType] = fctype;
  sqe.cdw10 = auth::kAuthCdw10;
  sqe.cdw11 = static_cast<uint32_t>(len);
  return sqe;
}

// One DH-HMAC-CHAP transaction (null group) with transaction ID tid: the right response when
// `right`, else a guess. False once the connection is gone.
bool transaction(test::NvmeClient& c, uint16_t tid, bool right) {
  const auto neg = auth::encode_negotiate({tid, {1}, {auth::kDhNull}});
  if (c.command(auth_sqe(fabrics::kAuthSend, neg.size()), neg).status) return false;
  std::vector<uint8_t> msg;
  if (c.command(auth_sqe(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status) return false;
  auto ch = auth::decode_challenge(msg);
  if (!ch) return false;
  auth::Bytes r(32, 0x55);
  if (right) {
    const auth::Bytes kh = auth::transformed_key(*auth::parse_secret(kKey), kHost);
    r = auth::host_response(ch->hash, kh, auth::augmented_challenge(ch->hash, ch->c, {}), ch->seq,
                            tid, kHost, kSub);
  }
  const auto reply = auth::encode_reply({tid, 0, false, r, {}, {}}, 32);
  if (c.command(auth_sqe(fabrics::kAuthSend, reply.size()), reply).status) return false;
  return c.command(auth_sqe(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status == 0;
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
  for (uint16_t tid = 1; tid <= 10; ++tid) {
    const auto neg = auth::encode_negotiate({tid, {1}, {1}});
    if (peer.command(auth_sqe(fabrics::kAuthSend, neg.size()), neg).status) break;
    std::vector<uint8_t> msg;
    if (peer.command(auth_sqe(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status) break;
    ++begun;
  }
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
  const auto neg = auth::encode_negotiate({1, {1}, {auth::kDhNull}});
  ASSERT_EQ(host.command(auth_sqe(fabrics::kAuthSend, neg.size()), neg).status, 0);
  std::vector<uint8_t> msg;
  ASSERT_EQ(host.command(auth_sqe(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status, 0);
  auto ch = auth::decode_challenge(msg);
  ASSERT_TRUE(ch);
  ASSERT_TRUE(squat1.open(t.port()));
  ASSERT_EQ(squat1.connect(0, kSub, kHost).status, 0);  // the last free ID
  ASSERT_TRUE(squat2.open(t.port()));
  EXPECT_EQ(squat2.connect(0, kSub, kHost).status, 0) << "squat1 (not authenticating) gives way";
  EXPECT_TRUE(squat1.closed_by_peer(10000));
  // The host finishes its handshake and is served.
  const auth::Bytes kh = auth::transformed_key(*auth::parse_secret(kKey), kHost);
  const auto reply = auth::encode_reply(
      {1, 0, false,
       auth::host_response(ch->hash, kh, auth::augmented_challenge(ch->hash, ch->c, {}), ch->seq, 1,
                           kHost, kSub),
       {}, {}},
      32);
  ASSERT_EQ(host.command(auth_sqe(fabrics::kAuthSend, reply.size()), reply).status, 0);
  ASSERT_EQ(host.command(auth_sqe(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status, 0);
  std::vector<uint8_t> id;
  EXPECT_EQ(host.identify(kCnsController, 0, id).status, 0) << "the host lost its controller";
}

}  // namespace
}  // namespace blkcopy
