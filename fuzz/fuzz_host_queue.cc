// The host's receive path: the input is what a target sends on one NVMe/TCP connection after
// its ICResp (completions, C2HData with or without SUCCESS, R2Ts, termination requests,
// garbage), while the host has a read, a write and a command without data outstanding. Every
// command must end exactly once (completed or failed with the queue), whatever the target
// says; memory, sanitizers and the time limit watch the rest.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz/fuzz.h"
#include "nvme/host/queue.h"
#include "nvme/spec.h"

using namespace blkcopy;
using namespace blkcopy::nvme;

namespace {

struct World {
  std::unique_ptr<EventLoop> loop;
  int listener = -1;
  uint16_t port = 0;
};

World& world() {
  static World w = [] {
    World x;
    x.loop = EventLoop::create().value();
    x.listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(x.listener, reinterpret_cast<sockaddr*>(&sa), len) != 0 ||
        listen(x.listener, 4) != 0 ||
        getsockname(x.listener, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      std::abort();
    }
    x.port = ntohs(sa.sin_port);
    return x;
  }();
  return w;
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n) {
    const ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  QueueOptions o;
  o.timeout_ms = 2000;
  o.connect_timeout_ms = 2000;
  HostQueue::Ptr q;
  bool opened = false;
  int peer = -1;
  auto opening = HostQueue::open_async(*w.loop, "127.0.0.1", w.port, o, [&](Result<HostQueue::Ptr> r) {
    opened = true;
    if (r) q = std::move(*r);
  });
  // Accept the connection and answer its ICReq, while the loop connects.
  (void)w.loop->run_until([&] {
    if (peer < 0) {
      peer = accept4(w.listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (peer >= 0) {
        ICResp r{};
        r.hdr = {pdu::kICResp, 0, 128, 0, 128};
        r.maxh2cdata = 8192;
        if (!write_all(peer, reinterpret_cast<const uint8_t*>(&r), sizeof r)) std::abort();
      }
    }
    return opened;
  });
  if (!q) {
    if (peer >= 0) close(peer);
    return 0;
  }
  // Three commands outstanding (CIDs 1, 2, 3): a read into `in`, a write from `out` (R2T), a
  // flush; each must end exactly once.
  std::vector<uint8_t> in(16384), out(16384, 0x5A);
  int ended[3] = {0, 0, 0};
  Sqe rd{}, wr{}, fl{};
  rd.opcode = io::kRead;
  wr.opcode = io::kWrite;
  fl.opcode = io::kFlush;
  (void)q->submit(rd, nullptr, in.data(), static_cast<uint32_t>(in.size()),
                  [&](Status, const Cqe&) { ++ended[0]; });
  (void)q->submit(wr, out.data(), nullptr, static_cast<uint32_t>(out.size()),
                  [&](Status, const Cqe&) { ++ended[1]; });
  (void)q->submit(fl, nullptr, nullptr, 0, [&](Status, const Cqe&) { ++ended[2]; });
  // The target's answer: the input, then the end of the connection.
  (void)write_all(peer, data, size);
  shutdown(peer, SHUT_WR);
  (void)w.loop->run_until([&] { return ended[0] && ended[1] && ended[2]; });
  if (ended[0] != 1 || ended[1] != 1 || ended[2] != 1) std::abort();
  q.reset();
  close(peer);
  return 0;
}
