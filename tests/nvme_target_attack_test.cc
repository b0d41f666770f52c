// The target against a hostile or broken host: each test provokes one hole that the security
// review found (heap over-read through the in-capsule offset, controller-ID takeover, unbounded
// send queues, stalled peers, unchecked I/O queue Connects, wrapping LBA ranges) and asserts the
// outcome on the data and on the connection.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "nvme/codec.h"
#include <blkcopy/log.h>
#include <blkcopy/target.h>
#include "tests/nvme_client.h"
#include "tests/served_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;
using test::Host;
using test::NvmeClient;
using test::Served;
using test::capsule;
using test::completion_of;
using Clock = std::chrono::steady_clock;

const std::string kOpen = "nqn.2024-01.io.blkcopy.test:open";
const std::string kLocked = "nqn.2024-01.io.blkcopy.test:locked";
const std::string kVictim = "nqn.2024-01.io.blkcopy.test:victim";
const std::string kAttacker = "nqn.2024-01.io.blkcopy.test:attacker";

std::vector<uint8_t> u8(const test::Bytes& b) {
  std::vector<uint8_t> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// Two subsystems: one any host may use, one only the victim may use; controller IDs 1 to 3.
TargetConfig two_tenants() {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kOpen, kLocked}});
  SubsystemConfig open{kOpen, true, {}, {{1, "mem:1M,seed=21", "", true}}};
  SubsystemConfig locked{kLocked, false, {kVictim}, {{1, "mem:1M,seed=22", "", true}}};
  for (SubsystemConfig* s : {&open, &locked}) {
    s->cntlid_min = 1;
    s->cntlid_max = 3;
  }
  cfg.subsystems = {open, locked};
  return cfg;
}

TEST(TargetAttack, AHostThatNeverReadsItsSocketIsCutOffNotBuffered) {
  Served t(two_tenants());
  Host h;
  ASSERT_TRUE(h.connect(t.port(), kOpen, kAttacker));
  // Reads of 128 KiB, a queue's worth at a time (never more outstanding than the queue holds
  // as the host counts), and never a byte read back. Once the socket buffers are full the
  // answers cannot leave, so the queue entries stay taken: the next batch is over the queue
  // and ends the connection. (A target that freed entries when it queued the answers kept
  // buffering them: 1.5 GB from 108 KB of commands.)
  Sqe sqe{};
  sqe.opcode = io::kRead;
  sqe.nsid = 1;
  sqe.cdw12 = 255;  // 256 blocks
  sqe.dptr.length = 128 * 1024;
  sqe.dptr.type = kSglTransport;
  uint16_t cid = 1;
  bool cut = false;
  for (int batch = 0; batch < 40 && !cut; ++batch) {  // up to 160 MiB of answers
    std::vector<uint8_t> burst;
    for (int i = 0; i < 32; ++i) {
      sqe.cid = cid++;
      auto p = capsule(sqe, {});
      burst.insert(burst.end(), p.begin(), p.end());
    }
    cut = !h.io.send_raw(burst);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(cut || h.io.closed_by_peer(3000)) << "the target kept queueing answers";
}

TargetConfig impatient() {
  TargetConfig cfg = two_tenants();
  cfg.limits.handshake_ms = 300;
  cfg.limits.connect_ms = 600;
  cfg.limits.pdu_ms = 300;
  cfg.limits.max_connections = 6;
  return cfg;
}

// Closed within the limit plus the target's tick (250 ms), with room for a slow machine.
void expect_closed_soon(NvmeClient& c, const char* what) {
  const auto start = Clock::now();
  EXPECT_TRUE(c.closed_by_peer(5000)) << what;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3)) << what;
}

TEST(TargetAttack, StalledPeersAreClosed) {
  Served t(impatient());
  NvmeClient no_icreq, no_connect, half_header, half_capsule, no_data;
  ASSERT_TRUE(no_icreq.open_raw(t.port()));
  ASSERT_TRUE(no_connect.open(t.port()));
  ASSERT_TRUE(half_header.open(t.port()));
  ASSERT_EQ(half_header.connect(0, kOpen, kAttacker).status, 0);
  ASSERT_TRUE(half_header.send_raw({pdu::kCapsuleCmd, 0, 72, 0}));
  ASSERT_TRUE(half_capsule.open(t.port()));
  ASSERT_EQ(half_capsule.connect(0, kOpen, kAttacker).status, 0);
  auto part = capsule(Sqe{}, {});
  part.resize(40);
  ASSERT_TRUE(half_capsule.send_raw(part));
  // A Write whose data the target asks for with an R2T, and which never comes.
  Host w;
  ASSERT_TRUE(w.connect(t.port(), kOpen, kVictim));
  Sqe sqe{};
  sqe.opcode = io::kWrite;
  sqe.cid = 5;
  sqe.nsid = 1;
  sqe.cdw12 = 63;
  sqe.dptr.length = 32768;
  sqe.dptr.type = kSglTransport;
  ASSERT_TRUE(w.io.send_raw(capsule(sqe, {})));
  auto r2t = w.io.recv_pdu();
  ASSERT_TRUE(r2t);
  EXPECT_EQ((*r2t)[0], pdu::kR2T);
  expect_closed_soon(no_icreq, "no ICReq");
  expect_closed_soon(no_connect, "no Connect");
  expect_closed_soon(half_header, "half a PDU header");
  expect_closed_soon(half_capsule, "half a capsule");
  expect_closed_soon(w.io, "R2T data never sent");
  EXPECT_GE(t.stats().stalled_connections, 5u);
}

