#include "bench/served.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/nvme_client.h"

namespace blkcopy::bench {

using Clock = std::chrono::steady_clock;

pid_t start_serve(const std::string& cli, const std::vector<std::string>& args, uint16_t port,
                  const std::string& nqn) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv{const_cast<char*>(cli.c_str()), const_cast<char*>("serve")};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(cli.c_str(), argv.data());
    _exit(127);
  }
  for (int i = 0; i < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (fresh_host_ms(port, nqn, 0) >= 0) return pid;
  }
  stop_serve(pid);
  return -1;
}

void stop_serve(pid_t pid) {
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

long rss_kib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

double fresh_host_ms(uint16_t port, const std::string& nqn, int i, uint32_t nsid) {
  const auto start = Clock::now();
  test::NvmeClient admin, io;
  const std::string host = fmt::format("nqn.2024-01.io.blkcopy:fresh-{}", i);
  if (!admin.open(port)) return -1;
  auto c = admin.connect(0, nqn, host);
  if (c.status || !io.open(port) || io.connect(1, nqn, host, static_cast<uint16_t>(c.dw0)).status) {
    return -1;
  }
  std::vector<uint8_t> got;
  if (io.read(nsid, 0, 8, 512, got).status) return -1;
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace blkcopy::bench
