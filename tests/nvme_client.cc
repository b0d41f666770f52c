#include "tests/nvme_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "nvme/codec.h"
#include "nvme/tcp/framing.h"

namespace blkcopy::test {
using namespace nvme;

NvmeClient::~NvmeClient() { close(); }

void NvmeClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void NvmeClient::abort() {
  if (fd_ < 0) return;
  linger l{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close();
}

bool NvmeClient::send_all(const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  while (n) {
    ssize_t r = ::send(fd_, b, n, MSG_NOSIGNAL);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
    sent_ += static_cast<size_t>(r);
  }
  return true;
}

bool NvmeClient::recv_all(void* p, size_t n, int timeout_ms) {
  auto* b = static_cast<uint8_t*>(p);
  while (n) {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    ssize_t r = ::recv(fd_, b, n, 0);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
    received_ += static_cast<size_t>(r);
  }
  return true;
}

bool NvmeClient::send_raw(const std::vector<uint8_t>& bytes) {
  return send_all(bytes.data(), bytes.size());
}

bool NvmeClient::open(uint16_t port, bool hdgst, bool ddgst) {
  if (!open_raw(port)) return false;
  ICReq req{};
  req.hdr = {pdu::kICReq, 0, 128, 0, 128};
  req.dgst = static_cast<uint8_t>((hdgst ? 1 : 0) | (ddgst ? 2 : 0));
  if (!send_all(&req, sizeof req)) return false;
  ICResp resp{};
  if (!recv_all(&resp, sizeof resp, 5000) || resp.hdr.type != pdu::kICResp) return false;
  hdgst_ = resp.dgst & 1;
  ddgst_ = resp.dgst & 2;
  return true;
}

bool NvmeClient::open_raw(uint16_t port) {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (source) {
    sockaddr_in from{};
    from.sin_family = AF_INET;
    from.sin_addr.s_addr = htonl(source);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) return false;
  }
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return false;
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return true;
}

std::vector<uint8_t> NvmeClient::frame(uint8_t type, uint8_t hlen, const void* body,
                                       size_t body_len, const uint8_t* data, size_t data_len,
                                       uint8_t flags) {
  const tcp::Header head = tcp::frame_header(type, hlen, body, body_len,
                                            static_cast<uint32_t>(data_len), flags, {hdgst_, ddgst_});
  std::vector<uint8_t> out(head.data(), head.data() + head.size());
  out.insert(out.end(), data, data + data_len);
  if (ddgst_ && data_len) {
    const uint32_t crc = crc32c(data, data_len);
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(&crc),
               reinterpret_cast<const uint8_t*>(&crc) + 4);
  }
  return out;
}

std::optional<std::vector<uint8_t>> NvmeClient::recv_pdu(int timeout_ms) {
  std::vector<uint8_t> pdu(8);
  if (!recv_all(pdu.data(), 8, timeout_ms)) return std::nullopt;
  PduHeader h;
  std::memcpy(&h, pdu.data(), 8);
  if (h.plen < 8 || h.plen > (4u << 20)) return std::nullopt;
  pdu.resize(h.plen);
  if (!recv_all(pdu.data() + 8, h.plen - 8, timeout_ms)) return std::nullopt;
  return pdu;
}

bool NvmeClient::closed_by_peer(int timeout_ms) {
  for (;;) {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    uint8_t b[4096];
    ssize_t r = ::recv(fd_, b, sizeof b, 0);
    if (r <= 0) return true;
  }
}

namespace {

Completion completion_in(const std::vector<uint8_t>& pdu) {
  Cqe cqe;
  std::memcpy(&cqe, pdu.data() + 8, sizeof cqe);
  Completion c;
  c.dw0 = cqe.dw0;
  c.status = (cqe.status >> 1) & 0x7FF;
  c.dnr = cqe.status & status::kDnr;
  c.cid = cqe.cid;
  return c;
}

}  // namespace

Completion NvmeClient::command(Sqe sqe, const std::vector<uint8_t>& out,
                               std::vector<uint8_t>* in, uint32_t in_len) {
  sqe.cid = next_cid_++;
  const bool in_capsule = !out.empty() && out.size() <= 8192;
  sqe.dptr = {};
  sqe.dptr.length = static_cast<uint32_t>(out.empty() ? in_len : out.size());
  sqe.dptr.type = in_capsule ? kSglInCapsule : kSglTransport;
  Completion c;
  c.status = 0xFFFF;
  ended_by_c2h_success = false;
  auto pdu = frame(pdu::kCapsuleCmd, 72, &sqe, sizeof sqe, in_capsule ? out.data() : nullptr,
                   in_capsule ? out.size() : 0);
  if (!send_all(pdu.data(), pdu.size())) return c;
  uint32_t got = 0;
  for (;;) {
    auto p = recv_pdu();
    if (!p) return c;
    PduHeader h;
    std::memcpy(&h, p->data(), 8);
    if (h.type == pdu::kR2T) {
      R2T r;
      std::memcpy(&r, p->data(), sizeof r);
      if (uint64_t(r.r2to) + r.r2tl > out.size()) return c;  // a lying target
      bool sent = true;
      tcp::for_each_h2c(r, 64 * 1024, [&](const DataPdu& d, bool last) {
        auto f = frame(pdu::kH2CData, 24, reinterpret_cast<const uint8_t*>(&d) + 8, 16,
                       out.data() + d.datao, d.datal, last ? pdu::kFlagLast : 0);
        sent = sent && send_all(f.data(), f.size());
      });
      if (!sent) return c;
    } else if (h.type == pdu::kC2HData) {
      DataPdu d;
      std::memcpy(&d, p->data(), sizeof d);
      if (in) {
        in->resize(std::max<size_t>(in->size(), d.datao + d.datal));
        std::memcpy(in->data() + d.datao, p->data() + h.pdo, d.datal);
      }
      got += d.datal;
      if (h.flags & pdu::kFlagSuccess) {  // the command ends here, no response follows
        ended_by_c2h_success = true;
        c.status = 0;
        return c;
      }
    } else if (h.type == pdu::kCapsuleResp) {
      return completion_in(*p);
    } else {
      return c;  // a termination request or garbage
    }
  }
}

