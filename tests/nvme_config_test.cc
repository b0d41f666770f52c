// The target's configuration, read strictly: every unknown or unhonoured key and every bad value
// is an error naming its JSON path; --lenient turns the key errors into warnings. Ports, NQNs and
// host:port strings are checked the same way everywhere.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include "core/net.h"
#include "nvme/codec.h"
#include <blkcopy/target.h>
#include "tests/nvme_client.h"
#include "tests/scripted_target.h"
#include "tests/test_util.h"

#include <fstream>

namespace blkcopy {
namespace {

using namespace nvme;

// A valid configuration with one place to put something wrong.
std::string config(const std::string& port_extra = "", const std::string& sub_extra = "",
                   const std::string& ns_extra = "", const std::string& host_extra = "",
                   const std::string& root_extra = "", const std::string& trsvcid = "\"4420\"") {
  return fmt::format(R"({{
    "hosts": [{{"nqn": "nqn.2024-01.io.example:h1"{}}}],
    "ports": [{{"portid": 1, "addr": {{"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
               "trsvcid": {}}}, "subsystems": ["nqn.2024-01.io.example:s1"]{}}}],
    "subsystems": [{{"nqn": "nqn.2024-01.io.example:s1", "allowed_hosts": [],
                    "attr": {{"allow_any_host": "1"}},
                    "namespaces": [{{"nsid": 1, "enable": 1, "device": {{"path": "mem:1M"}}{}}}]{}}}]{}
  }})",
                     host_extra, trsvcid, port_extra, ns_extra, sub_extra, root_extra);
}

std::string error_of(const std::string& json, bool lenient = false) {
  auto r = parse_nvmetcli_json(json, lenient);
  return r ? std::string("(parsed)") : r.error().message();
}

TEST(NvmeConfig, AValidConfigurationParses) {
  auto r = parse_nvmetcli_json(config());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->ports[0].port, 4420);
  EXPECT_EQ(r->subsystems[0].namespaces[0].device, "mem:1M");
}

