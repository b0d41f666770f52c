// What is served, changed while the target runs and hosts stay connected (ctl add-ns,
// remove-ns, resize-ns, add-subsystem, remove-subsystem, add-port, remove-port, and serve's
// SIGHUP reload): a connected controller gets the Namespace Attribute Changed event and log 04h;
// a namespace removed with a command in flight lets that command finish; other hosts' I/O goes
// on; every refusal names what is wrong and exits 2.
#include <gtest/gtest.h>

#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "nvme/codec.h"
#include "nvme/status.h"
#include "tests/scripted_target.h"
#include "tests/served_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using nlohmann::json;
using namespace nvme;

const std::string kSub = "nqn.2024-01.io.blkcopy:live";
const std::string kOther = "nqn.2024-01.io.blkcopy:other";
const std::string kHost = "nqn.2024-01.io.blkcopy:live-host";

// Two event loops: connections on the second reach namespaces through channels, so a removal
// meets requests on another thread (the ThreadSanitizer run covers these tests).
TargetConfig config() {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.cores = 2;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}, PortTls::none});
  cfg.subsystems.push_back({kSub, true, {}, {{1, "mem:8M,seed=4", "", true}}});
  return cfg;
}

struct Ctl {
  std::string sock;
  test::Run operator()(std::vector<std::string> args) const {
    args.insert(args.begin(), {"ctl", "--socket", sock});
    return test::run_cli(args);
  }
  json ok(std::vector<std::string> args) const {
    args.insert(args.begin(), "--json");
    const test::Run r = (*this)(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json();
  }
};

using test::eventually;

std::vector<uint32_t> active_namespaces(test::NvmeClient& admin) {
  std::vector<uint8_t> page;
  std::vector<uint32_t> out;
  if (admin.identify(kCnsActiveNsList, 0, page).status != 0 || page.size() < 4096) return {0xDEAD};
  for (size_t i = 0; i < 1024; ++i) {
    uint32_t id;
    std::memcpy(&id, page.data() + 4 * i, 4);
    if (id) out.push_back(id);
  }
  return out;
}

uint64_t namespace_blocks(test::NvmeClient& admin, uint32_t nsid) {
  std::vector<uint8_t> page;
  if (admin.identify(kCnsNamespace, nsid, page).status != 0 || page.size() < 8) return ~0ull;
  uint64_t nsze;
  std::memcpy(&nsze, page.data(), 8);
  return nsze;
}

// Log 04h: the namespace IDs it lists (RAE 0: the list empties).
std::vector<uint32_t> changed_log(test::NvmeClient& admin) {
  Sqe sqe{};
  sqe.opcode = admin::kGetLogPage;
  sqe.nsid = 0xFFFFFFFF;
  sqe.cdw10 = kLogChangedNs | ((4096 / 4 - 1) << 16);
  std::vector<uint8_t> page;
  if (admin.command(sqe, {}, &page, 4096).status != 0) return {0xDEAD};
  std::vector<uint32_t> out;
  for (size_t i = 0; i + 4 <= page.size(); i += 4) {
    uint32_t id;
    std::memcpy(&id, page.data() + i, 4);
    if (id) out.push_back(id);
  }
  return out;
}

// Namespace Attribute Notices on, and one Asynchronous Event Request waiting.
void await_events(test::NvmeClient& admin) {
  Sqe aec{};
  aec.opcode = admin::kSetFeatures;
  aec.cdw10 = kFeatAsyncEvent;
  aec.cdw11 = kAenNamespaceAttribute;
  ASSERT_EQ(admin.command(aec).status, 0);
  Sqe aer{};
  aer.opcode = admin::kAsyncEvent;
  ASSERT_NE(admin.send_command(aer), 0);
}

std::vector<uint8_t> bytes_of(const test::Bytes& b) {
  std::vector<uint8_t> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

TEST(CtlConfig, NamespacesAreAddedResizedAndRemovedWhileHostsStayConnected) {
  test::TempDir dir;
  const Ctl ctl{(dir.path() / "c.sock").string()};
  test::Served t(config(), ctl.sock);
  test::Host h;
  ASSERT_TRUE(h.connect(t.port(), kSub, kHost));
  await_events(h.admin);
  // Another host on namespace 1 the whole time, through blkcopy's own host.
  auto loop = test::make_loop();
  auto other = open_device(*loop, fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}", t.port(),
                                              kSub, kOther));
  ASSERT_TRUE(other) << other.error().message();

