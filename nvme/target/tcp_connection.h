// The NVMe/TCP transport of the target: one connection (one queue), its PDUs in and out, the
// R2T/H2CData exchange for data the host sends, C2HData for data it reads, digests, and the
// time limits on a peer that stalls. Commands go to the transport-neutral TargetQueue.
//
// State machine (one line a state):
//   first bytes    on a port with TLS: a TLS ClientHello starts TLS, clear text is served only
//                  where TLS is optional (anything else ends the connection, before any PDU)
//   TLS handshake  the host's PSK identity must name a host with a key and a subsystem here
//   wait ICReq     the first PDU must be ICReq; anything else ends the connection
//   ready          PDUs are CapsuleCmd, H2CData (for a write that got an R2T) or H2CTermReq
//   closing        the socket is shut; the connection is freed when nothing is in flight
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nvme/tcp/framing.h"
#include "nvme/tcp/pdu_buffer.h"
#include "nvme/tcp/send_queue.h"
#include "nvme/tcp/stream.h"
#include "nvme/target/ops.h"
#include "nvme/target/queue.h"

namespace blkcopy::nvme {

class TcpConnection final : public QueueTransport {
 public:
  TcpConnection(TargetImpl& t, unsigned worker, EventLoop& loop, int fd, std::string local_addr,
                std::string peer_addr, PortTls tls);
  ~TcpConnection();  // REQUIRES: idle()

  void start() { receive(); }
  // Ends the socket so that the reads and sends in flight on it end too.
  void abort();
  void close(const std::string& why);
  // Nothing in flight that points into the connection: no socket operation, no device request.
  bool idle() const;
  bool closing() const { return closing_; }
  bool finished() const { return fd_ < 0; }
  Controller* controller() const { return queue_.session.ctrl.get(); }
  // The admin queue sends its controller's waiting asynchronous events (admin.cc).
  void send_events() { send_waiting_events(queue_); }
  std::function<void()> on_finished;  // runs (on its loop) once the socket is closed
  // The port it came through (none: served directly, serve_socket).
  void came_from(std::weak_ptr<Port> port, bool via_port) {
    port_ = std::move(port);
    via_port_ = via_port;  // even when the port has gone since: then it is closed
  }
  bool port_removed() const;
  // Why a peer that stalls must go (no ICReq, Connect or authentication in time, a PDU or the
  // data an R2T asked for begun and not finished, answers not taken); empty while it is within
  // the limits. `undrained` says it was the answers.
  std::string stalled(std::chrono::steady_clock::time_point now, bool& undrained) const;
  // A closing connection whose peer does not take its last PDUs is cut off after the PDU limit.
  void cut_if_stuck(std::chrono::steady_clock::time_point now);

  // QueueTransport
  void complete(TargetRequest& r) override;
  void buffer_ready(TargetRequest& r) override;
  void disconnect(const std::string& why) override { close(why); }
  const std::string& local_address() const override { return local_addr_; }
  const std::string& peer_address() const override { return peer_addr_; }
  const std::weak_ptr<Port>* came_through() const override { return via_port_ ? &port_ : nullptr; }
  const auth::TlsIdentity* tls_identity() const override {
    return tls_peer_ ? &*tls_peer_ : nullptr;
  }

 private:
  void receive();
  // The first bytes read on a port with TLS: start TLS, or go on in clear text, or refuse.
  void first_bytes(size_t n);
  // Handles the whole PDUs among the n bytes just read and those left by a pause.
  void parse(size_t n);
  // Hands r back to the queue; data that came in capsules, once below the cap, resumes reading.
  void release(TargetRequest& r);
  void on_pdu();
  void on_icreq();
  void on_capsule();
  void on_h2cdata();
  // Sends a termination PDU and closes; `logged`: the caller said why already.
  void terminate(uint16_t fes, uint32_t fei, bool logged = false);
  // Queues a PDU: a header, optional data (with a digest when negotiated) and the request it
  // ends (released once the PDU has left). An urgent PDU (an R2T) goes ahead of those only
  // waiting (SendQueue::push).
  void send(const tcp::Header& head, const uint8_t* data = nullptr, uint32_t len = 0,
            bool data_digest = false, TargetRequest* done = nullptr, bool urgent = false);
  void pump_send();  // sends at the end of this loop turn
  void flush();
  void maybe_free();
  tcp::Digests digests() const { return {hdgst_, ddgst_}; }

  TargetImpl& t_;
  EventLoop& loop_;
  int fd_;
  Stream stream_;
  PortTls tls_;
  std::weak_ptr<Port> port_;
  bool via_port_ = false;
  bool tls_decided_ = false;  // the first bytes said TLS or clear text
  std::optional<auth::TlsIdentity> tls_peer_;  // after a TLS handshake: whom the PSK names
  bool hdgst_ = false, ddgst_ = false, ic_done_ = false, closing_ = false;
  std::string local_addr_, peer_addr_;
  std::chrono::steady_clock::time_point opened_, closing_since_, front_since_;
  std::optional<std::chrono::steady_clock::time_point> partial_since_;  // a PDU begun, unfinished
  PduBuffer rbuf_{256};  // enough for the ICReq; grows after it
  const uint8_t* p_ = nullptr;  // the PDU being handled, inside rbuf_
  size_t p_len_ = 0;            // bytes from p_ to the end of what was read
  bool recv_pending_ = false;
  bool flush_posted_ = false;
  // Data that came inside capsules is received already and never waits for the budget; the
  // connection stops reading while its queue holds more than kInCapsuleHeld of it (TCP then
  // holds the host back), so that it cannot hold more than about that much.
  static constexpr uint64_t kInCapsuleHeld = 256 * 1024;
  bool paused_ = false, resume_posted_ = false;
  // PDUs handled in a row before the rest of a receive waits for the next loop round: the
  // completions of the first ones leave (their send is submitted between rounds) while the
  // others run, so host and target work at once instead of passing one batch back and forth.
  static constexpr unsigned kBurst = 16;
  unsigned burst_ = 0;
  void resume_soon();
  std::vector<TargetRequest*> awaiting_data_;  // writes that got an R2T (TTAG = CID)
  // PDUs waiting to go out. A completion keeps its request (and the data a C2HData PDU ahead of
  // it points into) until it has left: until then it counts as outstanding, so a host that
  // stops reading cannot make the target queue more than its queue depth.
  SendQueue<TargetRequest*> sendq_;
  TargetQueue queue_;
};

}  // namespace blkcopy::nvme
