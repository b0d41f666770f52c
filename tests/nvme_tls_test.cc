// NVMe/TCP over TLS 1.3 (TP 8011): PSKs as nvme-cli writes them (the specification's example,
// CRCs from zlib) and their derivation checked against an independent HKDF (Python's hmac),
// then blkcopy's host against blkcopy's target over loopback: data and an offloaded Copy over
// TLS; a wrong key, no key and clear text refused; a PSK for one host that Connects as another
// refused; a port where TLS is optional serving both; the discovery log's TREQ and TSAS.
// SPDK is the peer in tests/interop/spdk_tls.sh.
#include <gtest/gtest.h>

#include <blkcopy/copy.h>
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "nvme/auth/tls_psk.h"
#include "nvme/codec.h"
#include "nvme/host/queue.h"
#include "nvme/tcp/tls_session.h"
#include "tests/served_target.h"
#include "tests/scripted_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;

// The example of the NVMe TCP transport specification (PSK 5512DBB6...0B5D5B03, SHA-256).
const std::string kSpecKey = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
// bytes(range(48)) with hash 02, and bytes(range(32)) with hash 00; base64(key + zlib CRC-32).
const std::string kKey48 =
    "NVMeTLSkey-1:02:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:";
const std::string kKey00 = "NVMeTLSkey-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
const std::string kHost = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
const std::string kOther = "nqn.2014-08.org.nvmexpress:uuid:0b6c5f38-1b64-4d4b-9e0e-6c1c2f3a4d5e";
const std::string kSub = "nqn.2024-01.io.blkcopy:tls";

std::string hex(const std::vector<uint8_t>& b) { return fmt::format("{:02x}", fmt::join(b, "")); }

TEST(TlsPsk, KeysParseAsNvmeCliWritesThem) {
  auto k = auth::parse_tls_key(kSpecKey);
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(hex(k->configured), "5512dbb6737d0106f65975b773dfb011ffc344bcf442e2dd6d8bc4870b5d5b03");
  EXPECT_EQ(k->hash, 1);
  EXPECT_EQ(k->cipher(), auth::TlsCipher::aes128gcm_sha256);
  auto k48 = auth::parse_tls_key(kKey48);
  ASSERT_TRUE(k48) << k48.error().message();
  EXPECT_EQ(k48->cipher(), auth::TlsCipher::aes256gcm_sha384);
  struct Bad {
    std::string text, why;
  };
  for (const Bad& b : {
           Bad{"", "not of the form"},
           Bad{"NVMeTLSkey-1:01:", "not of the form"},
           Bad{"NVMeTLSkey-1:03:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:", "hash '03'"},
           Bad{"NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9Lra:", "CRC-32"},
           // 48 bytes with the hash of 32-byte keys
           Bad{"NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:",
               "goes with a 32-byte key"},
           Bad{"NVMeTLSkey-1:01:AAAA:", "the key is 0 bytes"},
           Bad{"DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:", "a DH-HMAC-CHAP secret"},
       }) {
    auto r = auth::parse_tls_key(b.text);
    ASSERT_FALSE(r) << b.text;
    EXPECT_NE(r.error().message().find(b.why), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("gen-tls-key"), std::string::npos) << r.error().message();
  }
}