TEST(NvmeConfig, EveryMistakeIsNamedByItsJsonPath) {
  struct Case {
    const char* what;
    std::string json;
    const char* want;
  };
  const Case cases[] = {
      {"misspelt namespaces", config("", R"(, "namespace": [])"),
       "subsystems[0].namespace: unknown key"},
      {"misspelt nsid", config("", "", R"(, "nsdi": 2)"),
       "subsystems[0].namespaces[0].nsdi: unknown key"},
      {"nsid not a number", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1",
        "namespaces": [{"nsid": "two", "device": {"path": "mem:1M"}}]}]})",
       "subsystems[0].namespaces[0].nsid: expected a number from 1 to 4294967294"},
      {"nsid missing", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1",
        "namespaces": [{"device": {"path": "mem:1M"}}]}]})",
       "subsystems[0].namespaces[0].nsid: missing"},
      {"device path missing", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1",
        "namespaces": [{"nsid": 1, "device": {}}]}]})",
       "subsystems[0].namespaces[0].device.path: missing"},
      {"unknown top-level key", config("", "", "", "", R"(, "subsytems": [])"),
       "subsytems: unknown key"},
      {"port not a number", config("", "", "", "", "", "\"abc\""),
       "ports[0].addr.trsvcid: 'abc' is not a port from 1 to 65535"},
      {"port too big", config("", "", "", "", "", "\"99999\""),
       "ports[0].addr.trsvcid: '99999' is not a port from 1 to 65535"},
      {"port zero", config("", "", "", "", "", "\"0\""),
       "ports[0].addr.trsvcid: '0' is not a port from 1 to 65535"},
      {"TLS required", config(R"(, "addr": {"trtype": "tcp", "traddr": "127.0.0.1", "treq": "required"})"),
       "ports[0].addr"},
      {"TLS without a host key", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1"}], "ports": [{"addr":
        {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4420", "tsas": "tls1.3"},
        "subsystems": ["nqn.2024-01.io.example:s1"]}]})",
       "ports[0] offers TLS but no host has a TLS key"},
      {"treq required without tsas", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1"}], "ports": [{"addr":
        {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4420", "treq": "required"},
        "subsystems": ["nqn.2024-01.io.example:s1"]}]})",
       "ports[0].addr.treq: 'required' needs addr.tsas \"tls1.3\""},
      {"TLS 1.2", R"({"ports": [{"addr": {"traddr": "127.0.0.1", "tsas": "tls1.2"}}]})",
       "ports[0].addr.tsas: 'tls1.2': expected none or tls1.3"},
      {"a bad TLS key", R"({"hosts": [{"nqn": "nqn.2024-01.io.example:h", "tls_key": "NVMeTLSkey-1:01:AAAA:"}]})",
       "hosts[0].tls_key (nqn.2024-01.io.example:h): TLS PSK: the key is 0 bytes"},
      {"flat dhchap_key", config("", "", "", R"(, "dhchap_key": "DHHC-1:00:abc:")"),
       "hosts[0].dhchap_key: write it as hosts[0].dhchap.key"},
      {"a port naming a missing subsystem", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1"}],
        "ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420"},
        "subsystems": ["nqn.2024-01.io.example:nope"]}]})",
       "ports[0].subsystems[0]: no subsystem named nqn.2024-01.io.example:nope"},
      {"a subsystem NQN without the nqn. prefix", R"({"subsystems": [{"nqn": "s1"}]})",
       "subsystems[0].nqn 's1' is not an NQN: it must start with 'nqn.'"},
      {"an allowed host with a bad date", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1",
        "allowed_hosts": ["nqn.2024-13.io.example:h"]}]})",
       "subsystems[0].allowed_hosts[0] 'nqn.2024-13.io.example:h' is not an NQN: the month"},
      {"a host NQN with a space", R"({"hosts": [{"nqn": "nqn.2024-01.io.example:a b"}]})",
       "hosts[0].nqn"},
      {"the same subsystem twice", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1"},
        {"nqn": "nqn.2024-01.io.example:s1"}]})",
       "subsystems[1].nqn: nqn.2024-01.io.example:s1 is configured twice"},
      {"protection information", config("", R"(, "attr": {"pi_enable": "1"})"),
       "subsystems[0].attr"},
      {"a second ANA group", config("", "", R"(, "ana_grpid": 2)"),
       "subsystems[0].namespaces[0].ana_grpid: 2 is not supported"},
      {"referrals", config(R"(, "referrals": [{"addr": {}}])"),
       "ports[0].referrals: discovery referrals are not supported"},
      {"rdma", R"({"ports": [{"addr": {"trtype": "rdma"}}]})",
       "ports[0].addr.trtype: 'rdma': only tcp is served"},
      {"a wrong address family", R"({"ports": [{"addr": {"adrfam": "ipv6", "traddr": "127.0.0.1"}}]})",
       "ports[0].addr.traddr: '127.0.0.1' is not an ipv6 address"},
      {"a host name as address", R"({"ports": [{"addr": {"traddr": "localhost"}}]})",
       "ports[0].addr.traddr: 'localhost' is not a numeric IPv4 or IPv6 address"},
      {"cntlid_min above cntlid_max", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1",
        "attr": {"cntlid_min": "10", "cntlid_max": "5"}}]})",
       "subsystems[0].attr.cntlid_min: 10 is above cntlid_max 5"},
      {"not JSON", "{ not json", "nvmetcli JSON: [json.exception.parse_error"},
      {"namespaces not an array", R"({"subsystems": [{"nqn": "nqn.2024-01.io.example:s1",
        "namespaces": {}}]})",
       "subsystems[0].namespaces: expected an array, got object"},
  };
  for (const Case& c : cases) {
    const std::string got = error_of(c.json);
    EXPECT_NE(got.find(c.want), std::string::npos) << c.what << ": got " << got;
  }
}

