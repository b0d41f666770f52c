// The metrics endpoint: Prometheus text over HTTP with the commands a host sent, counted per
// namespace and kind, Copy bytes by how the target did them, errors by status, latency
// histograms whose counts match the commands; other paths and oversized requests refused.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <sstream>

#include "tests/served_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using namespace nvme;

const std::string kSub = "nqn.2024-01.io.blkcopy:metrics";

// The whole answer to `request` from 127.0.0.1:port (the server closes after it).
std::string http(uint16_t port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    for (size_t off = 0; off < request.size();) {
      const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0 || (n < 0 && errno == EINTR);) {
      if (n > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

// "name{labels} value" lines, by "name{labels}".
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text.substr(text.find("\r\n\r\n") + 4));
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST(Metrics, CountWhatHostsDidPerNamespaceAndHowCopiesWereDone) {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}, PortTls::none});
  cfg.subsystems.push_back({kSub, true, {}, {{1, "mem:8M", "", true}, {2, "mem:8M", "", true}}});
  test::Served t(cfg, {}, true);
  test::Host h;
  ASSERT_TRUE(h.connect(t.port(), kSub, "nqn.2024-01.io.blkcopy:metrics-host"));
  ASSERT_EQ(h.io.write(1, 0, std::vector<uint8_t>(8192, 7), 512).status, 0);
  ASSERT_EQ(h.io.copy(1, 1000, {{0, 16}}).status, 0);              // within namespace 1
  ASSERT_EQ(h.admin.set_host_behavior(true).status, 0);             // copy format 2 on
  ASSERT_EQ(h.io.copy(2, 0, {{0, 16, 1}}, 2).status, 0);            // 1 -> 2: format 2
  EXPECT_NE(h.io.copy(1, 0, {{(8u << 20) / 512 - 4, 8}}).status, 0);  // past the end
  const std::string text = http(t.metrics_port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_NE(text.find("HTTP/1.1 200 OK"), std::string::npos) << text.substr(0, 200);
  EXPECT_NE(text.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  auto m = samples(text);
  const std::string ns1 = fmt::format("subsystem=\"{}\",nsid=\"1\"", kSub);
  const std::string ns2 = fmt::format("subsystem=\"{}\",nsid=\"2\"", kSub);
  EXPECT_EQ(m["blkcopy_commands_total{" + ns1 + ",op=\"write\"}"], 1);
  EXPECT_EQ(m["blkcopy_bytes_total{" + ns1 + ",op=\"write\"}"], 8192);
  EXPECT_EQ(m["blkcopy_commands_total{" + ns1 + ",op=\"copy\"}"], 2);
  EXPECT_EQ(m["blkcopy_command_errors_total{" + ns1 + ",op=\"copy\"}"], 1);
  EXPECT_EQ(m["blkcopy_bytes_total{" + ns1 + ",op=\"copy\"}"], 16 * 512);
  const double copied = m["blkcopy_copy_bytes_total{" + ns2 + ",how=\"offloaded\"}"] +
                        m["blkcopy_copy_bytes_total{" + ns2 + ",how=\"emulated\"}"];
  EXPECT_EQ(copied, 16 * 512) << "the copy into namespace 2, done one way or the other";
  EXPECT_EQ(m["blkcopy_command_latency_seconds_count{" + ns1 + ",op=\"copy\"}"], 2);
  EXPECT_EQ(m["blkcopy_command_latency_seconds_bucket{" + ns1 + ",op=\"copy\",le=\"+Inf\"}"], 2);
  bool status_seen = false;
  for (const auto& [k, v] : m) status_seen |= k.starts_with("blkcopy_errors_by_status_total{") && v >= 1;
  EXPECT_TRUE(status_seen);
  EXPECT_GE(m["blkcopy_connections_open"], 2);
  EXPECT_GE(m["blkcopy_controllers"], 1);
  EXPECT_GE(m["blkcopy_commands_total{op=\"admin\"}"], 1);

  EXPECT_NE(http(t.metrics_port(), "GET /other HTTP/1.1\r\n\r\n").find(" 404 "), std::string::npos);
  EXPECT_NE(http(t.metrics_port(), "POST /metrics HTTP/1.1\r\n\r\n").find(" 405 "), std::string::npos);
  EXPECT_NE(http(t.metrics_port(), "GET /metrics HTTP/1.1\r\n" + std::string(10000, 'x')).find(" 431 "),
            std::string::npos);
}

}  // namespace
}  // namespace blkcopy
