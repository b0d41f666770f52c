// The NVMe/TCP target over loopback, driven by a small test client: the protocol structures
// against fixed bytes, connection set-up, I/O with and without digests, every Copy status, and
// malformed PDUs ending only their own connection.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "nvme/codec.h"
#include "nvme/status.h"
#include <blkcopy/target.h>
#include "tests/nvme_client.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;
using test::NvmeClient;

const std::string kSubA = "nqn.2024-01.io.blkcopy.test:a";
const std::string kSubB = "nqn.2024-01.io.blkcopy.test:b";
const std::string kHost = "nqn.2024-01.io.blkcopy.test:host";

std::vector<uint8_t> u8(const test::Bytes& b) {
  std::vector<uint8_t> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// One target for the suite, on its own thread and loop; tests talk to it over sockets only.
class TargetTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::promise<uint16_t> port;  // moved into the thread, see nvme_host_test.cc
    auto ready = port.get_future();
    thread_ = std::thread([port = std::move(port)]() mutable {
      auto loop = EventLoop::create().value();
      TargetConfig cfg;
      cfg.discovery_port = 0;
      cfg.ports.push_back({1, "127.0.0.1", 0, {kSubA, kSubB}});
      SubsystemConfig a{kSubA, true, {}, {}};
      a.namespaces.push_back({1, "mem:16M,seed=1,copy_max=64k,segment_max=16k,max_segments=4", "", true});
      a.namespaces.push_back({2, "mem:16M,seed=2", "", true});
      a.namespaces.push_back({3, "mem:16M,block=4096", "", true});
      a.namespaces.push_back({4, "mem:4M,seed=4,nocopy,fail=write:2", "", true});
      a.namespaces.push_back({5, "mem:1M,latency=200ms", "", true});
      SubsystemConfig b{kSubB, false, {kHost}, {}};
      b.namespaces.push_back({1, "mem:1M", "", true});
      cfg.subsystems = {a, b};
      auto target = Target::create(*loop, cfg).value();
      if (!target->start().ok()) std::abort();
      port.set_value(target->bound_ports()[0]);
      (void)loop->run_until([] { return stop_.load(); });
    });
    port_ = ready.get();
  }
  static void TearDownTestSuite() {
    stop_ = true;
    thread_.join();
  }
  // An admin connection to subsystem A, and an I/O queue for it.
  void connect_a(NvmeClient& admin, NvmeClient& io, bool digests = false) {
    ASSERT_TRUE(admin.open(port_, digests, digests));
    auto c = admin.connect(0, kSubA, kHost);
    ASSERT_EQ(c.status, 0);
    ASSERT_TRUE(io.open(port_, digests, digests));
    ASSERT_EQ(io.connect(1, kSubA, kHost, static_cast<uint16_t>(c.dw0)).status, 0);
  }

  static inline std::thread thread_;
  static inline std::atomic<bool> stop_{false};
  static inline uint16_t port_ = 0;
};

TEST_F(TargetTest, IdentifyShowsCopyAndTheLimitsOfTheBackingDevice) {
  NvmeClient admin, io;
  connect_a(admin, io);
  std::vector<uint8_t> id;
  ASSERT_EQ(admin.identify(kCnsController, 0, id).status, 0);
  std::span<const uint8_t> s(id);
  EXPECT_TRUE(get<uint16_t>(s, idctrl::kOncs) & idctrl::kOncsCopy);
  EXPECT_EQ(get<uint16_t>(s, idctrl::kOcfs), 0x5);
  EXPECT_EQ(get_nqn(s, idctrl::kSubnqn), kSubA);
  // NN: the largest ID a namespace may be added with (Linux nvmet's 1024), and OAES: namespace
  // changes are announced.
  EXPECT_EQ(get<uint32_t>(s, idctrl::kNn), kLargestNsidAdvertised);
  EXPECT_EQ(get<uint32_t>(s, idctrl::kOaes), kAenNamespaceAttribute);
  EXPECT_GE(get<uint32_t>(s, idctrl::kIoccsz), 4u);
  ASSERT_EQ(admin.identify(kCnsNamespace, 1, id).status, 0);
  s = std::span<const uint8_t>(id);
  EXPECT_EQ(get<uint64_t>(s, idns::kNsze), 16u * 2048);
  EXPECT_EQ(get<uint16_t>(s, idns::kMssrl), 32u);  // 16 KiB segments of 512-byte blocks
  EXPECT_EQ(get<uint32_t>(s, idns::kMcl), 128u);   // 64 KiB per copy
  EXPECT_EQ(id[idns::kMsrc], 3u);                  // 4 ranges
  ASSERT_EQ(admin.identify(kCnsActiveNsList, 0, id).status, 0);
  EXPECT_EQ(get<uint32_t>(std::span<const uint8_t>(id), 16), 5u);
}