TEST(NvmeConfig, DhchapKeysAreReadAndCheckedNeverIgnored) {
  const std::string key = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
  auto r = parse_nvmetcli_json(config("", "", "", R"(, "dhchap": {"key": ")" + key +
                                                      R"j(", "hash": "hmac(sha512)", "dhgroup": "ffdhe3072"})j"));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->hosts.size(), 1u);
  EXPECT_EQ(r->hosts[0].key, key);
  EXPECT_EQ(r->hosts[0].dhgroup, "ffdhe3072");
  struct Bad {
    std::string dhchap;
    const char* want;
  };
  for (const Bad& b : {Bad{R"({"key": "DHHC-1:00:xyz:"})", "hosts[0].dhchap.key"},
                       Bad{R"({"key": "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:"})",
                           "its CRC-32 does not match"},
                       Bad{R"({"key": ")" + key + R"(", "hash": "md5"})", "hosts[0].dhchap.hash"},
                       Bad{R"({"key": ")" + key + R"(", "dhgroup": "ffdhe1024"})", "hosts[0].dhchap.dhgroup"},
                       Bad{R"({"ctrl_key": ")" + key + R"("})", "hosts[0].dhchap.key: missing"},
                       Bad{R"({"key": ")" + key + R"(", "keyy": 1})", "hosts[0].dhchap.keyy: unknown key"}}) {
    const std::string got = error_of(config("", "", "", R"(, "dhchap": )" + b.dhchap));
    EXPECT_NE(got.find(b.want), std::string::npos) << b.dhchap << ": " << got;
  }
}

// nvmetcli's ports[].addr.tsas/treq and hosts[].tls_key: TLS required, optional, or none.
TEST(NvmeConfig, TlsPortsAndHostKeysAreRead) {
  const std::string key = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
  auto port = [](const std::string& addr) {
    return R"({"addr": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4420")" + addr +
           R"(}, "subsystems": ["nqn.2024-01.io.example:s1"]})";
  };
  auto r = parse_nvmetcli_json(
      R"({"hosts": [{"nqn": "nqn.2024-01.io.example:h", "tls_key": ")" + key +
      R"("}], "subsystems": [{"nqn": "nqn.2024-01.io.example:s1"}], "ports": [)" +
      port(R"(, "tsas": "tls1.3")") + ", " + port(R"(, "tsas": "tls1.3", "treq": "not required")") +
      ", " + port(R"(, "tsas": "none", "treq": "not specified")") + "]}");
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->ports.size(), 3u);
  EXPECT_EQ(r->ports[0].tls, PortTls::required) << "tls1.3 alone is required, as in Linux nvmet";
  EXPECT_EQ(r->ports[1].tls, PortTls::optional);
  EXPECT_EQ(r->ports[2].tls, PortTls::none);
  ASSERT_EQ(r->hosts.size(), 1u) << "a host with only a TLS key is kept";
  EXPECT_EQ(r->hosts[0].tls_key, key);
  EXPECT_TRUE(r->hosts[0].key.empty());
}

TEST(NvmeConfig, LenientSkipsUnknownKeysWithAWarningButNotBadValues) {
  std::vector<std::string> warnings;
  auto r = parse_nvmetcli_json(config("", R"(, "namespace": [])", R"(, "nsdi": 2)"), true, &warnings);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("subsystems[0].namespaces[0].nsdi: unknown key; skipped"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("subsystems[0].namespace: unknown key; skipped"), std::string::npos)
      << warnings[1];
  EXPECT_FALSE(parse_nvmetcli_json(config("", "", "", "", "", "\"abc\""), true));
}

