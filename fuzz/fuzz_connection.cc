// The target's receive path, a whole connection: the input is what a host sends on one socket
// (ICReq, Connect, commands, data, garbage), in chunks whose sizes the input also chooses. The
// target must answer or end the connection, and always end it once the host stops sending;
// memory, sanitizers and the time limit watch the rest.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <cstring>
#include <vector>

#include <blkcopy/log.h>

#include "fuzz/fuzz.h"
#include "nvme/codec.h"
#include "nvme/spec.h"
#include <blkcopy/target.h>

using namespace blkcopy;

namespace {

constexpr char kSub[] = "nqn.2024-01.io.blkcopy:fuzz";
constexpr char kHost[] = "nqn.2024-01.io.blkcopy:fuzz-host";

struct World {
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<nvme::Target> target;
  int admin = -1;  // a controller (ID 1, host kHost) that inputs may add I/O queues to
};

// Sends `pdus` on fd and runs the loop until `answers` bytes came back.
void exchange(World& w, int fd, const std::vector<uint8_t>& pdus, size_t answers) {
  size_t sent = 0, got = 0;
  uint8_t buf[4096];
  (void)w.loop->run_until([&] {
    while (sent < pdus.size()) {
      const ssize_t n = send(fd, pdus.data() + sent, pdus.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) got += static_cast<size_t>(n);
    return got >= answers;
  });
}

std::vector<uint8_t> capsule(const nvme::Sqe& sqe, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> pdu(72 + data.size());
  nvme::PduHeader h{nvme::pdu::kCapsuleCmd, 0, 72, static_cast<uint8_t>(data.empty() ? 0 : 72),
                    static_cast<uint32_t>(pdu.size())};
  std::memcpy(pdu.data(), &h, 8);
  std::memcpy(pdu.data() + 8, &sqe, sizeof sqe);
  if (!data.empty()) std::memcpy(pdu.data() + 72, data.data(), data.size());
  return pdu;
}

// The admin queue of controller 1: ICReq, Connect, eight I/O queues, copy format 2 enabled.
void connect_admin(World& w) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  w.target->serve_socket(sv[0]);
  w.admin = sv[1];
  nvme::ICReq ic{};
  ic.hdr = {nvme::pdu::kICReq, 0, 128, 0, 128};
  std::vector<uint8_t> out(sizeof ic);
  std::memcpy(out.data(), &ic, sizeof ic);
  auto add = [&out](std::vector<uint8_t> p) { out.insert(out.end(), p.begin(), p.end()); };
  nvme::Sqe c = nvme::connect_command(0, 31, 0);
  c.cid = 1;
  c.dptr.length = nvme::kConnectDataSize;
  c.dptr.type = nvme::kSglInCapsule;
  add(capsule(c, nvme::connect_data(0xFFFF, kSub, kHost)));
  nvme::Sqe nq{};
  nq.opcode = nvme::admin::kSetFeatures;
  nq.cid = 2;
  nq.cdw10 = nvme::kFeatNumQueues;
  nq.cdw11 = 7 | (7u << 16);
  add(capsule(nq, {}));
  nvme::Sqe hbs{};
  hbs.opcode = nvme::admin::kSetFeatures;
  hbs.cid = 3;
  hbs.cdw10 = nvme::kFeatHostBehavior;
  hbs.dptr.length = 512;
  hbs.dptr.type = nvme::kSglInCapsule;
  std::vector<uint8_t> page(512, 0);
  page[nvme::kHostBehaviorCdfe] = 4;
  add(capsule(hbs, page));
  exchange(w, w.admin, out, sizeof(nvme::ICResp) + 3 * 24);
}

World& world() {
  static World* w = [] {
    set_log_level(LogLevel::error);  // a bad PDU per input is the point, not news
    auto* nw = new World;
    nw->loop = EventLoop::create().value();
    nvme::TargetConfig cfg;
    cfg.discovery_port = 0;
    cfg.ports.push_back({1, "127.0.0.1", 0, {"nqn.2024-01.io.blkcopy:fuzz"}});
    nvme::SubsystemConfig s{"nqn.2024-01.io.blkcopy:fuzz", true, {}, {}};
    s.namespaces.push_back({1, "mem:1M,seed=1", "", true});
    s.namespaces.push_back({2, "mem:1M,seed=2,copy_max=64k,segment_max=16k,max_segments=4", "", true});
    s.namespaces.push_back({3, "mem:1M,block=4096,nocopy", "", true});
    s.cntlid_max = 8;  // the admin queue below holds ID 1
    cfg.subsystems.push_back(s);
    cfg.limits.pdu_ms = cfg.limits.handshake_ms = cfg.limits.connect_ms = 200;
    nw->target = nvme::Target::create(*nw->loop, cfg).value();
    if (!nw->target->start().ok()) std::abort();
    connect_admin(*nw);
    return nw;
  }();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  w.target->serve_socket(sv[0]);
  // The first byte picks the chunk size (1 to 256 bytes) the host sends at a time, so that PDUs
  // arrive whole, split and several per read.
  const size_t chunk = size ? data[0] + 1u : 1;
  size_t at = size ? 1 : 0;
  bool late_flag = false;
  auto* late = &late_flag;
  Timer limit = w.loop->after(std::chrono::seconds(5), [late] { *late = true; });
  uint8_t sink[65536];
  Status s = w.loop->run_until([&] {
    while (at < size) {  // as much as the socket takes now
      const ssize_t n = send(sv[1], data + at, std::min(chunk, size - at), MSG_NOSIGNAL);
      if (n <= 0) break;
      at += static_cast<size_t>(n);
    }
    if (at == size) shutdown(sv[1], SHUT_WR);
    while (recv(sv[1], sink, sizeof sink, 0) > 0) {
    }
    return *late || w.target->stats().open_connections == 1;  // only the admin queue is left
  });
  if (!s.ok() || *late) std::abort();  // the connection must end once the host stops sending
  ::close(sv[1]);
  if (std::getenv("BLKCOPY_FUZZ_VERBOSE")) {  // to see how far a seed gets
    const auto st = w.target->stats();
    std::fprintf(stderr, "commands %llu errors %llu read %llu written %llu copies %llu\n",
                 static_cast<unsigned long long>(st.commands), static_cast<unsigned long long>(st.errors),
                 static_cast<unsigned long long>(st.read_bytes),
                 static_cast<unsigned long long>(st.written_bytes),
                 static_cast<unsigned long long>(st.copies));
  }
  return 0;
}