// What SPDK's host asks of a controller (spdk_nvme_identify): the mandatory features and the
// firmware slot log, answered as a real controller would; what is set reads back.
TEST_F(TargetTest, MandatoryFeaturesAndTheFirmwareSlotLogAreAnswered) {
  NvmeClient admin, io;
  connect_a(admin, io);
  auto feature = [&](bool set, uint8_t fid, uint32_t cdw11) {
    Sqe f{};
    f.opcode = set ? admin::kSetFeatures : admin::kGetFeatures;
    f.cdw10 = fid;
    f.cdw11 = cdw11;
    return admin.command(f);
  };
  for (uint8_t fid : {kFeatArbitration, kFeatPowerMgmt, kFeatTempThreshold, kFeatErrorRecovery}) {
    EXPECT_EQ(feature(false, fid, 0).status, 0) << "Get Features " << int(fid);
  }
  EXPECT_EQ(feature(false, kFeatTempThreshold, 0).dw0, 343u);  // over-temperature, kelvin
  ASSERT_EQ(feature(true, kFeatTempThreshold, 350).status, 0);
  EXPECT_EQ(feature(false, kFeatTempThreshold, 0).dw0, 350u);
  EXPECT_EQ(feature(false, kFeatTempThreshold, 1u << 20).dw0, 0u);  // under-temperature
  ASSERT_EQ(feature(true, kFeatErrorRecovery, 7).status, 0);
  EXPECT_EQ(feature(false, kFeatErrorRecovery, 0).dw0, 7u);
  ASSERT_EQ(feature(true, kFeatArbitration, 0x03).status, 0);
  EXPECT_EQ(feature(false, kFeatArbitration, 0).dw0, 0x03u);
  EXPECT_EQ(feature(true, kFeatPowerMgmt, 1).status, status::kInvalidField);  // NPSS 0
  EXPECT_EQ(feature(true, kFeatErrorRecovery, 1u << 16).status, status::kInvalidField);
  EXPECT_EQ(feature(false, kFeatTempThreshold, 3u << 20).status, status::kInvalidField);

  Sqe log{};
  log.opcode = admin::kGetLogPage;
  log.cdw10 = kLogFirmwareSlot | ((512 / 4 - 1) << 16);
  std::vector<uint8_t> page, id;
  ASSERT_EQ(admin.command(log, {}, &page, 512).status, 0);
  ASSERT_EQ(admin.identify(kCnsController, 0, id).status, 0);
  EXPECT_EQ(page[0], 1);  // slot 1 active
  EXPECT_EQ(std::string(page.begin() + 8, page.begin() + 16),
            std::string(id.begin() + idctrl::kFr, id.begin() + idctrl::kFr + 8));
}