Completion NvmeClient::connect(uint16_t qid, const std::string& subnqn,
                               const std::string& hostnqn, uint16_t cntlid, uint32_t kato_ms) {
  Sqe sqe{};
  sqe.opcode = admin::kFabrics;
  auto* raw = reinterpret_cast<uint8_t*>(&sqe);
  raw[kFcType] = fabrics::kConnect;
  std::memcpy(raw + kConnectQid, &qid, 2);
  const uint16_t sqsize = static_cast<uint16_t>(queue_size - 1);
  std::memcpy(raw + kConnectSqsize, &sqsize, 2);
  raw[kConnectCattr] = disable_sq_flow ? kCattrDisableSqFlow : 0;
  sqe.cdw12 = kato_ms;
  std::vector<uint8_t> data(kConnectDataSize, 0);
  std::memcpy(data.data() + kCdCntlid, &cntlid, 2);
  std::memcpy(data.data() + kCdSubnqn, subnqn.data(), subnqn.size());
  std::memcpy(data.data() + kCdHostnqn, hostnqn.data(), hostnqn.size());
  return command(sqe, data);
}

uint16_t NvmeClient::send_command(Sqe sqe) {
  sqe.cid = next_cid_++;
  sqe.dptr = {};
  sqe.dptr.type = kSglTransport;
  auto pdu = frame(pdu::kCapsuleCmd, 72, &sqe, sizeof sqe, nullptr, 0);
  return send_all(pdu.data(), pdu.size()) ? sqe.cid : 0;
}

std::optional<Completion> NvmeClient::next_completion(int timeout_ms) {
  auto p = recv_pdu(timeout_ms);
  PduHeader h{};
  if (p) std::memcpy(&h, p->data(), 8);
  if (!p || h.type != pdu::kCapsuleResp) return std::nullopt;
  return completion_in(*p);
}

Completion NvmeClient::identify(uint8_t cns, uint32_t nsid, std::vector<uint8_t>& out) {
  Sqe sqe{};
  sqe.opcode = admin::kIdentify;
  sqe.nsid = nsid;
  sqe.cdw10 = cns;
  return command(sqe, {}, &out, 4096);
}

Completion NvmeClient::write(uint32_t nsid, uint64_t lba, const std::vector<uint8_t>& data,
                             uint32_t lbs) {
  Sqe sqe{};
  sqe.opcode = io::kWrite;
  sqe.nsid = nsid;
  sqe.cdw10 = static_cast<uint32_t>(lba);
  sqe.cdw11 = static_cast<uint32_t>(lba >> 32);
  sqe.cdw12 = static_cast<uint32_t>(data.size() / lbs - 1);
  return command(sqe, data);
}

Completion NvmeClient::read(uint32_t nsid, uint64_t lba, uint32_t blocks, uint32_t lbs,
                            std::vector<uint8_t>& out) {
  Sqe sqe{};
  sqe.opcode = io::kRead;
  sqe.nsid = nsid;
  sqe.cdw10 = static_cast<uint32_t>(lba);
  sqe.cdw11 = static_cast<uint32_t>(lba >> 32);
  sqe.cdw12 = blocks - 1;
  out.clear();
  return command(sqe, {}, &out, blocks * lbs);
}

Completion NvmeClient::copy(uint32_t nsid, uint64_t sdlba, const std::vector<Range>& ranges,
                            uint8_t format, std::optional<uint32_t> data_len) {
  std::vector<uint8_t> data(ranges.size() * 32, 0);
  for (size_t i = 0; i < ranges.size(); ++i) {
    uint8_t* e = data.data() + i * 32;
    if (format == 2) std::memcpy(e, &ranges[i].snsid, 4);
    std::memcpy(e + 8, &ranges[i].slba, 8);
    const uint16_t nlb = static_cast<uint16_t>(ranges[i].blocks - 1);
    std::memcpy(e + 16, &nlb, 2);
  }
  if (data_len) data.resize(*data_len);
  Sqe sqe{};
  sqe.opcode = io::kCopy;
  sqe.nsid = nsid;
  sqe.cdw10 = static_cast<uint32_t>(sdlba);
  sqe.cdw11 = static_cast<uint32_t>(sdlba >> 32);
  sqe.cdw12 = static_cast<uint32_t>((ranges.size() - 1) & 0xFF) | (uint32_t(format) << 8);
  return command(sqe, data);
}

Completion NvmeClient::set_host_behavior(bool format2) {
  Sqe sqe{};
  sqe.opcode = admin::kSetFeatures;
  sqe.cdw10 = kFeatHostBehavior;
  std::vector<uint8_t> data(512, 0);
  data[kHostBehaviorCdfe] = format2 ? 0x04 : 0;
  return command(sqe, data);
}

}  // namespace blkcopy::test