  // A file namespace: its data is the file's.
  const std::string file = dir.file("ns2.img", 4u << 20, 77);
  const json added = ctl.ok({"add-ns", kSub, "file:" + file});
  ASSERT_EQ(added["nsid"], 2) << added.dump();
  auto event = h.admin.next_completion(30000);
  ASSERT_TRUE(event) << "no Namespace Attribute Changed event";
  EXPECT_EQ(event->status, 0);
  EXPECT_EQ(event->dw0, kAenNamespaceChanged);
  EXPECT_EQ(changed_log(h.admin), std::vector<uint32_t>{2});
  EXPECT_TRUE(changed_log(h.admin).empty()) << "read with RAE 0, the list empties";
  EXPECT_EQ(active_namespaces(h.admin), (std::vector<uint32_t>{1, 2}));
  std::vector<uint8_t> got;
  ASSERT_EQ(h.io.read(2, 100, 16, 512, got).status, 0);
  EXPECT_EQ(got, bytes_of(test::pattern(100 * 512, 16 * 512, 77)));

  // Grown on disk, then resized: the new size is served, with the event again.
  await_events(h.admin);
  std::filesystem::resize_file(file, 6u << 20);
  const json resized = ctl.ok({"resize-ns", kSub, "2"});
  EXPECT_EQ(resized["bytes"], 6u << 20);
  event = h.admin.next_completion(30000);
  ASSERT_TRUE(event) << "no event for the resize";
  EXPECT_EQ(event->dw0, kAenNamespaceChanged);
  EXPECT_EQ(namespace_blocks(h.admin, 2), (6u << 20) / 512);
  EXPECT_EQ(changed_log(h.admin), std::vector<uint32_t>{2});
  ASSERT_EQ(h.io.read(2, 0, 8, 512, got).status, 0) << "the old queue reads the new namespace";
  EXPECT_EQ(got, bytes_of(test::pattern(0, 8 * 512, 77)));

  // Refusals, each naming what is wrong; nothing changes.
  auto refused = [&](std::vector<std::string> args, const std::string& why) {
    const test::Run r = ctl(args);
    EXPECT_EQ(r.exit_code, 2) << fmt::format("{}", fmt::join(args, " "));
    EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
  };
  refused({"resize-ns", kSub, "1"}, "holds its data in memory");
  refused({"add-ns", kSub, "mem:1M", "--nsid", "2"}, "has a namespace 2 already");
  refused({"add-ns", "nqn.2024-01.io.blkcopy:nope", "mem:1M"}, "no subsystem");
  refused({"add-ns", kSub, "file:" + (dir.path() / "missing").string()}, "missing");
  refused({"remove-ns", kSub, "9"}, "has no namespace 9");
  refused({"add-ns", kSub, "mem:1M", "--nsid", "4294967295"}, "4294967294");

  // Removed: the host is told, the namespace is gone from its list and its commands fail with
  // Invalid Namespace; the other host's copies on namespace 1 go on.
  await_events(h.admin);
  ASSERT_EQ(ctl({"remove-ns", kSub, "2"}).exit_code, 0);
  event = h.admin.next_completion(30000);
  ASSERT_TRUE(event) << "no event for the removal";
  EXPECT_EQ(changed_log(h.admin), std::vector<uint32_t>{2});
  EXPECT_EQ(active_namespaces(h.admin), std::vector<uint32_t>{1});
  EXPECT_EQ(h.io.read(2, 0, 8, 512, got).status, status::kInvalidNamespace);
  const test::Bytes before = test::read_bytes(**other, 0, 64 << 10);
  ASSERT_TRUE(copy(**other, 0, **other, 1 << 20, 64 << 10).status.ok());
  EXPECT_EQ(test::read_bytes(**other, 1 << 20, 64 << 10), before);
  const json listed = ctl.ok({"list"});
  EXPECT_EQ(listed["subsystems"][0]["namespaces"].size(), 1u) << listed.dump();
}