TEST_F(TargetTest, WritesAndReadsInCapsuleAndThroughR2TWithDigests) {
  for (bool digests : {false, true}) {
    NvmeClient admin, io;
    connect_a(admin, io, digests);
    auto small = u8(test::pattern(0, 4096, 11)), big = u8(test::pattern(0, 256 * 1024, 12));
    ASSERT_EQ(io.write(2, 100, small, 512).status, 0);   // in-capsule
    ASSERT_EQ(io.write(2, 1000, big, 512).status, 0);    // R2T + H2CData
    std::vector<uint8_t> got;
    ASSERT_EQ(io.read(2, 100, 8, 512, got).status, 0);
    EXPECT_EQ(got, small);
    ASSERT_EQ(io.read(2, 1000, 512, 512, got).status, 0);
    EXPECT_EQ(got, big);
    EXPECT_EQ(io.read(2, 32767, 2, 512, got).status, status::kLbaOutOfRange);
    EXPECT_EQ(io.read(9, 0, 1, 512, got).status, status::kInvalidNamespace);
  }
}

// A read ends with C2HData's SUCCESS flag (no response capsule) only for a host that turned SQ
// flow control off in its Connect, and only when it succeeded.
TEST_F(TargetTest, ReadsEndWithC2HSuccessOnlyWhenSqFlowControlIsOff) {
  for (bool off : {false, true}) {
    NvmeClient admin, io;
    io.disable_sq_flow = off;
    connect_a(admin, io);
    auto data = u8(test::pattern(0, 64 * 1024, 21));
    ASSERT_EQ(io.write(2, 300, data, 512).status, 0);
    EXPECT_FALSE(io.ended_by_c2h_success);
    std::vector<uint8_t> got;
    ASSERT_EQ(io.read(2, 300, 128, 512, got).status, 0);
    EXPECT_EQ(got, data);
    EXPECT_EQ(io.ended_by_c2h_success, off) << "SQ flow control off: " << off;
    // Nothing more for that read: the next command's answer is the next PDU.
    ASSERT_EQ(io.read(2, 300, 8, 512, got).status, 0);
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 4096),
              std::vector<uint8_t>(data.begin(), data.begin() + 4096));
    // A failed read still ends with a response capsule carrying its status.
    EXPECT_EQ(io.read(2, 32767, 2, 512, got).status, status::kLbaOutOfRange);
    EXPECT_FALSE(io.ended_by_c2h_success);
  }
}

TEST_F(TargetTest, CopyStatusForEveryBadInput) {
  NvmeClient admin, io;
  connect_a(admin, io);
  using R = NvmeClient::Range;
  struct Case {
    const char* what;
    uint32_t nsid;
    uint64_t sdlba;
    std::vector<R> ranges;
    uint8_t format;
    std::optional<uint32_t> data_len;
    uint16_t status;
  };
  const Case cases[] = {
      {"ranges over MSRC", 1, 5000, {{0, 1}, {8, 1}, {16, 1}, {24, 1}, {32, 1}}, 0, {},
       status::kCommandSizeLimit},
      {"a range over MSSRL", 1, 5000, {{0, 33}}, 0, {}, status::kCommandSizeLimit},
      {"exactly MCL is allowed", 1, 5000, {{0, 32}, {100, 32}, {200, 32}, {300, 32}}, 0, {}, 0},
      {"source beyond the end", 1, 5000, {{32760, 16}}, 0, {}, status::kLbaOutOfRange},
      {"destination beyond the end", 1, 32760, {{0, 16}}, 0, {}, status::kLbaOutOfRange},
      {"format 1 unsupported", 1, 5000, {{0, 1}}, 1, {}, status::kInvalidField},
      {"format 2 not enabled", 1, 5000, {{0, 1, 2}}, 2, {}, status::kInvalidField},
      {"data length not 32 x ranges", 1, 5000, {{0, 1}}, 0, 48, status::kSglLengthInvalid},
  };
  for (const Case& c : cases) {
    auto r = io.copy(c.nsid, c.sdlba, c.ranges, c.format, c.data_len);
    EXPECT_EQ(r.status, c.status) << c.what;
    if (c.status) {
      EXPECT_TRUE(r.dnr) << c.what;
    }
  }
  // 4 x 32 = 128 blocks is exactly MCL; one block more is over it.
  EXPECT_EQ(io.copy(1, 6000, {{0, 32}, {100, 32}, {200, 32}, {300, 33}}).status,
            status::kCommandSizeLimit);

  ASSERT_EQ(admin.set_host_behavior(true).status, 0);
  EXPECT_EQ(io.copy(1, 5000, {{0, 1, 9}}, 2).status, status::kInvalidNamespace);
  EXPECT_EQ(io.copy(1, 5000, {{0, 1, 3}}, 2).status, status::kIncompatibleNamespace);
  // Cross-namespace: 16 blocks of namespace 2 into namespace 1, checked against the seed.
  ASSERT_EQ(io.copy(1, 7000, {{50, 16, 2}}, 2).status, 0);
  std::vector<uint8_t> got;
  ASSERT_EQ(io.read(1, 7000, 16, 512, got).status, 0);
  EXPECT_EQ(got, u8(test::pattern(50 * 512, 16 * 512, 2)));
  ASSERT_EQ(admin.set_host_behavior(false).status, 0);
}

