// The NVMe/TCP host driver against blkcopy's target over loopback: every request type checked
// against the original data, copies offloaded with almost nothing on the wire, vectored and
// cross-namespace copies, limits honoured, a controller without Copy emulated, and a target that
// goes away mid-copy.
#include "nvme/host/nvme_tcp_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include <blkcopy/target.h>
#include "tests/test_util.h"
#include "tools/target_report.h"

namespace blkcopy {
namespace {

using test::Bytes;
constexpr uint64_t K = 1024, M = 1024 * 1024;
const std::string kNqn = "nqn.2024-01.io.blkcopy.test:host-driver";

// A target on its own thread serving `namespaces`; stop() ends it (and its connections).
class TargetThread {
 public:
  explicit TargetThread(std::vector<std::string> namespaces, uint16_t fixed_port = 0) {
    // The promise moves into the thread: one on this stack could be destroyed while the
    // thread is still inside set_value().
    std::promise<uint16_t> ready;
    auto port = ready.get_future();
    thread_ = std::thread([this, ready = std::move(ready), namespaces, fixed_port]() mutable {
      auto loop = EventLoop::create().value();
      nvme::TargetConfig cfg;
      cfg.discovery_port = 0;
      cfg.ports.push_back({1, "127.0.0.1", fixed_port, {kNqn}});
      nvme::SubsystemConfig sub{kNqn, true, {}, {}};
      for (size_t i = 0; i < namespaces.size(); ++i) {
        sub.namespaces.push_back({static_cast<uint32_t>(i + 1), namespaces[i], "", true});
      }
      cfg.subsystems.push_back(sub);
      {
        auto target = nvme::Target::create(*loop, cfg).value();
        if (!target->start().ok()) std::abort();
        ready.set_value(target->bound_ports()[0]);
        (void)loop->run_until([this] { return stop_.load(); });
      }  // the target and its sockets go with the thread
    });
    port_ = port.get();
  }
  ~TargetThread() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return port_; }
  std::string spec(uint32_t ns, const std::string& extra = "") const {
    return "nvme-tcp://127.0.0.1:" + std::to_string(port_) + "/" + kNqn + "?ns=" +
           std::to_string(ns) + extra;
  }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  uint16_t port_ = 0;
};

TEST(NvmeHost, BadDeviceStringsAreNamed) {
  auto loop = test::make_loop();
  const std::pair<const char*, const char*> cases[] = {
      {"nvme-tcp:127.0.0.1:4420/x", "missing //"},
      {"nvme-tcp://127.0.0.1:4420", "missing /SUBSYSTEM_NQN"},
      {"nvme-tcp://127.0.0.1:99999/x", "port '99999' must be a number from 1 to 65535"},
      {"nvme-tcp://[::1/x", "missing ']'"},
      {"nvme-tcp://127.0.0.1:4420/x?hostnqn=bob", "hostnqn 'bob' is not an NQN"},
      {"nvme-tcp://127.0.0.1:4420/x?ns=0", "ns must be a namespace ID"},
      {"nvme-tcp://127.0.0.1:4420/x?color=red", "unknown option 'color'"},
      {"nvme-tcp://127.0.0.1:4420/x?depth=1000", "depth must be 2 to 128"},
      {"nvme-tcp://127.0.0.1:1/x?ns=1", "127.0.0.1:1: TCP connect: Connection refused"},
  };
  for (auto [spec, msg] : cases) {
    auto d = open_device(*loop, spec);
    ASSERT_FALSE(d) << spec;
    EXPECT_NE(d.error().message().find(msg), std::string::npos) << d.error().message();
  }
}

TEST(NvmeHost, EveryRequestTypeAgainstTheOriginalData) {
  TargetThread t({"mem:8M,seed=1", "mem:8M,seed=2"});
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(1));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->limits().capacity, 8 * M);
  EXPECT_TRUE(d->limits().can_offload());
  EXPECT_EQ(test::read_bytes(*d, 0, 2 * M), test::pattern(0, 2 * M, 1));
  Bytes data = test::pattern(0, 1 * M, 77);
  test::write_bytes(*d, 3 * M, data);  // R2T writes, 1 MiB at a time
  test::write_bytes(*d, 512, test::pattern(0, 4 * K, 78));  // in-capsule
  EXPECT_EQ(test::read_bytes(*d, 3 * M, 1 * M), data);
  EXPECT_EQ(test::read_bytes(*d, 512, 4 * K), test::pattern(0, 4 * K, 78));
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::write_zeroes, 4 * M, 64 * K}).ok());
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::discard, 5 * M, 64 * K}).ok());
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::flush}).ok());
  EXPECT_EQ(test::read_bytes(*d, 4 * M, 64 * K), Bytes(64 * K));
  EXPECT_EQ(test::read_bytes(*d, 5 * M, 64 * K), Bytes(64 * K));
  EXPECT_EQ(test::read_bytes(*d, 5 * M + 64 * K, 4 * K), test::pattern(5 * M + 64 * K, 4 * K, 1));
}

