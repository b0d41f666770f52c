#include "tests/scripted_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace blkcopy::test {

using namespace nvme;

bool read_all(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n) {
    const ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

uint16_t free_port() {
  uint16_t port = 0;
  ::close(listen_loopback(port));
  return port;
}

int listen_loopback(uint16_t& port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(fd, 4) != 0) {
    port = 0;
    return fd;
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  port = ntohs(sa.sin_port);
  return fd;
}

ScriptedTarget::ScriptedTarget(Script script, uint32_t maxh2cdata) {
  fd_ = listen_loopback(port_);
  thread_ = std::thread([this, script, maxh2cdata] {
    const int c = accept(fd_, nullptr, nullptr);
    if (c < 0) return;
    ICReq req;
    ICResp resp{};
    resp.hdr = {pdu::kICResp, 0, 128, 0, 128};
    resp.maxh2cdata = maxh2cdata;
    if (read_all(c, &req, sizeof req) && ::write(c, &resp, sizeof resp) == sizeof resp) {
      if (auto sqe = capsule(c)) script(c, *sqe);
    }
    uint8_t b[4096];
    for (ssize_t n; (n = ::read(c, b, sizeof b)) > 0;) got.insert(got.end(), b, b + n);
    ::close(c);
  });
}

void ScriptedTarget::join() {
  if (!thread_.joinable()) return;
  shutdown(fd_, SHUT_RDWR);
  thread_.join();
  ::close(fd_);
}

std::optional<Sqe> ScriptedTarget::capsule(int fd) {
  PduHeader h;
  if (!read_all(fd, &h, sizeof h) || h.type != pdu::kCapsuleCmd || h.plen < 72) return std::nullopt;
  std::vector<uint8_t> rest(h.plen - sizeof h);
  if (!read_all(fd, rest.data(), rest.size())) return std::nullopt;
  Sqe sqe;
  std::memcpy(&sqe, rest.data(), sizeof sqe);
  return sqe;
}

void ScriptedTarget::send(int fd, const void* p, size_t n) {
  (void)!::send(fd, p, n, MSG_NOSIGNAL);
}

}  // namespace blkcopy::test