TEST_F(TargetTest, CopyEarlyStopReportsTheFirstRangeNotCopied) {
  NvmeClient admin, io;
  connect_a(admin, io);
  // Namespace 4 copies by emulation (one read and one write per range) and fails its second
  // write: the first range is copied, the second is not.
  auto r = io.copy(4, 4000, {{0, 8}, {64, 8}, {128, 8}});
  EXPECT_EQ(r.status, status::kWriteFault);
  EXPECT_EQ(r.dw0, 1u);
  std::vector<uint8_t> got;
  ASSERT_EQ(io.read(4, 4000, 8, 512, got).status, 0);
  EXPECT_EQ(got, u8(test::pattern(0, 8 * 512, 4))) << "the first range is copied";
}

TEST_F(TargetTest, OnlyAllowedHostsConnect) {
  NvmeClient good, bad, unknown;
  ASSERT_TRUE(good.open(port_));
  EXPECT_EQ(good.connect(0, kSubB, kHost).status, 0);
  ASSERT_TRUE(bad.open(port_));
  EXPECT_EQ(bad.connect(0, kSubB, "nqn.2024-01.io.blkcopy.test:stranger").status,
            status::kConnectInvalidHost);
  ASSERT_TRUE(unknown.open(port_));
  EXPECT_EQ(unknown.connect(0, "nqn.2024-01.io.blkcopy.test:nope", kHost).status,
            status::kConnectInvalidParam);
}