TEST(TargetAttack, ConnectionsBeyondTheCapAreClosedAndSlotsCome) {
  Served t(impatient());
  std::vector<std::unique_ptr<NvmeClient>> held;
  for (int i = 0; i < 6; ++i) {
    held.push_back(std::make_unique<NvmeClient>());
    ASSERT_TRUE(held.back()->open(t.port()));
  }
  NvmeClient over;
  ASSERT_TRUE(over.open_raw(t.port()));
  EXPECT_TRUE(over.closed_by_peer(2000)) << "the seventh connection is over the cap";
  EXPECT_GE(t.stats().refused_connections, 1u);
  held.clear();  // slots free once the target has seen them go
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  NvmeClient fresh;
  ASSERT_TRUE(fresh.open(t.port()));
  EXPECT_EQ(fresh.connect(0, kOpen, kAttacker).status, 0);
}

TEST(TargetAttack, WrappingLbaRangesAreOutOfRangeWithDnr) {
  Served t(two_tenants());
  Host h;
  ASSERT_TRUE(h.connect(t.port(), kOpen, kAttacker));
  for (uint8_t op : {io::kRead, io::kWriteZeroes}) {
    Sqe sqe{};
    sqe.opcode = op;
    sqe.nsid = 1;
    sqe.cdw10 = 0xFFFFFFFF;  // SLBA 2^64 - 1
    sqe.cdw11 = 0xFFFFFFFF;
    sqe.cdw12 = 1;  // two blocks: SLBA + 2 wraps to 1
    std::vector<uint8_t> in;
    auto r = h.io.command(sqe, {}, op == io::kRead ? &in : nullptr, op == io::kRead ? 1024 : 0);
    EXPECT_EQ(r.status, status::kLbaOutOfRange) << "opcode " << int(op);
    EXPECT_TRUE(r.dnr) << "opcode " << int(op);
  }
  auto w = h.io.write(1, ~uint64_t{0}, std::vector<uint8_t>(1024, 1), 512);
  EXPECT_EQ(w.status, status::kLbaOutOfRange);
  EXPECT_TRUE(w.dnr);
}

TEST(TargetAttack, DeallocateChecksEveryRangeBeforeDiscardingAny) {
  TargetConfig cfg = two_tenants();
  cfg.subsystems[0].namespaces.push_back({2, "mem:1M,seed=23,fail=discard:1", "", true});
  Served t(cfg);
  Host h;
  ASSERT_TRUE(h.connect(t.port(), kOpen, kAttacker));
  auto dsm = [&](uint32_t nsid, const std::vector<DsmRange>& ranges) {
    Sqe sqe{};
    sqe.opcode = io::kDsm;
    sqe.nsid = nsid;
    sqe.cdw10 = static_cast<uint32_t>(ranges.size() - 1);
    sqe.cdw11 = 1u << 2;  // deallocate
    std::vector<uint8_t> data(ranges.size() * sizeof(DsmRange));
    std::memcpy(data.data(), ranges.data(), data.size());
    return h.io.command(sqe, data);
  };
  // A good range, then one that wraps: refused, and the good one is not discarded.
  auto r = dsm(1, {{0, 16, 0}, {0, 16, ~uint64_t{0} - 4}});
  EXPECT_EQ(r.status, status::kLbaOutOfRange);
  EXPECT_TRUE(r.dnr);
  std::vector<uint8_t> got;
  ASSERT_EQ(h.io.read(1, 0, 16, 512, got).status, 0);
  EXPECT_EQ(got, u8(test::pattern(0, 16 * 512, 21))) << "nothing was deallocated";
  // A device error on the discard is reported, not dropped.
  r = dsm(2, {{0, 8, 0}});
  EXPECT_EQ(r.status, status::kWriteFault);
  EXPECT_EQ(dsm(1, {{0, 8, 100}}).status, 0);
}

