// The host driver against peers that accept and then go silent, or never accept: every set-up
// step fails within its time limit with a message naming the step, and the tools say so too.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "nvme/spec.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using Clock = std::chrono::steady_clock;

// A listener on loopback that misbehaves in one of these ways.
class SilentPeer {
 public:
  enum Mode {
    never_accept,   // backlog full: the kernel drops further SYNs
    accept_only,    // accepts, reads, never answers
    icresp_only,    // answers the ICReq, then nothing
  };
  explicit SilentPeer(Mode mode) : mode_(mode) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(listen(fd_, mode == never_accept ? 0 : 8), 0);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    if (mode == never_accept) {
      // Fill the accept queue so that the next SYNs go unanswered.
      for (int i = 0; i < 2; ++i) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        (void)connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
        fillers_.push_back(c);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      return;
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~SilentPeer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    for (int c : fillers_) ::close(c);
    for (int c : accepted_) ::close(c);
    ::close(fd_);
  }
  uint16_t port() const { return port_; }

 private:
  void serve() {
    while (!stop_) {
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      accepted_.push_back(c);
      if (mode_ == icresp_only) {
        uint8_t req[128];
        if (recv(c, req, sizeof req, MSG_WAITALL) != 128) continue;
        nvme::ICResp r{};
        r.hdr = {nvme::pdu::kICResp, 0, 128, 0, 128};
        r.maxh2cdata = 131072;
        (void)send(c, &r, sizeof r, MSG_NOSIGNAL);
      }
    }
  }
  Mode mode_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<int> fillers_, accepted_;
};

struct Case {
  SilentPeer::Mode mode;
  const char* step;
};

class HostTimeouts : public ::testing::TestWithParam<Case> {};

std::string case_name(const ::testing::TestParamInfo<Case>& p) {
  const char* const kNames[] = {"SynsDropped", "NoICResp", "NoConnectAnswer"};
  return kNames[p.param.mode];
}

TEST_P(HostTimeouts, OpeningFailsWithinTheLimitNamingTheStep) {
  SilentPeer peer(GetParam().mode);
  auto loop = test::make_loop();
  const std::string spec = "nvme-tcp://127.0.0.1:" + std::to_string(peer.port()) +
                           "/nqn.2024-01.io.example:s?ns=1&connect_timeout=300";
  const auto start = Clock::now();
  auto d = open_device(*loop, spec);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code(), ETIMEDOUT) << d.error().message();
  EXPECT_NE(d.error().message().find(GetParam().step), std::string::npos) << d.error().message();
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(2));
}

INSTANTIATE_TEST_SUITE_P(
    SilentPeers, HostTimeouts,
    ::testing::Values(Case{SilentPeer::never_accept, "TCP connect timed out after 300 ms"},
                      Case{SilentPeer::accept_only, "ICReq/ICResp timed out after 300 ms"},
                      Case{SilentPeer::icresp_only,
                           "fabrics Connect: NVMe/TCP queue: command 1 (opcode 0x7f) got no answer "
                           "in 300 ms"}),
    case_name);

TEST(HostTimeouts, DiscoverGivesUpOnASilentPeer) {
  SilentPeer peer(SilentPeer::accept_only);
  const auto start = Clock::now();
  auto r = test::run_cli({"discover", "127.0.0.1:" + std::to_string(peer.port()),
                          "--connect-timeout", "300"});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("ICReq/ICResp timed out after 300 ms"), std::string::npos) << r.err;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
}

}  // namespace
}  // namespace blkcopy
