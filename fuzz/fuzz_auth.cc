// DH-HMAC-CHAP on a keyed controller, without a transport: the input is a list of
// authentication messages (and other commands) that a host sends on the admin queue and an I/O
// queue of a controller whose host must authenticate, through the in-process loopback
// transport. A record may ask for the right Reply to the last Challenge (the harness computes
// it), so that authenticated states, re-authentication and I/O queue claims are reached too.
// Every command must be answered exactly once; a fresh target per input (the back-off and
// controller IDs start clean), memory, sanitizers and the time limit watch the rest.
//
// Input: one byte (bit 0: the host whose group is ffdhe2048, else the null group), then
// records: flags (bits 0-1: 0 Auth Send of the following bytes, 1 Auth Receive, 2 a raw SQE of
// the following 64 bytes, 3 the right Reply; bit 2: on the I/O queue; bit 3: reconnect both
// queues first), a 16-bit length, then (kinds 0 and 2) the bytes.
#include <blkcopy/log.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "fuzz/fuzz.h"
#include "nvme/auth/dhchap.h"
#include "nvme/codec.h"
#include "nvme/target/loopback.h"

using namespace blkcopy;
using namespace blkcopy::nvme;

namespace {

constexpr char kSub[] = "nqn.2024-01.io.blkcopy:fuzz";
const char* const kHosts[2] = {"nqn.2024-01.io.blkcopy:fuzz-null", "nqn.2024-01.io.blkcopy:fuzz-dh"};
const std::string kKey = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
const std::string kCtrlKey = "DHHC-1:00:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOeXryU:";

EventLoop& loop() {
  static EventLoop* l = [] {
    set_log_level(std::getenv("FUZZ_AUTH_LOG") ? LogLevel::info : LogLevel::error);
    if (std::getenv("FUZZ_AUTH_LOG")) set_log_sink(stderr_log_sink());
    return EventLoop::create().value().release();
  }();
  return *l;
}

std::unique_ptr<Target> make_target() {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  SubsystemConfig s{kSub, false, {kHosts[0], kHosts[1]}, {}};
  s.namespaces.push_back({1, "mem:64k,seed=1", "", true});
  s.cntlid_max = 4;  // IDs run out: eviction of unproven controllers is reached
  cfg.subsystems.push_back(s);
  cfg.hosts.push_back({kHosts[0], kKey, kCtrlKey, "hmac(sha256)", "null"});
  cfg.hosts.push_back({kHosts[1], kKey, "", "hmac(sha256)", "ffdhe2048"});
  return Target::create(loop(), cfg).value();
}

// One command, answered (or held) before the next; its CQE (status 0xFFFF if held or refused).
Cqe run(LoopbackQueue& q, const Sqe& sqe, std::span<const uint8_t> out, uint32_t in_len,
        std::vector<uint8_t>* in = nullptr) {
  Cqe got{};
  got.status = 0xFFFF;
  bool done = false;
  if (!q.submit(sqe, out, in_len, [&](const Cqe& c, std::span<const uint8_t> back) {
        got = c;
        if (in) in->assign(back.begin(), back.end());
        done = true;
      })) {
    return got;
  }
  if (!done && !loop().run_until([&] {
        return done || q.queue().outstanding() == q.queue().session.aers.size();
      }).ok()) {
    std::abort();
  }
  return got;
}


struct Host {
  Target& target;
  const char* nqn;
  std::unique_ptr<LoopbackQueue> admin, io;
  uint16_t cntlid = 0xFFFF;
  std::optional<auth::Challenge> last;  // the last Challenge read, for a right Reply

  void close() {
    for (auto* q : {io.get(), admin.get()}) {
      if (q) q->close();
    }
    if (!loop().run_until([&] { return (!io || io->idle()) && (!admin || admin->idle()); }).ok()) {
      std::abort();
    }
    io.reset();
    admin.reset();
  }
  void connect() {
    close();
    admin = std::make_unique<LoopbackQueue>(target);
    const Cqe a = run(*admin, connect_command(0, 31, 0), connect_data(0xFFFF, kSub, nqn), 0);
    cntlid = static_cast<uint16_t>(a.dw0 & 0xFFFF);
    io = std::make_unique<LoopbackQueue>(target);
    run(*io, connect_command(1, 31, 0), connect_data(cntlid, kSub, nqn), 0);
  }
  std::vector<uint8_t> right_reply() const {
    if (!last) return {};
    const auth::Bytes kh = auth::transformed_key(*auth::parse_secret(kKey), nqn);
    const auth::Bytes r = auth::host_response(last->hash, kh,
                                              auth::augmented_challenge(last->hash, last->c, {}),
                                              last->seq, last->tid, nqn, kSub);
    return auth::encode_reply({last->tid, 0, false, r, {}, {}}, r.size());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto target = make_target();
  Host h{*target, kHosts[data[0] & 1]};
  h.connect();
  size_t at = 1;
  for (int n = 0; n < 32 && at + 3 <= size; ++n) {
    const uint8_t flags = data[at];
    uint16_t len;
    std::memcpy(&len, data + at + 1, 2);
    at += 3;
    len = static_cast<uint16_t>(std::min<uint32_t>(len, 4096));
    if (flags & 8) h.connect();
    LoopbackQueue& q = (flags & 4) ? *h.io : *h.admin;
    switch (flags & 3) {
      case 0: {
        const size_t take = std::min<size_t>(len, size - at);
        run(q, auth_command(fabrics::kAuthSend, take), {data + at, take}, 0);
        at += take;
        break;
      }
      case 1: {
        std::vector<uint8_t> back;
        if (run(q, auth_command(fabrics::kAuthReceive, len), {}, len, &back).status == 0) {
          if (auto c = auth::decode_challenge(back)) h.last = *c;
        }
        break;
      }
      case 2: {
        if (at + sizeof(Sqe) > size) {
          at = size;
          break;
        }
        Sqe sqe;
        std::memcpy(&sqe, data + at, sizeof sqe);
        at += sizeof sqe;
        run(q, sqe, {}, std::min<uint32_t>(len, 4096));
        break;
      }
      case 3: {
        const auto reply = h.right_reply();
        run(q, auth_command(fabrics::kAuthSend, reply.size()), reply, 0);
        break;
      }
    }
  }
  h.close();
  return 0;
}