TEST(NvmeConfig, NvmetcliDefaultsThatBlkcopyHonoursAreAccepted) {
  // What "nvmetcli save" writes for a plain setup.
  auto r = parse_nvmetcli_json(R"({
    "hosts": [],
    "ports": [{"addr": {"adrfam": "ipv6", "traddr": "::1", "treq": "not specified", "trsvcid": "4420",
                        "trtype": "tcp", "tsas": "none"},
               "ana_groups": [{"ana": {"state": "optimized"}, "grpid": 1}],
               "param": {"pi_enable": "0"}, "portid": 2, "referrals": [],
               "subsystems": ["nqn.2014-08.org.nvmexpress:uuid:0c1bcc4a-5d18-4b1f-8c3e-9f2b3a2b1c0d"]}],
    "subsystems": [{"allowed_hosts": [], "attr": {"allow_any_host": "1", "cntlid_max": "100",
                    "cntlid_min": "5", "model": "Linux", "pi_enable": "0", "qid_max": "4",
                    "serial": "abc123"},
                    "namespaces": [{"ana_grpid": 1, "device": {"nguid": "00000000-0000-0000-0000-000000000000",
                                    "path": "mem:1M", "uuid": "12345678-1234-1234-1234-123456789abc"},
                                    "enable": 1, "nsid": 1}],
                    "nqn": "nqn.2014-08.org.nvmexpress:uuid:0c1bcc4a-5d18-4b1f-8c3e-9f2b3a2b1c0d"}]
  })");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->ports[0].addr, "::1");
  EXPECT_EQ(r->ports[0].id, 2);
  EXPECT_EQ(r->subsystems[0].cntlid_min, 5);
  EXPECT_EQ(r->subsystems[0].cntlid_max, 100);
  EXPECT_EQ(r->subsystems[0].qid_max, 4);
  EXPECT_EQ(r->subsystems[0].serial, "abc123");
  EXPECT_EQ(r->subsystems[0].model, "Linux");
}

TEST(NvmeConfig, NqnSyntax) {
  for (const char* good : {"nqn.2014-08.org.nvmexpress.discovery", "nqn.2024-01.io.blkcopy:target",
                           "nqn.2014-08.org.nvmexpress:uuid:0c1bcc4a-5d18-4b1f-8c3e-9f2b3a2b1c0d"}) {
    EXPECT_TRUE(check_nqn(good, "nqn").ok()) << good;
  }
  for (const char* bad : {"", "nqn", "nqn.24-01.io.x", "nqn.2024-00.io.x", "nqn.2024-01.",
                          "nqn.2024-01.io.x:", "nqn.2024-01.io x", "iqn.2024-01.io.x"}) {
    EXPECT_FALSE(check_nqn(bad, "nqn").ok()) << bad;
  }
  EXPECT_FALSE(check_nqn("nqn.2024-01.io.x:" + std::string(220, 'a'), "nqn").ok());
}