// Expected values from Python: HKDF-Extract with a zero salt and HKDF-Expand-Label (RFC 8446)
// written with hmac/hashlib, the way SPDK and Linux derive them.
TEST(TlsPsk, DerivationMatchesAnIndependentHkdf) {
  const auto k = auth::parse_tls_key(kSpecKey).value();
  const auto retained = auth::retained_psk(k, kHost);
  EXPECT_EQ(hex(retained), "f0af1bc718d4f23bdd7c1683a3d79bd953ea789d106a0f5207bb574bbe5446ce");
  const std::string id = auth::tls_identity(k.cipher(), kHost, kSub);
  EXPECT_EQ(id, "NVMe0R01 " + kHost + " " + kSub);
  EXPECT_EQ(hex(auth::tls_psk(retained, id, k.cipher()).value()),
            "f8658fc44cf944c32618980201e2c9d42a0981a11d00b74b1e4f224e2db8506a");
  const auto k48 = auth::parse_tls_key(kKey48).value();
  EXPECT_EQ(hex(auth::retained_psk(k48, kHost)),
            "9199e9844a95310712a6436350cb36769e36bb02461989493acb7f9419f9d1ca81374a176479e87994f6c7c1"
            "7c5f2800");
  auto p48 = TlsSession::psk_for(k48, kHost, kSub).value();
  EXPECT_EQ(p48.identity, "NVMe0R02 " + kHost + " " + kSub);
  EXPECT_EQ(hex(p48.key),
            "4e5d314b00d805c88914cad1076fed3a3d21cbfaddd102716ab2dad7aa9b886f5139a099b0620cb318879ce3"
            "f86e0618");
  // Hash 00: the configured key is the retained one.
  const auto k00 = auth::parse_tls_key(kKey00).value();
  EXPECT_EQ(hex(TlsSession::psk_for(k00, kHost, kSub).value().key),
            "0d4367750d806077a1665197cad509fa623f2b7afbe182d0fbce7277342afbd3");
  // libnvme 1.x's encoding (nvme-cli 2.x keys in Linux's keyring): the length little-endian, no
  // length bytes before the label and the context; against Python's hmac too.
  auto k1 = k;
  k1.libnvme1 = true;
  EXPECT_EQ(hex(auth::retained_psk(k1, kHost)),
            "c8304c516f121bc4cd37c9d434635c70ed18c8809004448c3d7ff17b8265ac5e");
  EXPECT_EQ(hex(TlsSession::psk_for(k1, kHost, kSub).value().key),
            "5ba17419a724aa9b126e5a0a094ff684f22dae9bcae58c31827b2c41c403e6fc");
  // NQNs that make the identity longer than a TLS label's context may be are refused.
  const std::string long_sub = "nqn.2024-01.io.blkcopy:" + std::string(200, 'x');
  auto too_long = TlsSession::psk_for(k, kHost, long_sub);
  ASSERT_FALSE(too_long);
  EXPECT_NE(too_long.error().message().find("255"), std::string::npos) << too_long.error().message();
}

// The key and IV the kernel gets when it takes over the records (kTLS): RFC 8448 §3's trace
// (the server's handshake traffic secret and the key and IV it prints), and a 48-byte secret
// for the SHA-384 suite against Python's hmac.
TEST(TlsPsk, TrafficKeysMatchRfc8448AndAnIndependentHkdf) {
  const std::vector<uint8_t> rfc8448 = {
      0xb6, 0x7b, 0x7d, 0x69, 0x0c, 0xc1, 0x6c, 0x4e, 0x75, 0xe5, 0x42, 0x13, 0xcb, 0x2d, 0x37, 0xb4,
      0xe9, 0xc9, 0x12, 0xbc, 0xde, 0xd9, 0x10, 0x5d, 0x42, 0xbe, 0xfd, 0x59, 0xd3, 0x91, 0xad, 0x38};
  const auto k = auth::traffic_key(auth::TlsCipher::aes128gcm_sha256, rfc8448);
  EXPECT_EQ(hex(k.key), "3fce516009c21727d0f2e4e86ee403bc");
  EXPECT_EQ(hex(k.iv), "5d313eb2671276ee13000b30");
  std::vector<uint8_t> s48(48);
  for (size_t i = 0; i < s48.size(); ++i) s48[i] = static_cast<uint8_t>(i);
  const auto k48 = auth::traffic_key(auth::TlsCipher::aes256gcm_sha384, s48);
  EXPECT_EQ(hex(k48.key), "6877d022f1c61d24ebb7487c16752d9a4798e40431c75b39320e537c90e23225");
  EXPECT_EQ(hex(k48.iv), "42822531a0fe88648fc09e9f");
}