// A namespace removed while a command on it is in flight (a device that answers after 1 s):
// the command finishes with its status and data, the namespace goes after it, nothing hangs.
TEST(CtlConfig, ANamespaceRemovedWithACommandInFlightLetsItFinish) {
  test::TempDir dir;
  const Ctl ctl{(dir.path() / "c.sock").string()};
  TargetConfig cfg = config();
  cfg.subsystems[0].namespaces.push_back({2, "mem:1M,seed=8,latency=1s", "", true});
  test::Served t(cfg, ctl.sock);
  test::Host h;
  ASSERT_TRUE(h.connect(t.port(), kSub, kHost));
  const uint64_t before = t.stats().commands;
  auto read = std::async(std::launch::async, [&] {
    std::vector<uint8_t> got;
    const test::Completion c = h.io.read(2, 8, 8, 512, got);
    return std::pair(c, got);
  });
  // The read has reached the target (commands are counted as they start).
  ASSERT_TRUE(eventually([&] { return t.stats().commands > before; }));
  ASSERT_EQ(ctl({"remove-ns", kSub, "2"}).exit_code, 0);
  ASSERT_EQ(read.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "the read hangs";
  const auto [c, got] = read.get();
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(got, bytes_of(test::pattern(8 * 512, 8 * 512, 8)));
  std::vector<uint8_t> again;
  EXPECT_EQ(h.io.read(2, 8, 8, 512, again).status, status::kInvalidNamespace);
  EXPECT_EQ(h.io.read(1, 0, 8, 512, again).status, 0);
}

TEST(CtlConfig, SubsystemsAndPortsComeAndGo) {
  test::TempDir dir;
  const Ctl ctl{(dir.path() / "c.sock").string()};
  test::Served t(config(), ctl.sock);
  auto loop = test::make_loop();
  auto spec = [&](uint16_t port) {
    return fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}&reconnect=0", port, kOther, kHost);
  };
  EXPECT_FALSE(open_device(*loop, spec(t.port()))) << "not served yet";

  const json sub = ctl.ok({"add-subsystem", kOther, "--host", kHost, "--ns", "mem:4M,seed=9", "--port", "1"});
  EXPECT_EQ(sub["namespaces"], 1);
  auto dev = open_device(*loop, spec(t.port()));
  ASSERT_TRUE(dev) << dev.error().message();
  EXPECT_EQ(test::read_bytes(**dev, 4096, 4096), test::pattern(4096, 4096, 9));
  const json listed = ctl.ok({"list"});
  EXPECT_EQ(listed["ports"][0]["subsystems"], json::array({kSub, kOther}));

  // A second port; a host that came through it is closed when it goes.
  const json port = ctl.ok({"add-port", "127.0.0.1", "0", "--id", "7", "--subsystem", kOther});
  EXPECT_EQ(port["id"], 7);
  const uint16_t second = port["port"].get<uint16_t>();
  auto via = open_device(*loop, spec(second));
  ASSERT_TRUE(via) << via.error().message();
  EXPECT_EQ(test::read_bytes(**via, 0, 4096), test::pattern(0, 4096, 9));
  ASSERT_EQ(ctl({"remove-port", "7"}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return !copy(**via, 0, **via, 1 << 20, 4096).status.ok(); }))
      << "a connection through the removed port still works";
  EXPECT_FALSE(open_device(*loop, spec(second))) << "the removed port still listens";

  auto refused = [&](std::vector<std::string> args, const std::string& why) {
    const test::Run r = ctl(args);
    EXPECT_EQ(r.exit_code, 2) << fmt::format("{}", fmt::join(args, " "));
    EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
  };
  refused({"add-subsystem", kOther}, "served already");
  refused({"add-subsystem", "not-an-nqn"}, "not an NQN");
  refused({"add-subsystem", "nqn.2024-01.io.blkcopy:x", "--port", "99"}, "no port 99");
  refused({"add-port", "localhost", "0"}, "numeric");
  refused({"add-port", "127.0.0.1", std::to_string(t.port())}, "in use");
  refused({"add-port", "127.0.0.1", "0", "--id", "1"}, "port ID 1");
  refused({"remove-port", "99"}, "no port 99");
  refused({"remove-subsystem", "nqn.2024-01.io.blkcopy:x"}, "no subsystem");
  const test::Run note = ctl({"add-subsystem", "nqn.2024-01.io.blkcopy:closed", "--port", "1"});
  EXPECT_EQ(note.exit_code, 0) << note.err;
  EXPECT_NE(note.out.find("no host may connect yet"), std::string::npos) << note.out;

  // A subsystem on no port is reached once linked to one, and no longer once unlinked: the
  // host that came through the port is disconnected, as Linux nvmet does.
  const std::string kThird = "nqn.2024-01.io.blkcopy:third";
  const test::Run unlinked = ctl({"add-subsystem", kThird, "--allow-any-host", "--ns", "mem:1M,seed=3"});
  EXPECT_NE(unlinked.out.find("no port serves it yet: ctl link-port"), std::string::npos) << unlinked.out;
  auto third = [&] {
    return open_device(*loop, fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}&reconnect=0",
                                          t.port(), kThird, kHost));
  };
  auto before = third();
  ASSERT_FALSE(before);
  EXPECT_NE(before.error().message().find("0x182"), std::string::npos) << before.error().message();
  ASSERT_EQ(ctl({"link-port", "1", kThird}).exit_code, 0);
  refused({"link-port", "1", kThird}, "serves " + kThird + " already");
  auto linked = third();
  ASSERT_TRUE(linked) << linked.error().message();
  EXPECT_EQ(test::read_bytes(**linked, 0, 4096), test::pattern(0, 4096, 3));
  ASSERT_EQ(ctl({"unlink-port", "1", kThird}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return !copy(**linked, 0, **linked, 512 << 10, 4096).status.ok(); }))
      << "a host that came through the port still reaches the unlinked subsystem";
  EXPECT_FALSE(third());
  refused({"unlink-port", "9", kThird}, "no port 9");

  // Removed: its controllers go, and it is refused.
  ASSERT_EQ(ctl({"remove-subsystem", kOther}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return !copy(**dev, 0, **dev, 1 << 20, 4096).status.ok(); }));
  EXPECT_FALSE(open_device(*loop, spec(t.port())));
  const json after = ctl.ok({"list"});
  EXPECT_EQ(after["ports"][0]["subsystems"], json::array({kSub, "nqn.2024-01.io.blkcopy:closed"}));
}

