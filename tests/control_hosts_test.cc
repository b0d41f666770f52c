// Hosts admitted and keyed while the target runs (ctl add-host, remove-host): a host refused at
// Connect gets in once admitted; a host given a DH-HMAC-CHAP key must then authenticate; a
// removed host's controller is disconnected and it is refused again; `ctl save` follows.
#include <gtest/gtest.h>

#include <blkcopy/open.h>
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/served_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using nlohmann::json;
using namespace nvme;

const std::string kSub = "nqn.2024-01.io.blkcopy:hosts";
const std::string kFirst = "nqn.2024-01.io.blkcopy:first";
const std::string kLate = "nqn.2024-01.io.blkcopy:late";
const std::string kKey = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";

TEST(CtlHosts, HostsAreAdmittedKeyedAndRemovedWhileTheTargetRuns) {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}, PortTls::none});
  cfg.subsystems.push_back({kSub, false, {kFirst}, {{1, "mem:8M", "", true}}});
  test::TempDir dir;
  const std::string sock = (dir.path() / "c.sock").string();
  test::Served t(cfg, sock);
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"ctl", "--socket", sock});
    return test::run_cli(args);
  };
  auto loop = test::make_loop();
  auto spec = [&](const std::string& host, const std::string& extra) {
    return fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}{}", t.port(), kSub, host, extra);
  };
  auto refused = open_device(*loop, spec(kLate, ""));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("not allowed"), std::string::npos) << refused.error().message();
  // The CLI's exit codes: refused by the target (6) and unreachable (5) are not bad input (2).
  const auto not_allowed = test::run_cli({"info", spec(kLate, "")});
  EXPECT_EQ(not_allowed.exit_code, 6) << not_allowed.err;
  const auto wrong_nqn = test::run_cli(
      {"info", fmt::format("nvme-tcp://127.0.0.1:{}/nqn.2024-01.io.blkcopy:nope?ns=1", t.port())});
  EXPECT_EQ(wrong_nqn.exit_code, 2) << wrong_nqn.err;
  const auto nobody = test::run_cli({"info", "nvme-tcp://127.0.0.1:1/" + kSub + "?ns=1&reconnect=0"});
  EXPECT_EQ(nobody.exit_code, 5) << nobody.err;

  ASSERT_EQ(ctl({"add-host", kLate, "--subsystem", kSub}).exit_code, 0);
  auto late = open_device(*loop, spec(kLate, ""));
  ASSERT_TRUE(late) << late.error().message();
  late->reset();

  // A key: from the next Connect on it must authenticate.
  const auto keyed = ctl({"add-host", kLate, "--dhchap-key", kKey});
  ASSERT_EQ(keyed.exit_code, 0) << keyed.err;
  auto no_key = open_device(*loop, spec(kLate, "&reconnect=0"));
  ASSERT_FALSE(no_key);
  EXPECT_NE(no_key.error().message().find("authentication"), std::string::npos) << no_key.error().message();
  auto with_key = open_device(*loop, spec(kLate, "&dhchap_secret=" + kKey));
  ASSERT_TRUE(with_key) << with_key.error().message();
  EXPECT_EQ(ctl({"add-host", kLate, "--dhchap-key", "DHHC-1:00:bad:"}).exit_code, 2) << "a bad key";

  // Removed: its controller is disconnected (its I/O fails, waited for), and it is refused.
  const auto gone = ctl({"--json", "remove-host", kLate});
  ASSERT_EQ(gone.exit_code, 0) << gone.err;
  EXPECT_EQ(json::parse(gone.out)["disconnected"], 1);
  EXPECT_TRUE(test::eventually([&] { return !copy(**with_key, 0, **with_key, 1 << 20, 4096).status.ok(); }))
      << "the removed host still reaches its controller";
  EXPECT_FALSE(open_device(*loop, spec(kLate, "&dhchap_secret=" + kKey)));
  EXPECT_EQ(ctl({"remove-host", kLate}).exit_code, 2) << "nothing left to remove";
  EXPECT_EQ(ctl({"add-host", kLate, "--subsystem", "nqn.2024-01.io.blkcopy:none"}).exit_code, 2);
  EXPECT_EQ(ctl({"add-host", "not-an-nqn", "--subsystem", kSub}).exit_code, 2);

  const json listed = json::parse(ctl({"--json", "list"}).out);
  EXPECT_EQ(listed["subsystems"][0]["allowed_hosts"], json::array({kFirst}));
  EXPECT_TRUE(listed["hosts"].empty());
}

}  // namespace
}  // namespace blkcopy