TEST(TlsPsk, IdentitiesAreTakenApartOrRefusedByName) {
  auto id = auth::parse_tls_identity("NVMe0R02 " + kHost + " " + kSub + std::string(1, '\0'));
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(id->cipher, auth::TlsCipher::aes256gcm_sha384);
  EXPECT_EQ(id->hostnqn, kHost);
  EXPECT_EQ(id->subnqn, kSub);
  for (auto [text, why] : {std::pair{"NVMe1R01 h s digest", "version 1"},
                           {"NVMe0G01 h s", "generated by DH-HMAC-CHAP"},
                           {"NVMe0R03 h s", "not of the form"},
                           {"NVMe0R01 hs", "a host NQN and a subsystem NQN"},
                           {"NVMe0R01 h s extra", "a host NQN and a subsystem NQN"},
                           {"psk.spdk.io", "not of the form"}}) {
    auto r = auth::parse_tls_identity(text);
    ASSERT_FALSE(r) << text;
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
  }
}

// A subsystem of one 8 MiB namespace on two ports: TLS required, TLS optional.
TargetConfig tls_config() {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}, PortTls::required});
  cfg.ports.push_back({2, "127.0.0.1", 0, {kSub}, PortTls::optional});
  cfg.subsystems.push_back({kSub, true, {}, {{1, "mem:8M,seed=5", "", true}}});
  HostConfig h;
  h.nqn = kHost;
  h.tls_key = kSpecKey;
  cfg.hosts.push_back(h);
  HostConfig o;
  o.nqn = kOther;
  o.tls_key = kKey48;
  cfg.hosts.push_back(o);
  return cfg;
}

std::string spec(uint16_t port, const std::string& host, const std::string& extra) {
  return fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}{}", port, kSub, host, extra);
}

TEST(TlsOverLoopback, DataAndAnOffloadedCopyCrossTheRequiredPort) {
  test::Served t(tls_config());
  auto loop = test::make_loop();
  for (auto [host, key] : {std::pair{kHost, kSpecKey}, {kOther, kKey48}}) {
    auto d = open_device(*loop, spec(t.ports()[0], host, "&tls_key=" + key));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ((*d)->name().find(key), std::string::npos) << "the key is not in the name";
    EXPECT_NE((*d)->name().find("tls_key=***"), std::string::npos) << (*d)->name();
    EXPECT_EQ(test::read_bytes(**d, 6 << 20, 1 << 20), test::pattern(6 << 20, 1 << 20, 5));
    const test::Bytes data = test::pattern(0, 1 << 20, 77);
    test::write_bytes(**d, 2 << 20, data);  // R2T writes over TLS
    test::write_bytes(**d, 512, test::pattern(0, 4096, 78));  // in-capsule
    CopyResult r = copy(**d, 2 << 20, **d, 5 << 20, 1 << 20);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    EXPECT_EQ(r.offloaded_bytes, 1u << 20);
    EXPECT_EQ(test::read_bytes(**d, 5 << 20, 1 << 20), data);
    EXPECT_EQ(test::read_bytes(**d, 512, 4096), test::pattern(0, 4096, 78));
  }
}

TEST(TlsOverLoopback, AWrongKeyNoKeyAndAnotherHostsKeyAreRefused) {
  test::Served t(tls_config());
  auto loop = test::make_loop();
  struct Refused {
    std::string host, extra, why;
  };
  for (const Refused& r : {
           Refused{kHost, "&tls_key=" + kKey00, "the target refused the TLS PSK"},     // wrong key
           Refused{kOther, "&tls_key=" + kSpecKey, "the target refused the TLS PSK"},  // not its key
           Refused{kHost, "", "a port that requires TLS closes clear-text hosts"},    // clear text
       }) {
    auto d = open_device(*loop, spec(t.ports()[0], r.host, r.extra + "&connect_timeout=5000"));
    ASSERT_FALSE(d) << r.extra;
    EXPECT_NE(d.error().message().find(r.why), std::string::npos) << d.error().message();
  }
  // A clear-text host gets not even an ICResp on the required port.
  test::NvmeClient c;
  EXPECT_FALSE(c.open(t.ports()[0]));
  EXPECT_GE(t.stats().errors, 3u);
}