// serve --config reloads its file on SIGHUP: the difference is applied (a namespace added, a
// disabled one enabled, a host admitted, a port moved); a file whose new device does not open,
// or that does not validate, changes nothing.
TEST(CtlConfig, SighupReloadsTheConfigurationFile) {
  test::TempDir dir;
  const std::string sock = (dir.path() / "c.sock").string(), file = (dir.path() / "t.json").string();
  const Ctl ctl{sock};
  const uint16_t port = test::free_port();
  uint16_t moved = test::free_port();
  while (moved == port) moved = test::free_port();
  TargetConfig cfg = config();
  cfg.ports[0].port = port;
  cfg.subsystems[0].allow_any_host = false;
  cfg.subsystems[0].allowed_hosts = {kHost};
  cfg.subsystems[0].namespaces.push_back({7, "mem:1M", "", false});  // staged, disabled
  std::ofstream(file) << to_nvmetcli_json(cfg);
  json first, stats, after, partial;
  std::string failure;
  uint64_t reloads = 0;
  auto reload = [&](pid_t pid, const TargetConfig& c, const std::string& raw, uint64_t failures) {
    std::ofstream(file) << (raw.empty() ? to_nvmetcli_json(c) : raw);
    ::kill(pid, SIGHUP);
    ++reloads;
    return eventually([&] {
      stats = json::parse(ctl({"--json", "stats"}).out);
      return stats["reloads"] == reloads && stats["reload_failures"] == failures;
    });
  };
  const test::Run r = test::run_cli(
      {"serve", "--config", file, "--rpc", sock, "--discovery-port", "0"}, SIGTERM, 0, [&] {
        const test::Run l = ctl({"--json", "list"});
        if (l.exit_code != 0) return false;  // not serving yet
        const pid_t pid = json::parse(l.out)["pid"];
        cfg.subsystems[0].namespaces.push_back({5, "mem:2M", "", true});
        cfg.subsystems[0].namespaces[1].enable = true;  // nsid 7
        cfg.subsystems[0].allowed_hosts.push_back(kOther);
        cfg.ports[0].port = moved;
        if (!reload(pid, cfg, "", 0)) failure = "the reload did not happen: " + stats.dump();
        first = json::parse(ctl({"--json", "list"}).out);
        // A device that does not open: nothing changes, the new namespace 6 included.
        TargetConfig broken = cfg;
        broken.subsystems[0].namespaces[2].device = "file:" + (dir.path() / "missing").string();
        broken.subsystems[0].namespaces.push_back({6, "mem:1M", "", true});
        if (!reload(pid, broken, "", 1)) failure += " the failed reload is not counted: " + stats.dump();
        EXPECT_NE(stats["last_reload"].get<std::string>().find("nothing changed"), std::string::npos)
            << stats.dump();
        if (!reload(pid, cfg, R"({"subsystems": [{"nqn": "bad"}]})", 2)) failure += " bad: " + stats.dump();
        EXPECT_NE(stats["last_reload"].get<std::string>().find("not an NQN"), std::string::npos) << stats.dump();
        after = json::parse(ctl({"--json", "list"}).out);
        // A port that cannot listen (its address is taken) fails alone: the rest is made, and
        // both are said.
        TargetConfig partly = cfg;
        partly.ports.push_back({2, "127.0.0.1", moved, {kSub}, PortTls::none});
        partly.subsystems[0].namespaces.push_back({6, "mem:1M", "", true});
        if (!reload(pid, partly, "", 3)) failure += " partly: " + stats.dump();
        EXPECT_NE(stats["last_reload"].get<std::string>().find("1 failed"), std::string::npos) << stats.dump();
        partial = json::parse(ctl({"--json", "list"}).out);
        return true;
      });
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(failure.empty()) << failure << r.err;
  EXPECT_EQ(first["subsystems"][0]["allowed_hosts"], json::array({kHost, kOther}));
  std::vector<uint32_t> nsids;
  for (const json& n : first["subsystems"][0]["namespaces"]) nsids.push_back(n["nsid"]);
  EXPECT_EQ(nsids, (std::vector<uint32_t>{1, 5, 7})) << first.dump();
  EXPECT_EQ(first["ports"][0]["port"], moved);
  EXPECT_NE(r.err.find("reload: " + kSub + " namespace 5 added"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("reload: port 1 added"), std::string::npos) << r.err;
  EXPECT_EQ(after, first) << "a failed reload changed something";
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
  EXPECT_EQ(partial["subsystems"][0]["namespaces"].size(), 4u) << partial.dump();
  EXPECT_EQ(partial["ports"].size(), 1u) << partial.dump();
  EXPECT_NE(r.err.find("reload: " + kSub + " namespace 6 added"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("reload: failed: "), std::string::npos) << r.err;
}

// One change at a time: while an add-ns waits for a remote device that does not answer, another
// change is refused (EBUSY) rather than begun inside it; reads go on; the add-ns fails cleanly.
TEST(CtlConfig, AChangeWaitingForADeviceHoldsOffOthers) {
  test::TempDir dir;
  const Ctl ctl{(dir.path() / "c.sock").string()};
  test::Served t(config(), ctl.sock);
  std::atomic<bool> connecting{false}, release{false};
  test::ScriptedTarget stall([&](int fd, const Sqe&) {  // takes the Connect, never answers
    connecting = true;
    (void)eventually([&] { return release.load(); });
    ::shutdown(fd, SHUT_RDWR);
  });
  auto slow = std::async(std::launch::async, [&] {
    return ctl({"add-ns", kSub, fmt::format("nvme-tcp://127.0.0.1:{}/nqn.2024-01.io.blkcopy:far?ns=1&reconnect=0",
                                             stall.port())});
  });
  ASSERT_TRUE(eventually([&] { return connecting.load(); }));
  const test::Run busy = ctl({"remove-ns", kSub, "1"});
  EXPECT_NE(busy.exit_code, 0);
  EXPECT_NE(busy.err.find("another change"), std::string::npos) << busy.err;
  EXPECT_EQ(ctl({"list"}).exit_code, 0) << "looking is not a change";
  release = true;
  stall.join();
  const test::Run r = slow.get();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("fabrics Connect"), std::string::npos) << r.err;
  EXPECT_EQ(ctl({"remove-ns", kSub, "1"}).exit_code, 0) << "the next change goes ahead";
}

// As Linux nvmet links subsystems to ports: a host reaches only the subsystems listed on the
// port it came through.
// One file served as two namespaces (at start, or added later through another subsystem) is
// warned about, naming both; two RAM devices are two devices.
TEST(CtlConfig, TheSameFileAsTwoNamespacesIsWarnedAbout) {
  test::TempDir dir;
  const std::string file = dir.file("shared", 4 << 20, 12);
  Ctl ctl{(dir.path() / "ctl.sock").string()};
  TargetConfig cfg = config();
  cfg.subsystems[0].namespaces.push_back({2, "file:" + file, "", true});
  cfg.subsystems[0].namespaces.push_back({3, "mem:8M,seed=4", "", true});
  test::LogCapture log;
  test::Served t(cfg, ctl.sock);
  EXPECT_FALSE(log.has("same storage")) << "one file, one RAM device of the same string twice";
  ctl.ok({"add-subsystem", kOther, "--allow-any-host", "--ns", file});
  EXPECT_TRUE(eventually([&] { return log.has(kOther + " namespace 1 is the same storage as " + kSub + " namespace 2"); }));
  ctl.ok({"add-ns", kSub, file});
  EXPECT_TRUE(eventually([&] { return log.has(kSub + " namespace 4 is the same storage as " + kSub + " namespace 2"); }));
}

TEST(CtlConfig, APortServesOnlyItsSubsystems) {
  TargetConfig cfg = config();
  cfg.ports.push_back({2, "127.0.0.1", 0, {kOther}, PortTls::none});
  cfg.subsystems.push_back({kOther, true, {}, {{1, "mem:1M", "", true}}});
  test::Served t(cfg);
  auto loop = test::make_loop();
  auto spec = [&](uint16_t port, const std::string& nqn) {
    return fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}&reconnect=0", port, nqn, kHost);
  };
  EXPECT_TRUE(open_device(*loop, spec(t.ports()[0], kSub)));
  EXPECT_TRUE(open_device(*loop, spec(t.ports()[1], kOther)));
  auto wrong = open_device(*loop, spec(t.ports()[0], kOther));
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find(kOther), std::string::npos) << wrong.error().message();
}

// A configuration is checked whole: namespace IDs used twice, an NGUID that is not one, port
// IDs used twice.
TEST(CtlConfig, ValidateRefusesDuplicateIds) {
  TargetConfig twice = config();
  twice.subsystems[0].namespaces.push_back({1, "mem:1M", "", true});
  EXPECT_NE(validate(twice).message().find("namespaces[1].nsid: 1 is used twice"), std::string::npos)
      << validate(twice).message();
  TargetConfig nguid = config();
  nguid.subsystems[0].namespaces[0].nguid = "12";
  EXPECT_NE(validate(nguid).message().find("'12' is not 32 hex digits"), std::string::npos);
  TargetConfig ports = config();
  ports.ports.push_back(ports.ports[0]);
  EXPECT_NE(validate(ports).message().find("ports[1].portid: 1 is used twice"), std::string::npos);
}

}  // namespace
}  // namespace blkcopy
