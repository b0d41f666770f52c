// The controller without a transport: the input is a list of commands (SQE, data to the
// controller or room for data back) that a host sends on an admin queue and an I/O queue of a
// connected controller (copy format 2 enabled), through the in-process loopback transport.
// Every command must be answered exactly once, or held (an Async Event Request); memory,
// sanitizers and the time limit watch the rest.
//
// A record: flags (bit 0: I/O queue, bit 1: data comes back), 64 bytes of SQE, a 16-bit
// length, then (data to the controller) that many bytes of the input.
#include <blkcopy/log.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz/fuzz.h"
#include "nvme/codec.h"
#include "nvme/target/loopback.h"

using namespace blkcopy;

namespace {

constexpr char kSub[] = "nqn.2024-01.io.blkcopy:fuzz";
constexpr char kHost[] = "nqn.2024-01.io.blkcopy:fuzz-host";

struct World {
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<nvme::Target> target;
  // A connected controller, kept from input to input (a long-lived host): making one per input
  // would cost more than the commands themselves.
  std::unique_ptr<nvme::LoopbackQueue> admin, io;
};

World& world() {
  static World* w = [] {
    set_log_level(LogLevel::error);
    auto* nw = new World;
    nw->loop = EventLoop::create().value();
    nvme::TargetConfig cfg;
    cfg.discovery_port = 0;
    nvme::SubsystemConfig s{kSub, true, {}, {}};
    s.namespaces.push_back({1, "mem:1M,seed=1", "", true});
    s.namespaces.push_back({2, "mem:1M,seed=2,copy_max=64k,segment_max=16k,max_segments=4", "", true});
    s.namespaces.push_back({3, "mem:1M,block=4096,nocopy", "", true});
    cfg.subsystems.push_back(s);
    cfg.limits.data_budget = cfg.limits.copy_budget = 16u << 20;
    nw->target = nvme::Target::create(*nw->loop, cfg).value();
    return nw;
  }();
  return *w;
}

// Sends one command and runs the loop until it is answered; its CQE (status 0xFFFF if held or
// refused for a full queue).
nvme::Cqe run(World& w, nvme::LoopbackQueue& q, const nvme::Sqe& sqe,
              std::span<const uint8_t> out, uint32_t in_len) {
  nvme::Cqe got{};
  got.status = 0xFFFF;
  bool done = false;
  if (!q.submit(sqe, out, in_len, [&](const nvme::Cqe& c, std::span<const uint8_t>) {
        got = c;
        done = true;
      })) {
    return got;
  }
  if (done) return got;  // answered at once (most admin commands, every refusal)
  // Held commands (AERs) never answer: stop once nothing is left in flight.
  Status s = w.loop->run_until([&] { return done || q.queue().outstanding() == q.queue().session.aers.size(); });
  if (!s.ok()) std::abort();
  return got;
}

nvme::Cqe connect(World& w, nvme::LoopbackQueue& q, uint16_t qid, uint16_t cntlid) {
  nvme::Sqe c = nvme::connect_command(qid, 31, 0);
  const auto data = nvme::connect_data(cntlid, kSub, kHost);
  return run(w, q, c, data, 0);
}

// (Re)connects the controller when an input has ended it.
void connect_queues(World& w) {
  if (w.admin && w.admin->queue().session.ctrl && w.io->queue().session.ctrl) return;
  if (w.io) w.io->close();
  if (w.admin) w.admin->close();
  if (!w.loop->run_until([&] { return (!w.io || w.io->idle()) && (!w.admin || w.admin->idle()); }).ok()) {
    std::abort();
  }
  w.io.reset();
  w.admin.reset();
  w.admin = std::make_unique<nvme::LoopbackQueue>(*w.target);
  w.io = std::make_unique<nvme::LoopbackQueue>(*w.target);
  const nvme::Cqe a = connect(w, *w.admin, 0, 0xFFFF);
  if (a.status) std::abort();  // a fresh controller must be had
  if (connect(w, *w.io, 1, static_cast<uint16_t>(a.dw0 & 0xFFFF)).status) std::abort();
  nvme::Sqe hbs{};  // copy format 2 on (an input may turn it off again)
  hbs.opcode = nvme::admin::kSetFeatures;
  hbs.cdw10 = nvme::kFeatHostBehavior;
  std::vector<uint8_t> page(512, 0);
  page[nvme::kHostBehaviorCdfe] = 4;
  run(w, *w.admin, hbs, page, 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  connect_queues(w);
  nvme::LoopbackQueue& admin = *w.admin;
  nvme::LoopbackQueue& io = *w.io;

  size_t at = 0;
  for (int n = 0; n < 64 && at + 67 <= size; ++n) {
    const uint8_t flags = data[at];
    nvme::Sqe sqe;
    std::memcpy(&sqe, data + at + 1, sizeof sqe);
    uint16_t len;
    std::memcpy(&len, data + at + 65, 2);
    at += 67;
    len = static_cast<uint16_t>(std::min<uint32_t>(len, 16384));
    nvme::LoopbackQueue& q = (flags & 1) ? io : admin;
    if (flags & 2) {
      run(w, q, sqe, {}, len);
    } else {
      const size_t take = std::min<size_t>(len, size - at);
      run(w, q, sqe, {data + at, take}, 0);
      at += take;
    }
  }
  return 0;
}
