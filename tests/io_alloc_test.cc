// The I/O path of the target and of the host allocates nothing per command once warm. Counted
// with a replacement of the global operator new (hence a test binary of its own: the sanitizer
// builds keep theirs), over real sockets with the target on its own thread, for reads, writes
// and Copies at queue depth 32, offloaded by the namespace and emulated by the target.
#include <gtest/gtest.h>

#include <blkcopy/open.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "tests/served_target.h"
#include "tests/test_util.h"

namespace {
std::atomic<uint64_t> g_news{0};
}  // namespace

void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace blkcopy {
namespace {

using namespace nvme;

const std::string kSub = "nqn.2024-01.io.blkcopy.test:alloc";
constexpr uint64_t K = 1024;

// QD commands in flight, each slot cycling read, write, copy of 4 KiB, until `total` have
// completed. Returns the number that failed.
struct Workload {
  Device& dev;
  EventLoop& loop;
  static constexpr int kQd = 32;
  struct Slot {
    void* buf = nullptr;
    CopyDesc desc;
    CopyReport report;
    uint64_t n = 0;
  };
  std::vector<Slot> slots = std::vector<Slot>(kQd);
  uint64_t started = 0, completed = 0, failed = 0, total = 0;

  Workload(Device& d, EventLoop& l) : dev(d), loop(l) {
    for (int i = 0; i < kQd; ++i) {
      slots[i].buf = std::aligned_alloc(4096, 4 * K);
      // Sources in the first half, destinations in the second: no copy reads what another writes.
      slots[i].desc.sources = {{&dev, i * 4 * K, 4 * K}};
      slots[i].desc.dst = {&dev, (1024 + i) * 4 * K, 4 * K};
    }
  }
  ~Workload() {
    for (Slot& s : slots) std::free(s.buf);
  }
  void issue(Slot& s) {
    ++started;
    Request r;
    switch (s.n++ % 3) {
      case 0: r = {Op::read, (512 + (&s - slots.data())) * 4 * K, 4 * K, s.buf}; break;
      case 1: r = {Op::write, (256 + (&s - slots.data())) * 4 * K, 4 * K, s.buf}; break;
      default:
        s.report.not_supported.clear();
        s.report.offloaded_on.clear();
        r.op = Op::copy;
        r.copy = &s.desc;
        r.report = &s.report;
    }
    dev.submit(r, [this, &s](Status st) {
      ++completed;
      if (!st.ok()) ++failed;
      if (started < total) issue(s);
    });
  }
  bool run(uint64_t n) {
    total = started + n;
    const uint64_t until = completed + n;
    for (Slot& s : slots) issue(s);
    return loop.run_until([&] { return completed >= until && completed == started; }).ok();
  }
};

void expect_no_allocation_per_command(const std::string& device) {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}});
  cfg.subsystems.push_back({kSub, true, {}, {{1, device, "", true}}});
  test::Served t(cfg);
  auto loop = test::make_loop();
  auto d = open_device(*loop, "nvme-tcp://127.0.0.1:" + std::to_string(t.port()) + "/" + kSub + "?ns=1");
  ASSERT_TRUE(d) << d.error().message();
  Workload w(**d, *loop);
  ASSERT_TRUE(w.run(6000));  // warm: pools and queues grow to what QD 32 needs
  ASSERT_EQ(w.failed, 0u);
  const uint64_t before = g_news.load();
  constexpr uint64_t kCommands = 30000;
  ASSERT_TRUE(w.run(kCommands));
  const uint64_t news = g_news.load() - before;
  ASSERT_EQ(w.failed, 0u);
  // Nothing per command; a little for what runs by the clock (statistics, keep-alive).
  std::printf("%s: %llu allocations for %llu commands (host and target)\n", device.c_str(),
              static_cast<unsigned long long>(news), static_cast<unsigned long long>(kCommands));
  EXPECT_LT(news, kCommands / 100) << news << " allocations for " << kCommands << " commands";
}

TEST(IoPathAllocations, OffloadedCopiesReadsAndWritesAllocateNothingPerCommand) {
  expect_no_allocation_per_command("mem:16M,seed=3");
}

TEST(IoPathAllocations, CopiesTheTargetEmulatesAllocateNothingPerCommand) {
  expect_no_allocation_per_command("mem:16M,seed=3,nocopy");
}

}  // namespace
}  // namespace blkcopy
