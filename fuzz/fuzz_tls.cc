// TLS on the target's receive path. The first input byte picks the port (TLS required or
// optional) and whether the host first completes a real TLS handshake with the right PSK (an
// in-memory TlsSession on the host's side). The rest are steps, each [op][len][len bytes]:
//   op 0  the bytes as plaintext (NVMe/TCP PDUs or not), encrypted into records and sent
//   op 1  the bytes raw into the stream: partial records, forged alerts, a clear-text PDU
//   op 2  the next records made, cut to `len` bytes: a record that never ends
// The target must answer or end the connection and always end it once the host stops sending;
// memory, sanitizers and the time limit watch the rest.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <vector>

#include <blkcopy/log.h>
#include <blkcopy/target.h>

#include "fuzz/fuzz.h"
#include "nvme/auth/tls_psk.h"
#include "nvme/tcp/tls_session.h"

using namespace blkcopy;

namespace {

constexpr char kSub[] = "nqn.2024-01.io.blkcopy:fuzz";
constexpr char kHost[] = "nqn.2024-01.io.blkcopy:fuzz-host";
// The transport specification's example PSK.
constexpr char kKey[] = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";

struct World {
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<nvme::Target> target;
  nvme::TlsSession::Psk psk;
};

World& world() {
  static World* w = [] {
    set_log_level(LogLevel::error);  // a refused peer per input is the point, not news
    auto* nw = new World;
    nw->loop = EventLoop::create().value();
    nvme::TargetConfig cfg;
    cfg.discovery_port = 0;
    cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}, nvme::PortTls::required});
    nvme::SubsystemConfig s{kSub, true, {}, {}};
    s.namespaces.push_back({1, "mem:1M,seed=1", "", true});
    cfg.subsystems.push_back(s);
    nvme::HostConfig h;
    h.nqn = kHost;
    h.tls_key = kKey;
    cfg.hosts.push_back(h);
    cfg.limits.pdu_ms = cfg.limits.handshake_ms = cfg.limits.connect_ms = 200;
    nw->target = nvme::Target::create(*nw->loop, cfg).value();
    if (!nw->target->start().ok()) std::abort();
    auto key = nvme::auth::parse_tls_key(kKey).value();
    nw->psk = nvme::TlsSession::psk_for(key, kHost, kSub).value();
    return nw;
  }();
  return *w;
}

// Sends everything (the socket is non-blocking: the loop runs while it is full); false when the
// target has closed.
bool send_all(World& w, int fd, const uint8_t* p, size_t n) {
  size_t at = 0;
  bool closed = false;
  Timer limit = w.loop->after(std::chrono::seconds(2), [&closed] { closed = true; });
  (void)w.loop->run_until([&] {
    while (at < n) {
      const ssize_t k = send(fd, p + at, n - at, MSG_NOSIGNAL);
      if (k <= 0) {
        if (k < 0 && errno != EAGAIN) closed = true;
        break;
      }
      at += static_cast<size_t>(k);
    }
    return at == n || closed;
  });
  return at == n;
}

// The host's side of the handshake, pumped through the socket; false when it did not finish.
bool handshake(World& w, int fd, nvme::TlsSession& host) {
  std::vector<uint8_t> out;
  uint8_t buf[16384];
  bool late = false;
  Timer limit = w.loop->after(std::chrono::seconds(2), [&late] { late = true; });
  for (;;) {
    const auto step = host.handshake();
    out.clear();
    host.take_output(out);
    if (!out.empty() && !send_all(w, fd, out.data(), out.size())) return false;
    if (step != nvme::TlsSession::Step::want_read) return step == nvme::TlsSession::Step::done;
    bool got = false;
    (void)w.loop->run_until([&] {
      for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) {
        host.feed(buf, static_cast<size_t>(n));
        got = true;
      }
      return got || late;
    });
    if (late) return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  World& w = world();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  const bool optional = data[0] & 1, secure = data[0] & 2;
  w.target->serve_socket(sv[0], optional ? nvme::PortTls::optional : nvme::PortTls::required);
  auto host = nvme::TlsSession::client(w.psk);
  bool open = !secure || handshake(w, sv[1], *host);
  std::vector<uint8_t> out;
  for (size_t at = 1; open && at + 2 <= size;) {
    const uint8_t op = data[at] % 3;
    const size_t len = std::min<size_t>(data[at + 1], size - at - 2);
    const uint8_t* p = data + at + 2;
    at += 2 + len;
    out.clear();
    if (op == 1 || !secure) {
      out.assign(p, p + len);
    } else {
      host->write(p, len);
      host->take_output(out);
      if (op == 2) out.resize(std::min(out.size(), len));
    }
    open = send_all(w, sv[1], out.data(), out.size());
  }
  // The host stops sending: the target must end the connection (by its limits at the latest).
  shutdown(sv[1], SHUT_WR);
  bool ended = false, late = false;
  Timer limit = w.loop->after(std::chrono::seconds(5), [&late] { late = true; });
  uint8_t sink[65536];
  (void)w.loop->run_until([&] {
    for (ssize_t n;;) {
      n = recv(sv[1], sink, sizeof sink, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) ended = true;
      if (n <= 0) break;
    }
    return ended || late;
  });
  if (!ended) std::abort();  // a connection the target never ended
  close(sv[1]);
  return 0;
}
