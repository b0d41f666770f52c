// Files `nvmetcli save` wrote on Linux 6.1 and 6.12 (tests/data/nvmetcli/, made in the QEMU guest
// by tests/interop/nvmetcli.sh with nvmetcli's own code), read unchanged: every attribute
// nvmetcli saves is either honoured, noted in one line where blkcopy does not act on it and
// that is harmless, or refused with the reason where it would change what a host gets.
#include <gtest/gtest.h>

#include <blkcopy/target.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace blkcopy {
namespace {

using namespace nvme;

std::string fixture(const std::string& name) {
  std::stringstream s;
  s << std::ifstream(std::string(BLKCOPY_SOURCE_DIR) + "/tests/data/nvmetcli/" + name).rdbuf();
  return s.str();
}

bool has(const std::vector<std::string>& notes, const std::string& what) {
  return std::any_of(notes.begin(), notes.end(), [&](const auto& n) { return n.find(what) != n.npos; });
}

// The discovery port, which nvmetcli has no word for, goes into blkcopy's own key when it is not
// the default, and comes back (ctl save, then serve --config).
TEST(NvmetcliFiles, TheDiscoveryPortIsSavedInBlkcopysKey) {
  TargetConfig cfg;
  cfg.ports.push_back({1, "127.0.0.1", 4420, {}, PortTls::none});
  const std::string plain = to_nvmetcli_json(cfg);
  EXPECT_EQ(plain.find("discovery_port"), std::string::npos) << "the default is not written";
  for (uint16_t port : {uint16_t(0), uint16_t(4555)}) {
    cfg.discovery_port = port;
    const std::string text = to_nvmetcli_json(cfg);
    EXPECT_EQ(nlohmann::json::parse(text)["blkcopy"]["discovery_port"], port) << text;
    auto back = parse_nvmetcli_json(text);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->discovery_port, port);
  }
  auto bad = parse_nvmetcli_json(R"({"hosts": [], "ports": [], "subsystems": [], "blkcopy": {"discovery_port": 70000}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("discovery_port"), std::string::npos) << bad.error().message();
}

TEST(NvmetcliFiles, Linux61SavedFileIsServedWithNotes) {
  const std::string text = fixture("linux-6.1.json");
  ASSERT_FALSE(text.empty());
  std::vector<std::string> notes;
  auto cfg = parse_nvmetcli_json(text, false, &notes);
  ASSERT_TRUE(cfg) << cfg.error().message();
  ASSERT_EQ(cfg->subsystems.size(), 1u);
  const SubsystemConfig& s = cfg->subsystems[0];
  EXPECT_EQ(s.nqn, "nqn.2024-01.io.blkcopy:from-nvmet");
  EXPECT_FALSE(s.allow_any_host);
  EXPECT_EQ(s.allowed_hosts, std::vector<std::string>{"nqn.2014-08.io.blkcopy:guest-host"});
  EXPECT_EQ(s.qid_max, 8) << "Linux's 128, taken as blkcopy's most";
  EXPECT_EQ(s.model, "Linux");
  EXPECT_EQ(s.serial, "f9d50da4a1be0c06859f");
  ASSERT_EQ(s.namespaces.size(), 1u);
  EXPECT_EQ(s.namespaces[0].device, "/tmp/backing");
  EXPECT_EQ(s.namespaces[0].uuid, "c2a9c34d-8280-468f-b255-89eb714f4db4");
  ASSERT_EQ(cfg->ports.size(), 1u);
  EXPECT_EQ(cfg->ports[0].port, 4420);
  EXPECT_EQ(cfg->ports[0].tls, PortTls::none);
  EXPECT_TRUE(cfg->hosts.empty()) << "a host without keys is only an allowed NQN";
  EXPECT_TRUE(has(notes, "subsystems[0].attr.qid_max: '128' taken as 8")) << notes.size();
  EXPECT_TRUE(has(notes, "subsystems[0].attr.version: '1.3' noted only"));
  EXPECT_TRUE(has(notes, "ports[0].param.inline_data_size: '16384' noted only"));
  EXPECT_EQ(notes.size(), 3u) << "one line each, nothing else";
}

TEST(NvmetcliFiles, Linux612SavedFileNeedsOnlyItsTlsKeys) {
  const std::string text = fixture("linux-6.12.json");
  ASSERT_FALSE(text.empty());
  // Its TLS port's keys are in Linux's keyring, not in the file: refused, saying so.
  auto as_saved = parse_nvmetcli_json(text);
  ASSERT_FALSE(as_saved);
  EXPECT_NE(as_saved.error().message().find("Linux keeps them in its .nvme keyring"), std::string::npos)
      << as_saved.error().message();
  // With the host's TLS key added, everything else is taken as saved.
  auto j = nlohmann::json::parse(text);
  j["hosts"][0]["tls_key"] = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
  std::vector<std::string> notes;
  auto cfg = parse_nvmetcli_json(j.dump(), false, &notes);
  ASSERT_TRUE(cfg) << cfg.error().message();
  ASSERT_EQ(cfg->hosts.size(), 1u);
  EXPECT_EQ(cfg->hosts[0].key.rfind("DHHC-1:00:", 0), 0u) << "its DH-HMAC-CHAP key";
  EXPECT_TRUE(cfg->hosts[0].ctrl_key.empty());
  ASSERT_EQ(cfg->ports.size(), 2u);
  EXPECT_EQ(cfg->ports[0].tls, PortTls::required);
  EXPECT_EQ(cfg->ports[1].tls, PortTls::none);
  for (const char* n : {"attr.firmware: '6.12.95+' noted only", "attr.ieee_oui: '0x000000' noted only",
                        "param.max_queue_size: '1024' noted only", "attr.qid_max: '128' taken as 8"}) {
    EXPECT_TRUE(has(notes, n)) << n;
  }
  // What would change behaviour is refused by name.
  auto passthru = j;
  passthru["subsystems"][0]["passthru"][0]["device"]["path"] = "/dev/nvme0";
  auto p = parse_nvmetcli_json(passthru.dump());
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("passthru[0].device.path"), std::string::npos) << p.error().message();
  auto resv = j;
  resv["subsystems"][0]["namespaces"][0]["resv"]["enable"] = "1";
  auto r = parse_nvmetcli_json(resv.dump());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("reservations are not served"), std::string::npos) << r.error().message();
  auto disc = j;
  disc["discovery"]["nqn"] = "nqn.2024-01.io.example:my-discovery";
  EXPECT_FALSE(parse_nvmetcli_json(disc.dump()));
}

}  // namespace
}  // namespace blkcopy
