// The bytes of one NVMe/TCP connection on an event loop: the socket itself, or TLS records over
// it (TlsSession). The target's connections and the host's queues read and write through it the
// same way whichever it is.
//
// In clear text recv() and sendmsg() are the loop's own operations on the socket. With TLS:
//   recv     decrypts into the caller's buffer what was received before, or receives more
//            ciphertext first (at most kCipherIn at a time); 0 when the peer closed the session
//   sendmsg  encrypts up to kPlainOut bytes of the message and sends all of the records;
//            the result counts the plaintext bytes that have left (fewer than asked is a
//            short send, as with sendmsg)
// Each callback runs exactly once, on the loop, never inside the call, and is the last thing
// the stream does for that operation: the owner may free the stream inside it. One recv and one
// sendmsg may be in flight at a time (the owner's read loop and SendQueue keep to that).
// Records the session makes on its own (a KeyUpdate answer) leave with the next sendmsg.
// With `kernel` (start_tls), the records move to the kernel after the handshake where it can
// take them (kernel_tls.h): recv and sendmsg are then the loop's own operations again. The
// handshake reads never go past the end of a record, so that nothing the kernel is to open is
// taken into user space first.
#pragma once

#include <blkcopy/event_loop.h>
#include <blkcopy/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "nvme/tcp/tls_session.h"

namespace blkcopy::nvme {

class Stream {
 public:
  Stream(EventLoop& loop, int fd) : loop_(loop), fd_(fd) {}

  OpId recv(void* buf, uint32_t len, EventLoop::IoCallback cb);
  OpId sendmsg(const msghdr* msg, EventLoop::IoCallback cb);
  // Cancels this stream's socket operations in flight; their callbacks still run once.
  void cancel();

  // Starts TLS on the socket: `early` holds bytes already read from it (the target reads the
  // first bytes of a connection to tell a TLS ClientHello from a clear-text ICReq). done runs
  // once on the loop: OK once the handshake is over, or why it failed (EACCES: the peer's PSK
  // did not match or was unknown; EPROTO: not TLS; ECONNRESET: the socket ended).
  void start_tls(std::unique_ptr<TlsSession> s, std::span<const uint8_t> early, bool kernel,
                 std::function<void(Status)> done);
  const TlsSession* tls() const { return tls_.get(); }
  // Where the records are made and opened, for logs: "kernel", "user space" (with the reason
  // the kernel did not take them), or "kernel receives, user space sends".
  const std::string& records() const { return records_; }
  // Why a receive failed (res < 0): TLS's error, a record the kernel could not hand up as data
  // (EIO once it has the records: an alert, a KeyUpdate, close_notify), or the socket's error.
  std::string receive_failure(int res) const;
  // A TLS operation of the stream's own is in flight (the owner must not go before it ends).
  bool busy() const { return in_recv_ || in_send_; }

  // Ciphertext read at once: a record's worth (and a little) during the handshake, so that a
  // peer that only starts one costs little; kCipherIn after it.
  static constexpr size_t kHandshakeIn = 16 * 1024 + 512;
  static constexpr size_t kCipherIn = 64 * 1024;
  static constexpr size_t kPlainOut = 64 * 1024;
  // Records made by the session itself that the peer has not let leave (KeyUpdates it keeps
  // asking for while it does not read): beyond this the session is ended.
  static constexpr size_t kMostUnsent = 256 * 1024;
  // Records a peer may cut its part of the handshake into (a PSK handshake takes a handful);
  // beyond it the handshake fails, so tiny records cost the target little.
  static constexpr size_t kMostHandshakeRecords = 64;

 private:
  void pull(bool posted);  // recv: decrypt, or receive more ciphertext first
  void finish_recv(int res);
  // Sends all of out_, then then(0), or then(-errno) when the socket failed.
  void send_out(std::function<void(int)> then);
  void push();
  void shake();  // handshake: one more step
  void receive_more(std::function<void(int)> then);
  void to_kernel();
  // Tracks the record headers of what the handshake received: how many records came, how many
  // bytes may be read before the current record ends.
  void saw(const uint8_t* p, size_t n);
  size_t to_record_end() const;
  void end_handshake(Status s);

  EventLoop& loop_;
  int fd_;
  std::unique_ptr<TlsSession> tls_;
  std::vector<uint8_t> in_;        // ciphertext received (kCipherIn)
  std::vector<uint8_t> out_;       // records being sent
  size_t out_sent_ = 0;
  msghdr msg_{};
  iovec iov_{};
  std::vector<uint8_t> plain_;     // sendmsg's plaintext, gathered into records of 16 KiB
  // The operations in flight: the caller's buffer and callback.
  uint8_t* rbuf_ = nullptr;
  uint32_t rlen_ = 0;
  EventLoop::IoCallback rcb_;
  size_t splain_ = 0;  // plaintext bytes the send in flight carries
  std::function<void(int)> sent_;  // what follows once out_ has left
  std::function<void(Status)> shaken_;
  bool in_recv_ = false, in_send_ = false;
  bool kernel_wanted_ = false, kernel_rx_ = false, kernel_tx_ = false;
  std::string records_;
  uint8_t head_[5] = {};  // the record header being received, during the handshake
  size_t head_got_ = 0, body_left_ = 0, handshake_records_ = 0;
  OpId recv_op_{}, send_op_{};
};

}  // namespace blkcopy::nvme
