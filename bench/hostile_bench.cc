// blkcopy-hostile-bench: what hostile hosts may cost `blkcopy serve` with its default limits,
// and whether a legitimate host is served meanwhile. Starts the target as a child process (its
// RSS is its own), then for --seconds:
//   - half of --connections amplify: each keeps a queue of 128 Copy commands in flight, each
//     ~260 bytes on the wire and 64 MiB of copying the target must emulate (its namespace
//     cannot offload);
//   - the other half never read their socket: each queues 1 MiB reads until the target stops
//     taking them;
//   - a legitimate host reads 4 KiB blocks one at a time from another namespace, checking the
//     data, and every second a fresh host connects and reads 4 KiB.
// Reports the target's highest RSS, the legitimate host's latency percentiles and the fresh
// hosts' worst time, against the bars: RSS < 1 GiB, p99 < 50 ms, fresh host < 1 s.
//
//   build/blkcopy-hostile-bench [--connections 50] [--seconds 20] [--cli build/blkcopy]
#include <fmt/format.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "bench/served.h"
#include "drivers/mem/mem_device.h"
#include "nvme/spec.h"
#include "tests/nvme_client.h"

using Clock = std::chrono::steady_clock;
using blkcopy::test::NvmeClient;
namespace nvme = blkcopy::nvme;