TEST(NvmeConfig, HostPortStrings) {
  auto v4 = parse_host_port("127.0.0.1:4420", "--listen");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 4420);
  auto v6 = parse_host_port("[::1]:4421", "--listen");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 4421);
  auto dflt = parse_host_port("[fe80::1]", "discover", 8009);
  ASSERT_TRUE(dflt);
  EXPECT_EQ(dflt->port, 8009);
  struct Bad {
    const char* text;
    const char* want;
  };
  for (const Bad& b : {Bad{"127.0.0.1:abc", "--listen: port 'abc' must be a number from 1 to 65535"},
                       Bad{"127.0.0.1:99999", "port '99999' must be a number from 1 to 65535"},
                       Bad{"127.0.0.1:0", "port '0'"}, Bad{"127.0.0.1:", "port ''"},
                       Bad{"127.0.0.1:-1", "port '-1'"}, Bad{"::1:4420", "needs brackets"},
                       Bad{"[::1", "missing ']'"}, Bad{":4420", "missing host"},
                       Bad{"127.0.0.1", "expected HOST:PORT"}}) {
    auto r = parse_host_port(b.text, "--listen");
    ASSERT_FALSE(r) << b.text;
    EXPECT_NE(r.error().message().find(b.want), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace blkcopy

namespace blkcopy {
namespace {

// The NVMe TCP transport specification's example TLS key.
const std::string kTlsKey = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";

// The same checks from the command line: exit code 2 and the message, never an abort.
TEST(ServeCli, BadPortsAndConflictingFlagsAreRefused) {
  test::TempDir dir;
  const std::string typo = (dir.path() / "typo.json").string();
  {
    std::ofstream(typo) << config("", R"(, "namespace": [])");
  }
  const std::string key_file = (dir.path() / "tls.key").string();
  std::ofstream(key_file) << kTlsKey;
  struct Case {
    std::vector<std::string> args;
    const char* want;
  };
  const Case cases[] = {
      {{"serve", "--listen", "127.0.0.1:abc", "--ns", "mem:1M"},
       "--listen: port 'abc' must be a number from 1 to 65535"},
      {{"serve", "--listen", "127.0.0.1:99999", "--ns", "mem:1M"}, "port '99999'"},
      {{"serve", "--listen", "::1:4420", "--ns", "mem:1M"}, "needs brackets"},
      {{"serve", "--nqn", "target", "--ns", "mem:1M"}, "--nqn 'target' is not an NQN"},
      {{"serve", "--allow-host", "me", "--ns", "mem:1M"}, "--allow-host 'me' is not an NQN"},
      {{"serve", "--config", typo, "--ns", "mem:1M"}, "--config describes the whole target"},
      {{"serve", "--config", typo}, "subsystems[0].namespace: unknown key (--lenient skips it"},
      {{"discover", "127.0.0.1:abc"}, "discover: port 'abc' must be a number from 1 to 65535"},
      {{"discover", "127.0.0.1:70000"}, "port '70000'"},
      {{"discover", "127.0.0.1:8009", "--hostnqn", "me"}, "--hostnqn 'me' is not an NQN"},
      {{"serve", "--ns", "mem:1M", "--discovery-port", "70000"}, "--discovery-port: Value 70000"},
      {{"serve", "--ns", "mem:1M", "--cores", "0"}, "--cores: Value 0 not in range 1 to 64"},
      {{"serve", "--ns", "mem:1M", "--data-budget", "1k"}, "--data-budget (blkcopy.data_budget): 1024 bytes is below the least, 16M"},
      {{"serve", "--ns", "mem:1M", "--copy-budget", "abc"}, "--copy-budget: invalid size 'abc'"},
      {{"serve", "--ns", "mem:1M", "--drain-ms", "50"}, "--drain-ms: Value 50 not in range 100"},
      {{"serve", "--ns", "mem:1M", "--copy-budget", "1M"}, "two of an emulated Copy's 1 MiB chunks"},
      {{"serve", "--ns", "mem:1M", "--stats", "-1"}, "--stats: Value -1 not in range 0 to 86400"},
      {{"serve", "--ns", "mem:1M", "--tls", "required"}, "--tls needs --tls-key HOSTNQN=KEY"},
      {{"serve", "--ns", "mem:1M", "--tls", "sometimes"}, "--tls: sometimes not in {required,optional}"},
      {{"serve", "--ns", "mem:1M", "--tls-key", "nqn.2024-01.io.example:h"}, "--tls-key 'nqn.2024-01.io.example:h': expected HOSTNQN=SECRET"},
      {{"serve", "--ns", "mem:1M", "--tls-key", "nqn.2024-01.io.example:h=NVMeTLSkey-1:01:AAAA:"},
       "--tls-key nqn.2024-01.io.example:h: TLS PSK: the key is 0 bytes"},
      {{"serve", "--ns", "mem:1M", "--tls-key", "nqn.2024-01.io.example:h=" + kTlsKey, "--tls-key",
        "nqn.2024-01.io.example:h=" + kTlsKey},
       "--tls-key: nqn.2024-01.io.example:h is given twice"},
      {{"serve", "--ns", "mem:1M", "--tls-key", kTlsKey},
       "--tls-key '***': expected HOSTNQN=SECRET or HOSTNQN=@FILE (the host NQN is missing)"},
      {{"serve", "--ns", "mem:1M", "--tls-key", "nqn.2024-01.io.example:h=" + kTlsKey,
        "--tls-libnvme1", "nqn.2024-01.io.example:other"},
       "--tls-libnvme1 nqn.2024-01.io.example:other: that host has no TLS key"},
      {{"info", "nvme-tcp://127.0.0.1:1/nqn.2024-01.io.example:s?tls_key=" + kTlsKey +
                    "&tls_key_file=" + key_file},
       "give one of tls_key and tls_key_file"},
      {{"info", "nvme-tcp://127.0.0.1:1/nqn.2024-01.io.example:s?tls_libnvme1"},
       "tls_libnvme1 goes with tls_key or tls_key_file"},
      {{"serve", "--ns", "mem:1M", "--tls-key", "nqn.2024-01.io.example:h=@/nonexistent/key"},
       "--tls-key: cannot read /nonexistent/key"},
      {{"discover", "127.0.0.1:8009", "--tls-key", "NVMeTLSkey-1:01:AAAA:"}, "TLS PSK: the key is 0 bytes"},
      {{"discover", "127.0.0.1:8009", "--tls-key-file", "/nonexistent/key"}, "--tls-key-file: cannot read"},
  };
  for (const Case& c : cases) {
    auto r = test::run_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args[1] << " " << c.args.back() << ": " << r.err;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << r.err;
  }
}

// Linux nvmet's default: a subsystem in a JSON file admits only its allowed_hosts unless
// attr.allow_any_host is 1; one that admits nobody is said so.
TEST(NvmeConfig, AllowedHostsWithoutAllowAnyHostAdmitOnlyThem) {
  std::vector<std::string> warnings;
  auto cfg = nvme::parse_nvmetcli_json(R"({"subsystems": [
      {"nqn": "nqn.2024-01.io.example:listed", "allowed_hosts": ["nqn.2024-01.io.example:h1"]},
      {"nqn": "nqn.2024-01.io.example:nobody"},
      {"nqn": "nqn.2024-01.io.example:open", "attr": {"allow_any_host": "1"}}]})",
                                       false, &warnings);
  ASSERT_TRUE(cfg) << cfg.error().message();
  EXPECT_FALSE(cfg->subsystems[0].allow_any_host) << "listing hosts must not admit every host";
  EXPECT_FALSE(cfg->subsystems[1].allow_any_host);
  EXPECT_TRUE(cfg->subsystems[2].allow_any_host);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("subsystems[1]: no host may connect"), std::string::npos) << warnings[0];
}

