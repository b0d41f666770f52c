// blkcopy-conn-bench: what many connections cost `blkcopy serve`, and whether a fresh host is
// still served while they are held. Starts the target as a child process (so its RSS is its
// own), opens N connections that complete ICReq and an admin-queue Connect, and reports the
// target's RSS before and after and how long a fresh host takes to connect and read 4 KiB.
//
//   build/blkcopy-conn-bench [--connections 1000] [--cli build/blkcopy] [--port 4499]
#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "bench/served.h"
#include "tests/nvme_client.h"

using Clock = std::chrono::steady_clock;

namespace {

const std::string kNqn = "nqn.2024-01.io.blkcopy:conn-bench";

}  // namespace

using blkcopy::bench::fresh_host_ms;
using blkcopy::bench::rss_kib;

int main(int argc, char** argv) {
  int connections = 1000;
  std::string cli = "build/blkcopy";
  uint16_t port = 4499;
  CLI::App app{"What many connections cost the NVMe/TCP target"};
  app.add_option("--connections", connections, "connections to hold (default 1000)");
  app.add_option("--cli", cli, "the blkcopy binary (default build/blkcopy)");
  app.add_option("--port", port, "loopback port for the target (default 4499)");
  CLI11_PARSE(app, argc, argv);

  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  const pid_t pid = blkcopy::bench::start_serve(
      cli,
      {"--ns", "mem:64M", "--nqn", kNqn, "--listen", fmt::format("127.0.0.1:{}", port),
       "--discovery-port", "0", "--max-connections", std::to_string(connections + 100)},
      port, kNqn);
  if (pid < 0) {
    fmt::print(stderr, "conn-bench: the target did not come up on port {}\n", port);
    return 1;
  }
  const long before = rss_kib(pid);
  std::vector<std::unique_ptr<blkcopy::test::NvmeClient>> held;
  int refused = 0;
  const auto start = Clock::now();
  for (int i = 0; i < connections; ++i) {
    auto c = std::make_unique<blkcopy::test::NvmeClient>();
    if (!c->open(port) ||
        c->connect(0, kNqn, fmt::format("nqn.2024-01.io.blkcopy:held-{}", i)).status != 0) {
      ++refused;
      continue;
    }
    held.push_back(std::move(c));
  }
  const double open_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const long after = rss_kib(pid);
  double worst = 0, total = 0;
  for (int i = 1; i <= 10; ++i) {
    const double ms = fresh_host_ms(port, kNqn, i);
    worst = ms < 0 ? 1e9 : std::max(worst, ms);
    total += ms;
  }
  fmt::print("connections held           {} ({} refused), opened in {:.2f} s\n", held.size(), refused,
             open_s);
  fmt::print("target RSS                 {:.1f} MiB before, {:.1f} MiB with them ({:.1f} KiB each)\n",
             before / 1024.0, after / 1024.0,
             held.empty() ? 0.0 : double(after - before) / double(held.size()));
  fmt::print("fresh host (connect+read)  {:.2f} ms average, {:.2f} ms worst of 10 (bar: < 1000 ms)\n",
             total / 10, worst);
  held.clear();
  blkcopy::bench::stop_serve(pid);
  return worst < 1000 && refused == 0 ? 0 : 1;
}