// Each malformed PDU ends its own connection with a C2HTermReq; another connection keeps
// working throughout.
TEST_F(TargetTest, MalformedPdusEndOnlyTheirConnection) {
  NvmeClient admin, io;
  connect_a(admin, io);
  auto other_still_works = [&] {
    std::vector<uint8_t> got;
    return io.read(2, 0, 1, 512, got).status == 0 && got.size() == 512;
  };
  auto header = [](uint8_t type, uint8_t hlen, uint32_t plen) {
    std::vector<uint8_t> b(std::clamp<uint32_t>(plen, 8, 1024), 0);  // the start, at most
    PduHeader h{type, 0, hlen, 0, plen};
    std::memcpy(b.data(), &h, 8);
    return b;
  };
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
    bool after_ic;
    bool expect_term;
  };
  std::vector<uint8_t> truncated = header(pdu::kCapsuleCmd, 72, 72);
  truncated.resize(40);
  const Case cases[] = {
      {"capsule before ICReq", header(pdu::kCapsuleCmd, 72, 72), false, true},
      {"ICReq with a wrong length", header(pdu::kICReq, 128, 100), false, true},
      {"unknown PDU type", header(0x1F, 8, 8), true, true},
      {"capsule with a wrong header length", header(pdu::kCapsuleCmd, 64, 72), true, true},
      {"plen beyond the limit", header(pdu::kCapsuleCmd, 72, 64u << 20), true, true},
      {"H2CData for no R2T", header(pdu::kH2CData, 24, 24 + 512), true, true},
      {"truncated PDU, then the socket closes", truncated, true, false},
  };
  for (const Case& c : cases) {
    NvmeClient conn;
    ASSERT_TRUE(c.after_ic ? conn.open(port_) : conn.open_raw(port_)) << c.what;
    ASSERT_TRUE(conn.send_raw(c.bytes)) << c.what;
    if (c.expect_term) {
      auto term = conn.recv_pdu();
      ASSERT_TRUE(term) << c.what;
      EXPECT_EQ((*term)[0], pdu::kC2HTermReq) << c.what;
      EXPECT_TRUE(conn.closed_by_peer()) << c.what;
    } else {
      conn.close();  // a PDU cut short by the host going away
    }
    EXPECT_TRUE(other_still_works()) << "after: " << c.what;
  }
  // Header digest mismatch.
  NvmeClient d;
  ASSERT_TRUE(d.open(port_, true, false));
  auto capsule = header(pdu::kCapsuleCmd, 72, 72 + 4);
  capsule[1] = pdu::kFlagHdgst;
  ASSERT_TRUE(d.send_raw(capsule));  // the digest bytes are zero: wrong
  auto term = d.recv_pdu();
  ASSERT_TRUE(term);
  EXPECT_EQ((*term)[0], pdu::kC2HTermReq);
  TermReq t;
  std::memcpy(&t, term->data(), sizeof t);
  EXPECT_EQ(t.fes, kFesHeaderDigestError);
  EXPECT_TRUE(other_still_works());
}

TEST_F(TargetTest, MoreCommandsThanTheQueueHoldsEndTheConnection) {
  NvmeClient admin, io;
  connect_a(admin, io);  // the I/O queue was connected with SQSIZE 31: 32 entries
  std::vector<uint8_t> all;
  for (uint16_t cid = 1; cid <= 40; ++cid) {
    Sqe sqe{};
    sqe.opcode = io::kRead;
    sqe.cid = cid;
    sqe.nsid = 5;  // slow: every read takes 200 ms
    sqe.dptr.length = 512;
    sqe.dptr.type = kSglTransport;
    PduHeader h{pdu::kCapsuleCmd, 0, 72, 0, 72};
    std::vector<uint8_t> pdu(72);
    std::memcpy(pdu.data(), &h, 8);
    std::memcpy(pdu.data() + 8, &sqe, sizeof sqe);
    all.insert(all.end(), pdu.begin(), pdu.end());
  }
  ASSERT_TRUE(io.send_raw(all));
  bool terminated = false;
  while (auto p = io.recv_pdu()) terminated |= (*p)[0] == pdu::kC2HTermReq;
  EXPECT_TRUE(terminated);
}