// The PSK names a host and a subsystem: a queue secured with it may Connect as that host to
// that subsystem only (a stolen or shared key does not make one host another).
TEST(TlsOverLoopback, APskForOneHostDoesNotConnectAsAnother) {
  test::Served t(tls_config());
  auto loop = test::make_loop();
  QueueOptions qo;
  qo.tls = TlsSession::psk_for(auth::parse_tls_key(kSpecKey).value(), kHost, kSub).value();
  for (auto [host, sub, want] : {std::tuple{kOther, kSub, status::kConnectInvalidHost},
                                 {kHost, std::string(kDiscoveryNqn), status::kConnectInvalidHost},
                                 {kHost, kSub, uint16_t{0}}}) {
    auto q = HostQueue::open(*loop, "127.0.0.1", t.ports()[0], qo);
    ASSERT_TRUE(q) << q.error().message();
    const auto data = connect_data(0xFFFF, sub, host);
    auto cqe = (*q)->run_sync(connect_command(0, 31, 0), data.data(), nullptr, kConnectDataSize);
    ASSERT_TRUE(cqe) << cqe.error().message();
    EXPECT_EQ((cqe->status >> 1) & 0x7FF, want) << host << " to " << sub;
  }
}

// Where TLS is optional, hosts without a TLS key come in clear text; a host with one must use
// it (its NQN alone, which anyone can send, does not let it in).
TEST(TlsOverLoopback, AnOptionalPortServesTlsAndClearTextAndDiscoverySaysWhichPortNeedsWhat) {
  TargetConfig cfg = tls_config();
  cfg.discovery_port = test::free_port();  // lists every port (an I/O port lists its own)
  test::Served t(cfg);
  auto loop = test::make_loop();
  auto secured = open_device(*loop, spec(t.ports()[1], kHost, "&tls_key=" + kSpecKey));
  ASSERT_TRUE(secured) << secured.error().message();
  const std::string keyless = "nqn.2024-01.io.blkcopy:keyless-host";
  auto clear = open_device(*loop, spec(t.ports()[1], keyless, ""));
  ASSERT_TRUE(clear) << clear.error().message();
  auto impostor = open_device(*loop, spec(t.ports()[1], kHost, ""));
  ASSERT_FALSE(impostor) << "a keyed host's NQN in clear text";
  EXPECT_NE(impostor.error().message().find("refused"), std::string::npos) << impostor.error().message();
  test::write_bytes(**secured, 1 << 20, test::pattern(0, 8192, 9));
  EXPECT_EQ(test::read_bytes(**clear, 1 << 20, 8192), test::pattern(0, 8192, 9));
  // The discovery log, read in clear text on the discovery port: both ports.
  Sqe get{};
  get.opcode = admin::kGetLogPage;
  const uint32_t len = kDiscHeaderSize + 2 * kDiscEntrySize;
  get.cdw10 = kLogDiscovery | ((len / 4 - 1) << 16);
  std::vector<uint8_t> log;
  {
    // Through the optional I/O port, as Linux nvmet: that port's record only.
    test::NvmeClient io;
    ASSERT_TRUE(io.open(t.ports()[1]));
    ASSERT_EQ(io.connect(0, kDiscoveryNqn, keyless).status, 0);
    ASSERT_EQ(io.command(get, {}, &log, len).status, 0);
    ASSERT_EQ(log[8], 1) << "one record";
    const uint8_t* e = log.data() + kDiscHeaderSize;
    EXPECT_EQ(e[disc::kPortid] | e[disc::kPortid + 1] << 8, 2) << "the port it came through";
  }
  test::NvmeClient c;
  ASSERT_TRUE(c.open(cfg.discovery_port));
  ASSERT_EQ(c.connect(0, kDiscoveryNqn, keyless).status, 0);
  ASSERT_EQ(c.command(get, {}, &log, len).status, 0);
  ASSERT_EQ(log[8], 2) << "two records";
  for (int i = 0; i < 2; ++i) {
    const uint8_t* e = log.data() + kDiscHeaderSize + i * kDiscEntrySize;
    const uint16_t port_id = static_cast<uint16_t>(e[disc::kPortid] | e[disc::kPortid + 1] << 8);
    EXPECT_EQ(e[disc::kTreq] & 3, port_id == 1 ? 1 : 2) << "required (01b), not required (10b)";
    EXPECT_EQ(e[disc::kTsas], 2) << "TLS 1.3";
  }
  // `blkcopy discover` with the key: both device strings carry it (a keyed host may not use
  // the optional port in clear text); without it, only the required port's has a placeholder.
  test::TempDir dir;
  const std::string key_file = (dir.path() / "tls.key").string();
  std::ofstream(key_file) << kSpecKey << "\n";
  const auto with = test::run_cli({"discover", fmt::format("127.0.0.1:{}", cfg.discovery_port), "--hostnqn",
                                   kHost, "--tls-key-file", key_file});
  ASSERT_EQ(with.exit_code, 0) << with.err;
  size_t strings = 0;
  for (size_t at = 0; (at = with.out.find("device string:", at)) != std::string::npos; ++at) {
    ++strings;
    const std::string line = with.out.substr(at, with.out.find('\n', at) - at);
    EXPECT_NE(line.find("&tls_key_file=" + key_file), std::string::npos) << line;
  }
  EXPECT_EQ(strings, 2u) << with.out;
  const auto without = test::run_cli({"discover", fmt::format("127.0.0.1:{}", cfg.discovery_port),
                                      "--hostnqn", keyless});
  ASSERT_EQ(without.exit_code, 0) << without.err;
  EXPECT_EQ(without.out.find("&tls_key_file=FILE"), without.out.rfind("&tls_key_file=FILE"))
      << "one placeholder, for the required port: " << without.out;
  EXPECT_NE(without.out.find("&tls_key_file=FILE"), std::string::npos) << without.out;
}

