// A small blocking NVMe/TCP client for tests: just enough of a host to drive the target over
// loopback, including the raw PDUs that malformed-input tests need.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nvme/spec.h"

namespace blkcopy::test {

struct Completion {
  uint32_t dw0 = 0;
  uint16_t status = 0;  // (SCT << 8) | SC, without phase and DNR
  bool dnr = false;
  uint16_t cid = 0;
};

class NvmeClient {
 public:
  ~NvmeClient();
  // TCP connect and ICReq/ICResp. False when the target refuses or closes.
  bool open(uint16_t port, bool hdgst = false, bool ddgst = false);
  bool open_raw(uint16_t port);  // TCP only, no ICReq
  // The loopback address to connect from (127.0.0.1 when 0): another host, to the target.
  uint32_t source = 0;
  void close();
  void abort();  // closes with a TCP reset (SO_LINGER 0), as a crashed host's kernel would

  // Fabrics Connect on this connection's queue; returns the completion (dw0 = CNTLID).
  Completion connect(uint16_t qid, const std::string& subnqn, const std::string& hostnqn,
                     uint16_t cntlid = 0xFFFF, uint32_t kato_ms = 0);
  // A command with optional data to the controller (in-capsule when it fits, else R2T) or
  // from it (C2HData into `in`).
  Completion command(nvme::Sqe sqe, const std::vector<uint8_t>& out = {},
                     std::vector<uint8_t>* in = nullptr, uint32_t in_len = 0);

  Completion identify(uint8_t cns, uint32_t nsid, std::vector<uint8_t>& out);
  // A command without data sent, not waited for (an Asynchronous Event Request): its completion
  // is one next_completion() returns. Returns its CID, or 0 when the send failed.
  uint16_t send_command(nvme::Sqe sqe);
  // The next response capsule, of any command; nullopt when none comes within `timeout_ms`.
  std::optional<Completion> next_completion(int timeout_ms);
  Completion write(uint32_t nsid, uint64_t lba, const std::vector<uint8_t>& data, uint32_t lbs);
  Completion read(uint32_t nsid, uint64_t lba, uint32_t blocks, uint32_t lbs,
                  std::vector<uint8_t>& out);
  struct Range {
    uint64_t slba;
    uint32_t blocks;  // 1-based here
    uint32_t snsid = 0;
  };
  Completion copy(uint32_t nsid, uint64_t sdlba, const std::vector<Range>& ranges,
                  uint8_t format = 0, std::optional<uint32_t> data_len = {});
  Completion set_host_behavior(bool format2);

  // Raw access for malformed-input tests.
  bool send_raw(const std::vector<uint8_t>& bytes);
  // Reads one PDU; nullopt when the connection ended. `type` of a C2HTermReq is 0x03.
  std::optional<std::vector<uint8_t>> recv_pdu(int timeout_ms = 5000);
  // True when the target closed the connection (after any PDUs it sent).
  bool closed_by_peer(int timeout_ms = 5000);

  // Connect asks for SQ flow control off (CATTR bit 2): reads may end with C2HData SUCCESS.
  bool disable_sq_flow = false;
  uint16_t queue_size = 32;  // what Connect asks for (SQSIZE + 1)
  // How the last command ended: by a response capsule, or by C2HData with SUCCESS.
  bool ended_by_c2h_success = false;

  uint64_t bytes_sent() const { return sent_; }
  uint64_t bytes_received() const { return received_; }

 private:
  bool send_all(const void* p, size_t n);
  bool recv_all(void* p, size_t n, int timeout_ms);
  std::vector<uint8_t> frame(uint8_t type, uint8_t hlen, const void* hdr_body, size_t body_len,
                             const uint8_t* data, size_t data_len, uint8_t flags = 0);
  int fd_ = -1;
  bool hdgst_ = false, ddgst_ = false;
  uint16_t next_cid_ = 1;
  uint64_t sent_ = 0, received_ = 0;
};

}  // namespace blkcopy::test