// A host may put no more in a capsule than IOCCSZ (8 KiB) announces, and may not ask for
// C2HData padding (HPDA): either ends the connection with a termination request.
TEST(TargetAttack, CapsulesAboveIoccszAndAPaddingRequestEndTheConnection) {
  Served t(two_tenants());
  Host h;
  ASSERT_TRUE(h.connect(t.port(), kOpen, kAttacker));
  Sqe sqe{};
  sqe.opcode = io::kWrite;
  sqe.nsid = 1;
  sqe.cdw12 = 31;  // 32 blocks: 16 KiB
  sqe.dptr.length = 16384;
  sqe.dptr.type = kSglInCapsule;
  ASSERT_TRUE(h.io.send_raw(capsule(sqe, std::vector<uint8_t>(16384, 0xee))));
  auto pdu = h.io.recv_pdu();
  ASSERT_TRUE(pdu);
  EXPECT_EQ((*pdu)[0], pdu::kC2HTermReq);
  EXPECT_TRUE(h.io.closed_by_peer());
  std::vector<uint8_t> got;
  ASSERT_TRUE(h.connect(t.port(), kOpen, kAttacker));
  ASSERT_EQ(h.io.read(1, 0, 32, 512, got).status, 0);
  EXPECT_EQ(got, u8(test::pattern(0, 16384, 21))) << "the refused write reached the device";

  NvmeClient c;
  ASSERT_TRUE(c.open_raw(t.port()));
  ICReq req{};
  req.hdr = {pdu::kICReq, 0, 128, 0, 128};
  req.hpda = 1;
  ASSERT_TRUE(c.send_raw(std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&req),
                                              reinterpret_cast<uint8_t*>(&req) + sizeof req)));
  pdu = c.recv_pdu();
  ASSERT_TRUE(pdu);
  EXPECT_EQ((*pdu)[0], pdu::kC2HTermReq);
  EXPECT_TRUE(c.closed_by_peer());
}

// Hosts reset their connections while the target has paused them in the middle of a receive
// (more than 16 PDUs came at once) with writes waiting for their data after an R2T: a connection
// freed by the reap of another must not be woken afterwards (the address sanitizer build found
// a use after free here, with the reviewer's script of eight such hosts in a loop).
TEST(TargetAttack, ResetsWhileReadingIsPausedFreeEachConnectionOnce) {
  TargetConfig cfg = two_tenants();
  cfg.subsystems[0].cntlid_max = 100;
  Served t(cfg);
  for (int round = 0; round < 8; ++round) {
    std::vector<std::unique_ptr<Host>> hosts;
    for (int i = 0; i < 6; ++i) {
      hosts.push_back(std::make_unique<Host>());
      hosts.back()->io.queue_size = 64;
      ASSERT_TRUE(hosts.back()->connect(t.port(), kOpen, kAttacker));
    }
    std::vector<uint8_t> burst;
    for (uint16_t cid = 1; cid <= 17 + 4 * round; ++cid) {  // their data never comes
      Sqe sqe{};
      sqe.opcode = io::kWrite;
      sqe.cid = cid;
      sqe.nsid = 1;
      sqe.cdw10 = cid * 8u;
      sqe.cdw12 = 7;
      sqe.dptr.length = 4096;
      sqe.dptr.type = kSglTransport;
      auto p = capsule(sqe, {});
      burst.insert(burst.end(), p.begin(), p.end());
    }
    for (auto& h : hosts) ASSERT_TRUE(h->io.send_raw(burst));
    for (auto& h : hosts) {
      h->io.abort();
      h->admin.abort();
    }
  }
  Host ok;
  ASSERT_TRUE(ok.connect(t.port(), kOpen, kVictim));
  std::vector<uint8_t> got;
  ASSERT_EQ(ok.io.read(1, 0, 8, 512, got).status, 0);
  EXPECT_EQ(got, u8(test::pattern(0, 4096, 21)));
}

// A host NQN with a newline and a forged line after it (and a terminal escape) is logged on one
// line, escaped: no "authenticated" line appears that the target did not write.
TEST(TargetAttack, PeerStringsInTheLogCannotForgeLines) {
  std::mutex mu;
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel, std::string_view m) {
    std::lock_guard lock(mu);
    lines.emplace_back(m);
  });
  {
    Served t(two_tenants());
    NvmeClient c;
    ASSERT_TRUE(c.open(t.port()));
    const std::string forged = kAttacker + "\n2026-12-06T00:00:00.000Z blkcopy: info: serve: host " +
                               kVictim + " authenticated\x1b[2K";
    EXPECT_EQ(c.connect(0, kLocked, forged).status, status::kConnectInvalidHost);
  }
  set_log_sink(nullptr);
  bool seen = false;
  for (const std::string& m : lines) {
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_EQ(m.find('\x1b'), std::string::npos) << m;
    if (m.find("refused") != std::string::npos) {
      seen = true;
      EXPECT_NE(m.find("\\x0a2026-12-06"), std::string::npos) << m;
    }
  }
  EXPECT_TRUE(seen) << "the refusal was not logged";
  EXPECT_EQ(printable("a\\b\tc"), "a\\\\b\\x09c");
  EXPECT_EQ(printable("\xc2\x9b\xe2\x80\xae"), "\\xc2\\x9b\\xe2\\x80\\xae") << "C1 CSI, RLO";
}