// `serve --host-key H=...` without --allow-host admits the keyed hosts only (another NQN is
// refused before any data), unless --allow-any-host says others may come without a key.
TEST(ServeCli, AKeyForOneHostAdmitsOnlyKeyedHostsUnlessTold) {
  const std::string sub = "nqn.2024-01.io.blkcopy.test:keyed";
  const std::string keyed = "nqn.2024-01.io.blkcopy.test:keyed-host";
  const std::string other = "nqn.2024-01.io.blkcopy.test:other-host";
  const std::string key = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
  for (bool any : {false, true}) {
    const uint16_t port = test::free_port();
    std::vector<std::string> args{"serve", "--ns", "mem:1M", "--nqn", sub, "--listen",
                                  fmt::format("127.0.0.1:{}", port), "--discovery-port", "0",
                                  "--host-key", keyed + "=" + key};
    if (any) args.push_back("--allow-any-host");
    int status = -1;
    auto r = test::run_cli(args, SIGINT, 0, [&] {
      test::NvmeClient c;
      if (!c.open(port)) return false;  // not listening yet
      status = c.connect(0, sub, other).status;
      return true;
    });
    ASSERT_NE(status, -1) << "serve never listened: " << r.err;
    if (any) {
      EXPECT_EQ(status, 0) << "--allow-any-host";
    } else {
      EXPECT_EQ(status, nvme::status::kConnectInvalidHost) << "a host without a key got in";
    }
  }
}

// A subsystem open to any host on an address others can reach is said so at start.
TEST(ServeCli, AnOpenSubsystemOnANonLoopbackAddressIsWarnedOf) {
  const uint16_t port = test::free_port();
  bool up = false;
  auto r = test::run_cli({"serve", "--ns", "mem:1M", "--listen", fmt::format("0.0.0.0:{}", port),
                          "--discovery-port", "0"},
                         SIGINT, 0, [&] {
                           test::NvmeClient c;
                           return up = c.open(port);
                         });
  ASSERT_TRUE(up) << r.err;
  EXPECT_NE(r.err.find("admits any host on 0.0.0.0:"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace blkcopy
