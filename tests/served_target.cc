#include "tests/served_target.h"

#include <cstdlib>
#include <cstring>
#include <future>

namespace blkcopy::test {

using namespace nvme;

Served::Served(TargetConfig cfg, std::string control, bool metrics) {
  std::promise<std::vector<uint16_t>> port;
  auto ready = port.get_future();
  thread_ = std::thread([this, cfg, control, metrics, port = std::move(port)]() mutable {
    auto loop = EventLoop::create().value();
    auto target = Target::create(*loop, cfg);
    if (!target || !(*target)->start().ok()) std::abort();
    if (!control.empty() && !(*target)->serve_control(control).ok()) std::abort();
    if (metrics) metrics_port_ = (*target)->serve_metrics("127.0.0.1", 0).value();
    target_ = target->get();
    port.set_value((*target)->bound_ports());
    (void)loop->run_until([this] { return stop_.load(); });
    target_ = nullptr;
  });
  ports_ = ready.get();
}

Served::~Served() {
  stop_ = true;
  thread_.join();
}

std::vector<uint8_t> capsule(const Sqe& sqe, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> pdu(72 + data.size());
  PduHeader h{pdu::kCapsuleCmd, 0, 72, static_cast<uint8_t>(data.empty() ? 0 : 72),
              static_cast<uint32_t>(72 + data.size())};
  std::memcpy(pdu.data(), &h, 8);
  std::memcpy(pdu.data() + 8, &sqe, sizeof sqe);
  if (!data.empty()) std::memcpy(pdu.data() + 72, data.data(), data.size());
  return pdu;
}

Completion completion_of(const std::vector<uint8_t>& pdu) {
  Cqe cqe;
  std::memcpy(&cqe, pdu.data() + 8, sizeof cqe);
  return {cqe.dw0, static_cast<uint16_t>((cqe.status >> 1) & 0x7FF), (cqe.status & 0x8000) != 0};
}

bool Host::connect(uint16_t port, const std::string& subnqn, const std::string& host) {
  if (!admin.open(port)) return false;
  auto c = admin.connect(0, subnqn, host);
  if (c.status) return false;
  cntlid = static_cast<uint16_t>(c.dw0);
  return io.open(port) && io.connect(1, subnqn, host, cntlid).status == 0;
}

}  // namespace blkcopy::test