TEST(NvmeHost, CopiesRunOnTheTargetWithAlmostNothingOnTheWire) {
  TargetThread t({"mem:64M,seed=3", "mem:64M,seed=4"});
  auto loop = test::make_loop();
  auto a = test::open_dev(*loop, t.spec(1));
  auto b = test::open_dev(*loop, t.spec(2));
  auto on_wire = [&a] { return a->wire_counters().value().sent + a->wire_counters().value().received; };
  ASSERT_TRUE(a->same_copy_domain(*b)) << "one controller: format 2 across namespaces";
  const uint64_t before = on_wire();
  CopyResult r = copy(*a, 0, *a, 32 * M, 16 * M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 16 * M);
  const uint64_t wire = on_wire() - before;
  EXPECT_LT(wire, 4 * K) << "16 MiB copied with " << wire << " bytes on the wire";
  EXPECT_EQ(test::read_bytes(*a, 32 * M, 16 * M), test::pattern(0, 16 * M, 3));

  // Vectored, then across namespaces (format 2).
  std::vector<CopySegment> srcs{{a.get(), 1 * M, 64 * K}, {a.get(), 5 * M, 4 * K}};
  r = copy_ranges(srcs, *a, 48 * M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 68 * K);
  Bytes want = test::pattern(1 * M, 64 * K, 3);
  Bytes tail = test::pattern(5 * M, 4 * K, 3);
  want.insert(want.end(), tail.begin(), tail.end());
  EXPECT_EQ(test::read_bytes(*a, 48 * M, 68 * K), want);
  r = copy(*b, 2 * M, *a, 56 * M, 1 * M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 1 * M);
  EXPECT_EQ(test::read_bytes(*a, 56 * M, 1 * M), test::pattern(2 * M, 1 * M, 4));
}

TEST(NvmeHost, SeveralIoQueuesCarryTheRequests) {
  TargetThread t({"mem:16M,seed=9"});
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(1, "&queues=3&depth=8"));
  CopyOptions emulate;
  emulate.emulation = Emulation::force;
  emulate.chunk_bytes = 64 * K;
  CopyResult r = copy(*d, 0, *d, 8 * M, 4 * M, emulate);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(test::read_bytes(*d, 8 * M, 4 * M), test::pattern(0, 4 * M, 9));
  auto bad = open_device(*loop, t.spec(1, "&queues=9"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("queues must be 1 to 8"), std::string::npos);
}

TEST(NvmeHost, LimitsFromIdentifyAreHonoured) {
  TargetThread t({"mem:16M,seed=5,copy_max=64k,segment_max=16k,max_segments=2"});
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(1));
  EXPECT_EQ(d->limits().copy_segment_max_bytes, 16 * K);  // MSSRL
  EXPECT_EQ(d->limits().copy_max_bytes, 64 * K);          // MCL
  EXPECT_EQ(d->limits().copy_max_src_segments, 2u);       // MSRC + 1
  CopyResult r = copy(*d, 0, *d, 8 * M, 1 * M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 1 * M);
  EXPECT_EQ(r.commands, 32u) << "1 MiB in pieces of 2 x 16 KiB";
  EXPECT_EQ(test::read_bytes(*d, 8 * M, 1 * M), test::pattern(0, 1 * M, 5));
}

TEST(NvmeHost, AControllerWithoutCopyIsEmulated) {
  // A namespace whose device cannot offload still advertises Copy (the target emulates), so
  // stand in for a controller without Copy with a device string the host cannot pair:
  // a copy from a local mem device into the remote namespace.
  TargetThread t({"mem:8M"});
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(1));
  auto local = test::open_dev(*loop, "mem:1M,seed=6");
  CopyResult r = copy(*local, 0, *d, 1 * M, 512 * K);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.emulated_bytes, 512 * K);
  EXPECT_EQ(test::read_bytes(*d, 1 * M, 512 * K), test::pattern(0, 512 * K, 6));
}