// TLS asked of a port without it is named as such, and a bad device string never shows the key.
TEST(TlsOverLoopback, APortWithoutTlsAndBadDeviceStringsSayWhatIsWrong) {
  TargetConfig cfg = tls_config();
  cfg.ports.resize(1);
  cfg.ports[0].tls = PortTls::none;
  std::optional<test::LogCapture> log(std::in_place);
  {
    test::Served t(cfg);
    auto loop = test::make_loop();
    auto d = open_device(*loop, spec(t.port(), kHost, "&tls_key=" + kSpecKey));
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().code(), EPROTO) << d.error().message();
    EXPECT_NE(d.error().message().find("does not speak TLS"), std::string::npos) << d.error().message();
  }
  EXPECT_TRUE(log->has("a TLS ClientHello on a port without TLS")) << "the target named the ClientHello";
  log.reset();
  test::Served t(cfg);
  auto loop = test::make_loop();
  auto bad = open_device(*loop, spec(t.port(), kHost, "&tls_key=" + kSpecKey + "&depth=999"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("depth must be"), std::string::npos) << bad.error().message();
  EXPECT_EQ(bad.error().message().find(kSpecKey.substr(16, 20)), std::string::npos)
      << "the key in an error: " << bad.error().message();
  auto ktls = open_device(*loop, spec(t.port(), kHost, "&tls_key=" + kSpecKey + "&ktls=yes"));
  ASSERT_FALSE(ktls);
  EXPECT_NE(ktls.error().message().find("ktls must be on or off"), std::string::npos)
      << ktls.error().message();
}

// DH-HMAC-CHAP inside the TLS session: a host with both keys gets in, one without the DH
// secret is refused by authentication even though its TLS key is right.
TEST(TlsOverLoopback, DhchapAuthenticatesInsideTls) {
  const std::string dh = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
  TargetConfig cfg = tls_config();
  cfg.hosts[0].key = dh;
  cfg.hosts[0].dhgroup = "ffdhe2048";
  test::Served t(cfg);
  auto loop = test::make_loop();
  auto d = open_device(*loop, spec(t.ports()[0], kHost, "&tls_key=" + kSpecKey + "&dhchap_secret=" + dh));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(test::read_bytes(**d, 6 << 20, 4096), test::pattern(6 << 20, 4096, 5));
  auto no_dh = open_device(*loop, spec(t.ports()[0], kHost, "&tls_key=" + kSpecKey));
  ASSERT_FALSE(no_dh);
  EXPECT_NE(no_dh.error().message().find("requires DH-HMAC-CHAP authentication"), std::string::npos)
      << no_dh.error().message();
}