TEST(TargetAttack, TheTargetGoesAwayWithRequestsInFlight) {
  TargetConfig cfg = two_tenants();
  cfg.subsystems[0].namespaces.push_back({2, "mem:1M,latency=300ms", "", true});
  auto t = std::make_unique<Served>(cfg);
  Host h;
  ASSERT_TRUE(h.connect(t->port(), kOpen, kAttacker));
  Sqe sqe{};
  sqe.opcode = io::kRead;
  sqe.cid = 9;
  sqe.nsid = 2;
  sqe.dptr.length = 512;
  sqe.dptr.type = kSglTransport;
  ASSERT_TRUE(h.io.send_raw(capsule(sqe, {})));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  t.reset();  // waits for the read on the slow device; LeakSanitizer checks nothing is lost
  EXPECT_TRUE(h.io.closed_by_peer(2000));
}

}  // namespace
}  // namespace blkcopy

namespace blkcopy {
namespace {

using namespace nvme;

// A port that listens on every address is announced at the address the host reached, never as
// 0.0.0.0 (which a remote host cannot use).
TEST(TargetDiscovery, AWildcardPortIsAnnouncedAtTheAddressTheHostReached) {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "0.0.0.0", 0, {kOpen}});
  cfg.subsystems.push_back({kOpen, true, {}, {{1, "mem:1M", "", true}}});
  Served t(cfg);
  test::NvmeClient disc;
  ASSERT_TRUE(disc.open(t.port()));
  ASSERT_EQ(disc.connect(0, kDiscoveryNqn, kAttacker).status, 0);
  Sqe log{};
  log.opcode = admin::kGetLogPage;
  log.cdw10 = kLogDiscovery | (((kDiscHeaderSize + kDiscEntrySize) / 4 - 1) << 16);
  std::vector<uint8_t> page;
  ASSERT_EQ(disc.command(log, {}, &page, kDiscHeaderSize + kDiscEntrySize).status, 0);
  std::span<const uint8_t> p(page);
  ASSERT_EQ(get<uint64_t>(p, 8), 1u);
  const auto entry = p.subspan(kDiscHeaderSize);
  std::string addr(reinterpret_cast<const char*>(entry.data() + disc::kTraddr), 256);
  addr.erase(addr.find_last_not_of(std::string(" \0", 2)) + 1);
  EXPECT_EQ(addr, "127.0.0.1");
  EXPECT_EQ(entry[disc::kAdrfam], 1);
}

long cpu_ticks(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(in, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

// Out of file descriptors, the accept loop waits instead of spinning, and serves again once
// descriptors are free.
TEST(TargetAttack, RunningOutOfDescriptorsBacksOffAndRecovers) {
  const uint16_t port = 4470 + static_cast<uint16_t>(getpid() % 500);
  const pid_t pid = fork();
  if (pid == 0) {
    rlimit rl{48, 48};  // the target raises its soft limit to the hard one: 48
    setrlimit(RLIMIT_NOFILE, &rl);
    execl(BLKCOPY_CLI, BLKCOPY_CLI, "serve", "--ns", "mem:1M", "--nqn", kOpen.c_str(), "--listen",
          fmt::format("127.0.0.1:{}", port).c_str(), "--discovery-port", "0",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  test::NvmeClient probe;
  for (int i = 0; i < 100 && !probe.open(port); ++i) {
    probe.close();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  probe.close();
  std::vector<std::unique_ptr<test::NvmeClient>> flood;
  for (int i = 0; i < 80; ++i) {
    flood.push_back(std::make_unique<test::NvmeClient>());
    (void)flood.back()->open_raw(port);  // the kernel completes the handshake; accept fails
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const long before = cpu_ticks(pid);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long used = cpu_ticks(pid) - before;  // clock ticks, 100 a second
  EXPECT_LT(used, 30) << "the accept loop spun: " << used << " ticks in a second";
  flood.clear();
  // Once the flood is gone, a fresh host is served again.
  bool served = false;
  for (int i = 0; i < 40 && !served; ++i) {
    test::NvmeClient fresh;
    served = fresh.open(port) && fresh.connect(0, kOpen, kVictim).status == 0;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(served);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace blkcopy