TEST(NvmeHost, DiscoverListsTheSubsystemsAndTheirDeviceStrings) {
  TargetThread t({"mem:1M"});
  auto r = test::run_cli({"discover", "127.0.0.1:" + std::to_string(t.port())});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 record"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(t.spec(1)), std::string::npos) << r.out;
  r = test::run_cli({"discover", "127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 5) << "unreachable, as info says it";
  EXPECT_NE(r.err.find("127.0.0.1:1: TCP connect: Connection refused"), std::string::npos) << r.err;
}

TEST(NvmeHost, TheCliShowsTheBytesOnTheWire) {
  TargetThread t({"mem:64M,seed=8"});
  auto r = test::run_cli({"copy", t.spec(1), t.spec(1) + "@32M", "--length", "16M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["offloaded_bytes"], 16 * M);
  EXPECT_LT(j["wire_bytes_sent"].get<uint64_t>() + j["wire_bytes_received"].get<uint64_t>(), 4 * K);
  // How the target did it, from its report (log page C0h): its RAM device copied all of it.
  EXPECT_EQ(j["offloaded_by"], "the controller, as Copy commands (the data never crossed the network)");
  EXPECT_EQ(j["target"]["copy_commands"], 1);
  EXPECT_EQ(j["target"]["device_bytes"], 16 * M);
  EXPECT_EQ(j["target"]["emulated_bytes"], 0);
  EXPECT_EQ(j["target"]["device_copies_by"], "the RAM device, by memmove");
  // In words.
  r = test::run_cli({"copy", t.spec(1), t.spec(1) + "@48M", "--length", "1M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("offloaded  by the controller, as Copy commands"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("on target  1.00 MiB copied by its devices, 0 B emulated"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("copied by the RAM device, by memmove"), std::string::npos) << r.out;
}

// What copy makes of a target's report: its counters, who copies or why its device does not,
// and only the error when there is none.
TEST(NvmeHost, TargetReportsSayWhoCopiedOrWhyNot) {
  using Report = Result<nvme::TargetCopyReport>;
  const Report copied(nvme::TargetCopyReport{1, 4 * M, 0, "the RAM device, by memmove"});
  auto j = tools::target_report_json(copied);
  EXPECT_EQ(j["copy_commands"], 1);
  EXPECT_EQ(j["device_bytes"], 4 * M);
  EXPECT_EQ(j["device_copies_by"], "the RAM device, by memmove");
  EXPECT_EQ(tools::target_report_text(copied),
            "on target  4.00 MiB copied by its devices, 0 B emulated (read and written by the target)\n"
            "           copied by the RAM device, by memmove\n");

  const Report emulated(nvme::TargetCopyReport{1, 0, 2 * M, "none (nocopy): copies are emulated"});
  j = tools::target_report_json(emulated);
  EXPECT_EQ(j["device_does_not_copy"], "none (nocopy): copies are emulated");
  EXPECT_FALSE(j.contains("device_copies_by"));
  EXPECT_NE(tools::target_report_text(emulated).find("its device does not copy: none (nocopy)"), std::string::npos);

  const Report none(std::unexpected(Status::error(ENOTSUP, "t: the target keeps no copy report")));
  EXPECT_EQ(tools::target_report_json(none)["error"], "t: the target keeps no copy report");
  EXPECT_EQ(tools::target_report_text(none), "");
}

// A Copy the target refuses (here between namespaces of different block sizes) is emulated by
// the host, and the copy says why, with the target's status.
TEST(NvmeHost, ACopyTheTargetRefusedIsEmulatedWithTheReason) {
  TargetThread t({"mem:16M,seed=10", "mem:16M,block=4096"});
  auto r = test::run_cli({"copy", t.spec(1), t.spec(2) + "@4M", "--length", "1M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["emulated_bytes"], 1 * M);
  EXPECT_NE(j["emulated_because"].get<std::string>().find("NVMe status 0x185 (Incompatible Namespace)"),
            std::string::npos) << j.dump();
  EXPECT_FALSE(j.contains("target")) << "nothing was offloaded: no report to read";
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(2));
  EXPECT_EQ(test::read_bytes(*d, 4 * M, 1 * M), test::pattern(0, 1 * M, 10));
}

// Offloaded to the controller is not offloaded to the storage: a Copy from a RAM namespace into
// one that cannot copy is read and written by the target, and the report says so.
TEST(NvmeHost, TheTargetSaysItEmulatedACopyBetweenNamespaces) {
  TargetThread t({"mem:16M,seed=9", "mem:16M,nocopy"});
  auto r = test::run_cli({"copy", t.spec(1), t.spec(2) + "@4M", "--length", "8M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["offloaded_bytes"], 8 * M) << "sent as a Copy command";
  EXPECT_EQ(j["target"]["emulated_bytes"], 8 * M) << j.dump();
  EXPECT_EQ(j["target"]["device_bytes"], 0);
  EXPECT_EQ(j["target"]["device_does_not_copy"], "none (nocopy): copies are emulated") << "ns 2 offloads nothing";
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(2));
  EXPECT_EQ(test::read_bytes(*d, 4 * M, 8 * M), test::pattern(0, 8 * M, 9));
  r = test::run_cli({"copy", t.spec(1), t.spec(2), "--length", "1M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("on target  0 B copied by its devices, 1.00 MiB emulated (read and written by the target)\n"
                       "           its device does not copy: none (nocopy)"),
            std::string::npos) << r.out;
  // perf says the same of its copies, for its jobs together.
  r = test::run_cli({"perf", t.spec(1), "--rw", "randcopy", "--dst", t.spec(2), "--size", "1M", "--jobs", "2",
                     "--force", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["offloaded_bytes"], 1 * M);
  EXPECT_EQ(j["target"]["emulated_bytes"], 1 * M) << j["target"].dump();
  EXPECT_EQ(j["target"]["device_bytes"], 0);
  EXPECT_EQ(j["target"]["copy_commands"], 256);
  // info says so before any copy.
  r = test::run_cli({"info", t.spec(2)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("copies on the target     emulated by the target: none (nocopy)"), std::string::npos) << r.out;
  r = test::run_cli({"info", t.spec(1)});
  EXPECT_NE(r.out.find("copies on the target     by the RAM device, by memmove"), std::string::npos) << r.out;
}

TEST(NvmeHost, ACommandWithoutAnAnswerTimesOut) {
  TargetThread t({"mem:1M,latency=3s"});
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(1, "&timeout=300"));
  Bytes buf(4096);
  const auto start = std::chrono::steady_clock::now();
  Status s = read_sync(*d, 0, buf);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), ETIMEDOUT) << s.message();
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::milliseconds(400)) << "the timer stands at the deadline itself";
  EXPECT_NE(s.message().find("got no answer in 300 ms"), std::string::npos) << s.message();
  EXPECT_EQ(read_sync(*d, 0, buf).code(), ECONNRESET) << "the queue stays failed";
}

TEST(NvmeHost, ReconnectsWithBackoffWhenAsked) {
  auto first = std::make_unique<TargetThread>(std::vector<std::string>{"mem:16M,seed=10"});
  const uint16_t port = first->port();
  const std::string spec = first->spec(1, "&reconnect=10");
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, spec);
  EXPECT_EQ(test::read_bytes(*d, 0, 64 * K), test::pattern(0, 64 * K, 10));
  first.reset();  // the target goes away; another comes up on the same port
  TargetThread second({"mem:16M,seed=11"}, port);
  Bytes got(64 * K);
  Status s = read_sync(*d, 0, got);
  if (s.code() == ECONNRESET) s = read_sync(*d, 0, got);  // the one in flight when it dropped
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(got, test::pattern(0, 64 * K, 11)) << "read from the new target";
}

TEST(NvmeHost, ATargetGoneMidCopyFailsWithExactProgress) {
  TargetThread t({"mem:64M,seed=7,copy_max=64k,segment_max=64k,latency=20ms"});
  auto loop = test::make_loop();
  auto d = test::open_dev(*loop, t.spec(1));
  CopyOptions one;
  one.max_copies_in_flight = 1;
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    t.stop();
  });
  CopyResult r = copy(*d, 0, *d, 32 * M, 16 * M, one);
  killer.join();
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), ECONNRESET) << r.status.message();
  EXPECT_GT(r.bytes, 0u);
  EXPECT_LT(r.bytes, 16 * M);
  EXPECT_EQ(r.bytes % (64 * K), 0u) << "progress counts whole pieces";
  EXPECT_EQ(r.bytes, r.offloaded_bytes) << "exactly the pieces that completed";
}

}  // namespace
}  // namespace blkcopy
