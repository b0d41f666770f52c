// blkcopy-auth-flood-bench: what keyless peers that keep starting DH-HMAC-CHAP cost everyone
// else. Each peer claims a keyed host's NQN (anyone can) and sends Negotiate after Negotiate:
// every one makes the target generate an ffdhe8192 key pair (about 7 ms of CPU). Meanwhile a
// legitimate host (no key needed on this subsystem: --allow-any-host) sends Identify after
// Identify on its own connection; its latency is the figure, first alone, then under the flood.
//
//   build/blkcopy-auth-flood-bench [--peers 8] [--seconds 10] [--cli build/blkcopy] [--port 4497]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "bench/served.h"
#include "nvme/auth/dhchap.h"
#include "nvme/codec.h"
#include "tests/auth_target.h"

using namespace blkcopy;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kNqn = "nqn.2024-01.io.blkcopy:auth-flood";
const std::string kKeyed = "nqn.2024-01.io.blkcopy:keyed-host";
const std::string kKey = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";

// Negotiate, read the Challenge, again, on fresh connections, until stopped.
void flood(uint16_t port, const std::atomic<bool>& stop, std::atomic<uint64_t>& negotiates,
           std::atomic<uint64_t>& refused) {
  while (!stop) {
    test::NvmeClient c;
    if (!c.open(port) || c.connect(0, kNqn, kKeyed).status) continue;
    for (uint16_t tid = 1; !stop; ++tid) {
      const auto msg = test::auth_peer::negotiate(c, tid, {5});  // ffdhe8192
      if (msg.empty()) break;
      ++(msg.size() > 1 && msg[1] == nvme::auth::kIdChallenge ? negotiates : refused);
    }
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * double(v.size() - 1))];
}

// Identify after Identify for `seconds`: the latencies, ms.
std::vector<double> identify_for(test::NvmeClient& c, int seconds) {
  std::vector<double> ms;
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  std::vector<uint8_t> id;
  while (Clock::now() < end) {
    const auto t0 = Clock::now();
    if (c.identify(nvme::kCnsController, 0, id).status) break;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  int peers = 8, seconds = 10;
  std::string cli = "build/blkcopy";
  uint16_t port = 4497;
  CLI::App app{"What keyless peers starting DH-HMAC-CHAP cost a legitimate host"};
  app.add_option("--peers", peers, "keyless peers (default 8)");
  app.add_option("--seconds", seconds, "seconds per phase (default 10)");
  app.add_option("--cli", cli, "the blkcopy binary (default build/blkcopy)");
  app.add_option("--port", port, "loopback port for the target (default 4497)");
  CLI11_PARSE(app, argc, argv);
  const pid_t pid = bench::start_serve(
      cli, {"--ns", "mem:16M", "--nqn", kNqn, "--listen", fmt::format("127.0.0.1:{}", port),
            "--discovery-port", "0", "--host-key", kKeyed + "=" + kKey, "--allow-any-host",
            "--dhchap-dhgroup", "ffdhe8192"},
      port, kNqn);
  if (pid < 0) {
    fmt::print(stderr, "auth-flood-bench: the target did not come up on port {}\n", port);
    return 1;
  }
  test::NvmeClient legit;
  if (!legit.open(port) || legit.connect(0, kNqn, "nqn.2024-01.io.blkcopy:legit").status) {
    fmt::print(stderr, "auth-flood-bench: the legitimate host could not connect\n");
    bench::stop_serve(pid);
    return 1;
  }
  const auto alone = identify_for(legit, seconds);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> negotiates{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < peers; ++i) threads.emplace_back([&] { flood(port, stop, negotiates, refused); });
  const auto flooded = identify_for(legit, seconds);
  // A host that arrives during the flood: connect, Connect, Identify on a fresh connection.
  std::vector<double> fresh;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    test::NvmeClient c;
    std::vector<uint8_t> id;
    if (!c.open(port) || c.connect(0, kNqn, "nqn.2024-01.io.blkcopy:fresh").status ||
        c.identify(nvme::kCnsController, 0, id).status) {
      fresh.push_back(-1);
      continue;
    }
    fresh.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  stop = true;
  for (auto& t : threads) t.join();
  bench::stop_serve(pid);
  fmt::print("legitimate Identify alone         {} commands: p50 {:.3f} ms, p99 {:.3f} ms\n",
             alone.size(), percentile(alone, 0.5), percentile(alone, 0.99));
  fmt::print("with {} keyless peers negotiating {} commands: p50 {:.3f} ms, p99 {:.3f} ms "
             "(bar: p50 < 5 ms); {} ffdhe8192 Negotiates answered with a Challenge, {} refused "
             "(back-off)\n",
             peers, flooded.size(), percentile(flooded, 0.5), percentile(flooded, 0.99),
             negotiates.load(), refused.load());
  fmt::print("a fresh host under the flood (connect, Connect, Identify), 5 tries: worst {:.1f} ms "
             "(-1: failed)\n",
             *std::max_element(fresh.begin(), fresh.end()));
  return !flooded.empty() && percentile(flooded, 0.5) < 5 ? 0 : 1;
}
