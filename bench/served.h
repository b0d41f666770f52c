// `blkcopy serve` as a child process for the benchmarks that measure what the target costs
// (its RSS is its own), and a fresh host that connects and reads 4 KiB.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace blkcopy::bench {

// Starts CLI serve ARGS... and waits until a fresh host is served on `port` (nqn's namespace
// 1); -1 when it did not come up.
pid_t start_serve(const std::string& cli, const std::vector<std::string>& args, uint16_t port,
                  const std::string& nqn);
void stop_serve(pid_t pid);
// The resident set of a process, KiB; -1 when it cannot be read.
long rss_kib(pid_t pid);
// A new host (its NQN made from `i`) connects (admin and I/O queue) and reads 4 KiB of
// namespace `nsid`: milliseconds taken, or -1 when it was not served.
double fresh_host_ms(uint16_t port, const std::string& nqn, int i, uint32_t nsid = 1);

}  // namespace blkcopy::bench
