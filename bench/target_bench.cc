// blkcopy-target-bench: the NVMe/TCP target over loopback. 4 KiB random read and write IOPS,
// 128 KiB read throughput, and copies per second for 4 KiB and 1 MiB offloaded copies, from
// several client connections at once. The ratio to reach: 4 KiB copies per second >= 4 KiB
// reads per second through the same target (a copy moves no data over the wire).
//
//   build/blkcopy-target-bench [--seconds 3] [--clients 8]
#include <blkcopy/units.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <thread>

#include <blkcopy/target.h>
#include "tests/nvme_client.h"

using namespace blkcopy;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kNqn = "nqn.2024-01.io.blkcopy:bench";
constexpr uint64_t kBlocks = (1ull << 30) / 512;  // a 1 GiB namespace of 512-byte blocks

struct Run {
  const char* name;
  uint32_t bytes;  // per operation
  enum Kind { read, write, copy } kind;
};

struct Outcome {
  double ops_per_s = 0, mib_per_s = 0;
  uint64_t errors = 0, wire_bytes = 0;
};

Outcome measure(uint16_t port, const Run& run, int clients, double seconds) {
  std::atomic<uint64_t> ops{0}, errors{0}, wire{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      const std::string host = fmt::format("nqn.2024-01.io.blkcopy:bench-{}", t);
      test::NvmeClient admin, io;
      if (!admin.open(port)) return void(++errors);
      auto c = admin.connect(0, kNqn, host);
      if (c.status || !io.open(port) ||
          io.connect(1, kNqn, host, static_cast<uint16_t>(c.dw0)).status) {
        return void(++errors);
      }
      std::mt19937_64 rng(t + 1);
      const uint32_t blocks = run.bytes / 512;
      std::uniform_int_distribution<uint64_t> lba(0, kBlocks / 2 - blocks);
      std::vector<uint8_t> data(run.bytes, 0x5a), got;
      while (!stop) {
        test::Completion r;
        if (run.kind == Run::read) {
          r = io.read(1, lba(rng), blocks, 512, got);
        } else if (run.kind == Run::write) {
          r = io.write(1, lba(rng), data, 512);
        } else {
          r = io.copy(1, kBlocks / 2 + lba(rng), {{lba(rng), blocks}});
        }
        if (r.status) ++errors; else ++ops;
      }
      wire += io.bytes_sent() + io.bytes_received();
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const uint64_t done = ops.load();
  stop = true;
  for (auto& th : threads) th.join();
  Outcome o;
  o.ops_per_s = double(done) / seconds;
  o.mib_per_s = o.ops_per_s * run.bytes / (1 << 20);
  o.errors = errors;
  o.wire_bytes = wire;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blkcopy-target-bench: the NVMe/TCP target over loopback"};
  double seconds = 3;
  int clients = 8;
  app.add_option("--seconds", seconds, "per row (default 3)");
  app.add_option("--clients", clients, "client connections at once (default 8)");
  CLI11_PARSE(app, argc, argv);

  const Run runs[] = {{"4 KiB random read", 4096, Run::read},
                      {"4 KiB random write", 4096, Run::write},
                      {"128 KiB read", 128 * 1024, Run::read},
                      {"4 KiB copy (offloaded)", 4096, Run::copy},
                      {"1 MiB copy (offloaded)", 1 << 20, Run::copy}};
  fmt::print("blkcopy-target-bench: {} client connections, {:.0f} s a row, mem:1G namespace\n",
             clients, seconds);
  for (unsigned cores : {1u, 2u}) {
  std::promise<uint16_t> ready;
  std::atomic<bool> stop{false};
  std::thread server([&] {
    auto loop = EventLoop::create().value();
    nvme::TargetConfig cfg;
    cfg.cores = cores;
    cfg.discovery_port = 0;
    cfg.ports.push_back({1, "127.0.0.1", 0, {kNqn}});
    cfg.subsystems.push_back({kNqn, true, {}, {{1, "mem:1G,seed=1", "", true}}});
    auto target = nvme::Target::create(*loop, cfg).value();
    if (!target->start().ok()) std::abort();
    ready.set_value(target->bound_ports()[0]);
    (void)loop->run_until([&] { return stop.load(); });
  });
  const uint16_t port = ready.get_future().get();

  fmt::print("\ntarget cores: {}\n", cores);
  fmt::print("{:<26} {:>12} {:>12} {:>14} {:>8}\n", "operation", "ops/s", "MiB/s", "wire/op",
             "errors");
  double reads = 0, copies = 0;
  for (const Run& r : runs) {
    Outcome o = measure(port, r, clients, seconds);
    const double per_op = o.ops_per_s > 0 ? double(o.wire_bytes) / (o.ops_per_s * seconds) : 0;
    fmt::print("{:<26} {:>12.0f} {:>12.1f} {:>14} {:>8}\n", r.name, o.ops_per_s, o.mib_per_s,
               format_bytes(per_op), o.errors);
    if (r.kind == Run::read && r.bytes == 4096) reads = o.ops_per_s;
    if (r.kind == Run::copy && r.bytes == 4096) copies = o.ops_per_s;
  }
  const double x = reads > 0 ? copies / reads : 0;
  fmt::print("\nratio: 4 KiB copies/s / 4 KiB reads/s = {:.2f}x  [>= 1.0x] {}\n", x,
             x >= 1.0 ? "reached" : "NOT reached");
  stop = true;
  server.join();
  }
  return 0;
}
