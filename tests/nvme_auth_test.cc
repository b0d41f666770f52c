// DH-HMAC-CHAP: secrets as nvme-cli writes them (CRC and transform checked against zlib's CRC-32
// and Python's HMAC), and blkcopy's host against blkcopy's target over loopback with every
// outcome: the right key, a wrong one, none, bidirectional with the right and a wrong
// controller key, each DH group and hash; and a client that claims an allowed host's NQN
// without its key reaching nothing.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "nvme/auth/dhchap.h"
#include "nvme/codec.h"
#include <blkcopy/target.h>
#include "tests/auth_target.h"
#include "tests/nvme_client.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;
using namespace test::auth_peer;


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
  auto reply = auth::encode_reply({0, 0, false, auth::Bytes(32, 0), {}, {}}, 32);
  EXPECT_EQ(admin.command(auth_command(fabrics::kAuthSend, static_cast<uint32_t>(reply.size())),
                          reply)
                .status,
            0);
  std::vector<uint8_t> msg;
  EXPECT_EQ(admin.command(auth_command(fabrics::kAuthReceive, 4096), {}, &msg, 4096).status, 0);
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

}  // namespace
}  // namespace blkcopy