namespace {

const std::string kNqn = "nqn.2024-01.io.blkcopy:hostile";

std::vector<uint8_t> capsule(const nvme::Sqe& sqe, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> pdu(72 + data.size());
  nvme::PduHeader h{nvme::pdu::kCapsuleCmd, 0, 72, static_cast<uint8_t>(data.empty() ? 0 : 72),
                    static_cast<uint32_t>(72 + data.size())};
  std::memcpy(pdu.data(), &h, 8);
  std::memcpy(pdu.data() + 8, &sqe, sizeof sqe);
  if (!data.empty()) std::memcpy(pdu.data() + 72, data.data(), data.size());
  return pdu;
}

struct Queue {
  NvmeClient admin, io;
  bool connect(uint16_t port, const std::string& host) {
    io.queue_size = 128;
    if (!admin.open(port)) return false;
    auto c = admin.connect(0, kNqn, host);
    return c.status == 0 && io.open(port) &&
           io.connect(1, kNqn, host, static_cast<uint16_t>(c.dw0)).status == 0;
  }
};

// 128 Copies of 8 ranges x 8 MiB on namespace 1, one more for every answer.
void amplify(Queue& q, const std::atomic<bool>& stop, std::atomic<uint64_t>& copies) {
  std::vector<uint8_t> ranges;
  for (int r = 0; r < 8; ++r) {
    nvme::CopyRange0 c{};
    c.slba = uint64_t(r) * 16384;
    c.nlb = 16383;
    const auto* b = reinterpret_cast<const uint8_t*>(&c);
    ranges.insert(ranges.end(), b, b + sizeof c);
  }
  auto copy = [&](uint16_t cid) {
    nvme::Sqe sqe{};
    sqe.opcode = nvme::io::kCopy;
    sqe.nsid = 1;
    sqe.cid = cid;
    sqe.cdw10 = 1u << 20;  // to 512 MiB
    sqe.cdw12 = 7;
    sqe.dptr.length = static_cast<uint32_t>(ranges.size());
    sqe.dptr.type = nvme::kSglInCapsule;
    return q.io.send_raw(capsule(sqe, ranges));
  };
  for (uint16_t cid = 1; cid <= 128; ++cid) {
    if (!copy(cid)) return;
  }
  while (!stop) {
    auto pdu = q.io.recv_pdu(500);
    if (!pdu) {
      if (q.io.closed_by_peer(0)) return;
      continue;
    }
    if ((*pdu)[0] != nvme::pdu::kCapsuleResp) return;
    ++copies;
    nvme::Cqe cqe;
    std::memcpy(&cqe, pdu->data() + 8, sizeof cqe);
    if (!copy(cqe.cid)) return;
  }
}

// 1 MiB reads, a queue's worth, never read back.
void hoard(Queue& q) {
  nvme::Sqe sqe{};
  sqe.opcode = nvme::io::kRead;
  sqe.nsid = 1;
  sqe.cdw12 = 2047;
  sqe.dptr.length = 1u << 20;
  sqe.dptr.type = nvme::kSglTransport;
  std::vector<uint8_t> burst;
  for (uint16_t cid = 1; cid <= 128; ++cid) {
    sqe.cid = cid;
    auto p = capsule(sqe, {});
    burst.insert(burst.end(), p.begin(), p.end());
  }
  (void)q.io.send_raw(burst);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * double(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int connections = 50, seconds = 20;
  std::string cli = "build/blkcopy";
  uint16_t port = 4498;
  std::vector<std::string> extra;
  CLI::App app{"What hostile hosts cost the NVMe/TCP target, and whether others are served"};
  app.add_option("--connections", connections, "hostile connections (default 50, half each kind)");
  app.add_option("--seconds", seconds, "how long they stay (default 20)");
  app.add_option("--cli", cli, "the blkcopy binary (default build/blkcopy)");
  app.add_option("--port", port, "loopback port for the target (default 4498)");
  app.add_option("--serve-option", extra, "an extra option for blkcopy serve (repeatable)");
  CLI11_PARSE(app, argc, argv);
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  // Namespace 1: 1 GiB that cannot offload and stores nothing (its RAM is not the question);
  // namespace 2: 64 MiB of known data for the legitimate host.
  std::vector<std::string> args{"--ns", "mem:1G,nodata,nocopy", "--ns", "mem:64M,seed=7",
                                "--nqn", kNqn, "--listen", fmt::format("127.0.0.1:{}", port),
                                "--discovery-port", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  const pid_t pid = blkcopy::bench::start_serve(cli, args, port, kNqn);
  if (pid < 0) {
    fmt::print(stderr, "hostile-bench: the target did not come up on port {}\n", port);
    return 1;
  }
  const long rss_before = blkcopy::bench::rss_kib(pid);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> copies{0};
  std::vector<std::unique_ptr<Queue>> queues;
  std::vector<std::thread> threads;
  int refused = 0;
  for (int i = 0; i < connections; ++i) {
    auto q = std::make_unique<Queue>();
    if (!q->connect(port, fmt::format("nqn.2024-01.io.blkcopy:hostile-{}", i))) {
      ++refused;
      continue;
    }
    Queue* raw = q.get();
    if (i % 2 == 0) {
      threads.emplace_back([raw, &stop, &copies] { amplify(*raw, stop, copies); });
    } else {
      hoard(*raw);
    }
    queues.push_back(std::move(q));
  }
  // The legitimate host, and the RSS sampled all along.
  Queue legit;
  if (!legit.connect(port, "nqn.2024-01.io.blkcopy:legit")) {
    fmt::print(stderr, "hostile-bench: the legitimate host could not connect\n");
  }
  std::vector<uint8_t> reference(64u << 20);
  blkcopy::fill_pattern(reinterpret_cast<std::byte*>(reference.data()), 0, reference.size(), 7);
  std::vector<double> latency_ms, fresh_ms;
  long rss_max = rss_before;
  uint64_t wrong = 0, failed = 0;
  const auto start = Clock::now();
  auto next_fresh = start + std::chrono::seconds(1);
  uint64_t lba = 0;
  while (Clock::now() - start < std::chrono::seconds(seconds)) {
    const auto t0 = Clock::now();
    std::vector<uint8_t> got;
    lba = (lba + 1237 * 8) % (131072 - 8);
    if (legit.io.read(2, lba, 8, 512, got).status) {
      ++failed;
    } else if (!std::equal(got.begin(), got.end(), reference.begin() + lba * 512)) {
      ++wrong;
    }
    latency_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    rss_max = std::max(rss_max, blkcopy::bench::rss_kib(pid));
    if (Clock::now() >= next_fresh) {
      fresh_ms.push_back(blkcopy::bench::fresh_host_ms(port, kNqn, static_cast<int>(fresh_ms.size()) + 1, 2));
      next_fresh += std::chrono::seconds(1);
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  const double worst_fresh = fresh_ms.empty() || *std::min_element(fresh_ms.begin(), fresh_ms.end()) < 0
                                 ? -1
                                 : *std::max_element(fresh_ms.begin(), fresh_ms.end());
  const double p50 = percentile(latency_ms, 0.50), p99 = percentile(latency_ms, 0.99);
  fmt::print("hostile connections          {} ({} refused): {} amplifying Copies, {} hoarding reads\n",
             queues.size(), refused, (connections + 1) / 2, connections / 2);
  fmt::print("copies the amplifiers got    {}\n", copies.load());
  fmt::print("target RSS                   {:.0f} MiB before, {:.0f} MiB at most (bar: < 1024 MiB)\n",
             rss_before / 1024.0, rss_max / 1024.0);
  fmt::print("legitimate 4 KiB reads       {} ({} failed, {} wrong): p50 {:.2f} ms, p99 {:.2f} ms, "
             "max {:.2f} ms (bar: p99 < 50 ms)\n",
             latency_ms.size(), failed, wrong, p50, p99,
             latency_ms.empty() ? 0.0 : *std::max_element(latency_ms.begin(), latency_ms.end()));
  fmt::print("fresh host connect + read    {} times, worst {:.1f} ms (bar: < 1000 ms)\n",
             fresh_ms.size(), worst_fresh);
  queues.clear();
  blkcopy::bench::stop_serve(pid);
  const bool ok = rss_max < 1024 * 1024 && p99 < 50 && worst_fresh >= 0 && worst_fresh < 1000 &&
                  wrong == 0 && failed == 0;
  return ok ? 0 : 1;
}