// The kernel takes over at record 0 of each direction (kernel_tls.h): after a handshake in
// memory both sides hold the same two traffic secrets, crosswise; a side that was given more
// than the handshake (the host's first record right behind its Finished) or that already moved
// application data gives none, so records are never handed over at the wrong number.
TEST(TlsSecrets, BothSidesHoldTheSameSecretsOnlyAtRecordZero) {
  auto psk = TlsSession::psk_for(auth::parse_tls_key(kSpecKey).value(), kHost, kSub).value();
  auto lookup = [psk](std::string_view) -> Result<TlsSession::Psk> { return psk; };
  // Runs both handshakes in memory; `extra` is written by the host once it is done, and its
  // record travels with the host's Finished.
  auto shake = [&](std::unique_ptr<TlsSession>& c, std::unique_ptr<TlsSession>& s, bool extra) {
    c = TlsSession::client(psk);
    s = TlsSession::server(lookup);
    c->keep_secrets();
    s->keep_secrets();
    std::vector<uint8_t> wire;
    for (int i = 0; i < 10; ++i) {
      const auto cs = c->handshake();
      if (cs == TlsSession::Step::done && extra && i < 9) {
        c->write("ICReq", 5);
        extra = false;
      }
      wire.clear();
      c->take_output(wire);
      if (!wire.empty()) s->feed(wire.data(), wire.size());
      const auto ss = s->handshake();
      wire.clear();
      s->take_output(wire);
      if (!wire.empty()) c->feed(wire.data(), wire.size());
      if (cs == TlsSession::Step::done && ss == TlsSession::Step::done) return;
    }
    FAIL() << "the handshake did not finish: " << c->error() << " / " << s->error();
  };
  std::unique_ptr<TlsSession> c, s;
  shake(c, s, false);
  auto cs = c->take_secrets(), ss = s->take_secrets();
  ASSERT_TRUE(cs && ss);
  EXPECT_EQ(cs->send, ss->receive);
  EXPECT_EQ(cs->receive, ss->send);
  EXPECT_NE(cs->send, cs->receive);
  EXPECT_EQ(cs->send.size(), 32u);
  EXPECT_EQ(ss->cipher, auth::TlsCipher::aes128gcm_sha256);
  EXPECT_FALSE(c->take_secrets()) << "secrets are handed out once";

  shake(c, s, true);  // the server received a record beyond its handshake
  EXPECT_FALSE(s->take_secrets());
  EXPECT_FALSE(c->take_secrets()) << "the host already wrote a record";
  // Not asked for before the handshake: none kept.
  auto plain_c = TlsSession::client(psk);
  auto plain_s = TlsSession::server(lookup);
  std::vector<uint8_t> wire;
  for (int i = 0; i < 6; ++i) {
    plain_c->handshake();
    wire.clear();
    plain_c->take_output(wire);
    if (!wire.empty()) plain_s->feed(wire.data(), wire.size());
    plain_s->handshake();
    wire.clear();
    plain_s->take_output(wire);
    if (!wire.empty()) plain_c->feed(wire.data(), wire.size());
  }
  ASSERT_EQ(plain_s->handshake(), TlsSession::Step::done);
  EXPECT_FALSE(plain_s->take_secrets());
}

// A ClientHello cut into one-byte records costs two reads and a handshake step each: past 64
// records the target ends the handshake instead of waiting out its time limit.
TEST(TlsOverLoopback, AHandshakeCutIntoTinyRecordsIsEnded) {
  TargetConfig cfg = tls_config();
  cfg.limits.handshake_ms = 120000;  // only the record limit can end it within the wait below
  std::optional<test::LogCapture> log(std::in_place);
  {
    test::Served t(cfg);
    test::NvmeClient c;
    ASSERT_TRUE(c.open_raw(t.ports()[0]));
    // A ClientHello's start (type 1, 4 KiB long), then zeroes, one byte per record.
    std::vector<uint8_t> bytes;
    const uint8_t hello[] = {1, 0, 0x10, 0};
    for (int i = 0; i < 100; ++i) {
      for (uint8_t b : {uint8_t{22}, uint8_t{3}, uint8_t{1}, uint8_t{0}, uint8_t{1}}) bytes.push_back(b);
      bytes.push_back(i < 4 ? hello[i] : 0);
    }
    ASSERT_TRUE(c.send_raw(bytes));
    EXPECT_TRUE(c.closed_by_peer(60000));
  }
  EXPECT_TRUE(log->has("more than 64 records")) << "the target did not say why";
}

}  // namespace
}  // namespace blkcopy