// A session captured on loopback and decoded by Wireshark's NVMe/TCP dissector: an independent
// check of the wire format. Needs root (capture) and tshark; skips otherwise.
TEST_F(TargetTest, TsharkDecodesASessionWithoutMalformedPackets) {
  if (geteuid() != 0) GTEST_SKIP() << "capturing on loopback needs root";
  if (std::system("command -v tshark >/dev/null") != 0) GTEST_SKIP() << "tshark not installed";
  test::TempDir dir;
  const std::string cap = (dir.path() / "session.pcapng").string();
  const std::string log = (dir.path() / "tshark.log").string();
  const std::string cmd = fmt::format("tshark -i lo -f 'tcp port {}' -w {} >{} 2>&1 & echo $!",
                                      port_, cap, log);
  FILE* p = popen(cmd.c_str(), "r");
  int pid = 0;
  ASSERT_EQ(fscanf(p, "%d", &pid), 1);
  pclose(p);
  for (int i = 0; i < 100; ++i) {  // until tshark says the capture has started
    if (std::system(("grep -q 'Capture started' " + log).c_str()) == 0) break;
    usleep(100 * 1000);
  }
  usleep(500 * 1000);  // dumpcap may still be setting up its filter
  {
    NvmeClient admin, io;
    connect_a(admin, io, /*digests=*/true);
    std::vector<uint8_t> got;
    ASSERT_EQ(admin.identify(kCnsController, 0, got).status, 0);
    ASSERT_EQ(io.write(2, 64, u8(test::pattern(0, 64 * 1024, 5)), 512).status, 0);
    ASSERT_EQ(io.read(2, 64, 128, 512, got).status, 0);
    ASSERT_EQ(io.copy(1, 4096, {{0, 16}, {100, 8}}).status, 0);
  }
  usleep(500 * 1000);
  kill(pid, SIGINT);
  waitpid(pid, nullptr, 0);
  for (int i = 0; i < 50 && std::system(("pgrep -f " + cap + " >/dev/null").c_str()) == 0; ++i) {
    usleep(100 * 1000);
  }
  auto count = [&](const std::string& filter) {
    const std::string c = fmt::format("tshark -r {} -d tcp.port=={},nvme-tcp -Y '{}' 2>/dev/null | wc -l",
                                      cap, port_, filter);
    FILE* f = popen(c.c_str(), "r");
    int n = -1;
    if (fscanf(f, "%d", &n) != 1) n = -1;
    pclose(f);
    return n;
  };
  EXPECT_GT(count("nvme-tcp"), 10) << "the dissector saw the session";
  EXPECT_GT(count("nvme-tcp.type == 9"), 0) << "an R2T";
  EXPECT_EQ(count("_ws.malformed || _ws.expert.severity == error"), 0);
}

// Connections spread over two event loops; the devices stay on the first.
TEST(TargetCores, TwoLoopsServeConnectionsCorrectly) {
  std::promise<uint16_t> ready;
  std::atomic<bool> stop{false};
  std::thread server([&] {
    auto loop = EventLoop::create().value();
    TargetConfig cfg;
    cfg.cores = 2;
    cfg.discovery_port = 0;
    cfg.ports.push_back({1, "127.0.0.1", 0, {kSubA}});
    cfg.subsystems.push_back({kSubA, true, {}, {{1, "mem:16M,seed=1", "", true}}});
    auto target = Target::create(*loop, cfg).value();
    if (!target->start().ok()) std::abort();
    ready.set_value(target->bound_ports()[0]);
    (void)loop->run_until([&] { return stop.load(); });
  });
  const uint16_t port = ready.get_future().get();
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      NvmeClient admin, io;
      if (!admin.open(port)) return;
      auto c = admin.connect(0, kSubA, kHost + std::to_string(t));
      if (c.status || !io.open(port) ||
          io.connect(1, kSubA, kHost + std::to_string(t), static_cast<uint16_t>(c.dw0)).status) {
        return;
      }
      const uint64_t base = 4096 + t * 1024;
      auto data = u8(test::pattern(0, 64 * 1024, 50 + t));
      std::vector<uint8_t> got;
      bool ok = io.write(1, base, data, 512).status == 0 &&
                io.copy(1, base + 256, {{base, 128}}).status == 0 &&
                io.read(1, base + 256, 128, 512, got).status == 0 && got == data;
      if (ok) ++good;
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(good, 4);
  stop = true;
  server.join();
}

TEST_F(TargetTest, ADeadHostIsDroppedOnKeepAliveTimeout) {
  NvmeClient admin;
  ASSERT_TRUE(admin.open(port_));
  ASSERT_EQ(admin.connect(0, kSubA, kHost, 0xFFFF, /*kato_ms=*/500).status, 0);
  // No keep-alive follows: the target closes the connection (checked once a second).
  EXPECT_TRUE(admin.closed_by_peer(5000));
}

}  // namespace
}  // namespace blkcopy
