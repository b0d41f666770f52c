#include "nvme/tcp/stream.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "nvme/tcp/kernel_tls.h"

namespace blkcopy::nvme {

OpId Stream::recv(void* buf, uint32_t len, EventLoop::IoCallback cb) {
  if (!tls_ || kernel_rx_) return recv_op_ = loop_.recv(fd_, buf, len, std::move(cb));
  rbuf_ = static_cast<uint8_t*>(buf);
  rlen_ = len;
  rcb_ = std::move(cb);
  in_recv_ = true;
  pull(false);
  return {};
}

void Stream::pull(bool posted) {
  // Every record already received that fits (one read takes a record at most): a receive
  // hands the caller as much as a clear-text one would.
  long n = 0;
  for (long got; n < static_cast<long>(rlen_) && (got = tls_->read(rbuf_ + n, rlen_ - n)) != 0;) {
    if (got < 0) {
      if (n == 0) n = -1;  // else the end or the error shows at the next receive
      break;
    }
    n += got;
  }
  if (n == 0 && tls_->output_waiting() > kMostUnsent) {  // a peer that asks, never reads
    tls_->fail("the peer asked for more TLS records (KeyUpdates) than it took");
    n = -1;
  }
  if (n == 0) {
    recv_op_ = loop_.recv(fd_, in_.data(), static_cast<uint32_t>(in_.size()), [this](int res) {
      if (res <= 0) return finish_recv(res);
      tls_->feed(in_.data(), static_cast<size_t>(res));
      pull(true);
    });
    return;
  }
  const int res = n > 0 ? static_cast<int>(n) : tls_->peer_closed() ? 0 : -EPROTO;
  if (posted) return finish_recv(res);
  loop_.post([this, res] { finish_recv(res); });
}

std::string Stream::receive_failure(int res) const {
  if (tls_ && !tls_->error().empty()) return fmt::format("TLS: {}", tls_->error());
  if (kernel_rx_ && res == -EIO) {
    return "TLS: a record that is not data (an alert, a KeyUpdate or close_notify) ended the "
           "session (the kernel has its records)";
  }
  return fmt::format("receive error: {}", std::strerror(-res));
}

void Stream::finish_recv(int res) {
  in_recv_ = false;
  auto cb = std::move(rcb_);
  rcb_ = nullptr;
  cb(res);  // last: the owner may free the stream
}

OpId Stream::sendmsg(const msghdr* msg, EventLoop::IoCallback cb) {
  if (!tls_ || kernel_tx_) return send_op_ = loop_.sendmsg(fd_, msg, std::move(cb));
  // Small pieces (headers, completions) are gathered so that a record carries many; large ones
  // are encrypted where they are.
  constexpr size_t kGather = 16 * 1024;
  size_t total = 0;
  plain_.clear();
  for (size_t i = 0; i < msg->msg_iovlen && total < kPlainOut; ++i) {
    const auto* p = static_cast<const uint8_t*>(msg->msg_iov[i].iov_base);
    const size_t n = std::min(msg->msg_iov[i].iov_len, kPlainOut - total);
    if (n < kGather) {
      plain_.insert(plain_.end(), p, p + n);
    } else {
      tls_->write(plain_.data(), plain_.size());
      plain_.clear();
      tls_->write(p, n);
    }
    total += n;
  }
  tls_->write(plain_.data(), plain_.size());
  out_.clear();
  out_sent_ = 0;
  tls_->take_output(out_);
  in_send_ = true;
  send_out([this, total, cb = std::move(cb)](int res) {
    in_send_ = false;
    cb(res < 0 ? res : static_cast<int>(total));  // last: the owner may free the stream
  });
  return {};
}

void Stream::send_out(std::function<void(int)> then) {
  sent_ = std::move(then);
  push();
}

void Stream::push() {
  if (out_sent_ == out_.size()) {
    auto then = std::move(sent_);
    sent_ = nullptr;
    // Nothing to send (a session that broke while writing): still never inside the call.
    if (out_.empty()) return loop_.post([then = std::move(then)] { then(-EPROTO); });
    return then(0);
  }
  iov_ = {out_.data() + out_sent_, out_.size() - out_sent_};
  msg_ = {};
  msg_.msg_iov = &iov_;
  msg_.msg_iovlen = 1;
  send_op_ = loop_.sendmsg(fd_, &msg_, [this](int res) {
    if (res <= 0) {
      auto then = std::move(sent_);
      sent_ = nullptr;
      return then(res < 0 ? res : -ECONNRESET);
    }
    out_sent_ += static_cast<size_t>(res);
    push();
  });
}

void Stream::cancel() {
  loop_.cancel(recv_op_);
  loop_.cancel(send_op_);
}

// ---------------------------------------------------------------- the handshake

void Stream::start_tls(std::unique_ptr<TlsSession> s, std::span<const uint8_t> early, bool kernel,
                       std::function<void(Status)> done) {
  tls_ = std::move(s);
  kernel_wanted_ = kernel;
  if (kernel) tls_->keep_secrets();
  in_.resize(kHandshakeIn);
  if (!early.empty()) {
    saw(early.data(), early.size());
    tls_->feed(early.data(), early.size());
  }
  shaken_ = std::move(done);
  in_send_ = true;  // the handshake counts as a send until it ends
  loop_.post([this] { shake(); });
}

void Stream::shake() {
  const TlsSession::Step step = tls_->handshake();
  out_.clear();
  out_sent_ = 0;
  tls_->take_output(out_);
  auto next = [this, step](int res) {
    if (res < 0) return end_handshake(Status::error(ECONNRESET, "the connection ended during the TLS handshake"));
    if (step == TlsSession::Step::done) {
      to_kernel();
      if (kernel_rx_) {
        std::vector<uint8_t>().swap(in_);  // the kernel receives now
      } else {
        in_.resize(kCipherIn);
      }
      return end_handshake({});
    }
    if (step == TlsSession::Step::failed) {
      const int code = tls_->failure() == TlsSession::Failure::refused ? EACCES : EPROTO;
      return end_handshake(Status::error(code, fmt::format("TLS handshake failed: {}", tls_->error())));
    }
    if (handshake_records_ > kMostHandshakeRecords) {
      return end_handshake(Status::error(
          EPROTO, fmt::format("the peer cut its TLS handshake into more than {} records",
                              kMostHandshakeRecords)));
    }
    receive_more([this](int got) {
      if (got <= 0) {
        return end_handshake(Status::error(ECONNRESET, "the peer ended the connection during the TLS handshake"));
      }
      shake();
    });
  };
  if (out_.empty()) return next(0);
  send_out(next);  // the alert too, when it failed: the peer learns why
}

void Stream::receive_more(std::function<void(int)> then) {
  in_recv_ = true;
  // Up to the end of the record where the kernel is to take over; all there is otherwise.
  const size_t n = kernel_wanted_ ? std::min(in_.size(), to_record_end()) : in_.size();
  recv_op_ = loop_.recv(fd_, in_.data(), static_cast<uint32_t>(n),
                        [this, then = std::move(then)](int res) {
                          in_recv_ = false;
                          if (res > 0) {
                            saw(in_.data(), static_cast<size_t>(res));
                            tls_->feed(in_.data(), static_cast<size_t>(res));
                          }
                          then(res);
                        });
}

void Stream::saw(const uint8_t* p, size_t n) {
  while (n) {
    if (head_got_ < sizeof head_) {
      const size_t k = std::min(n, sizeof head_ - head_got_);
      std::memcpy(head_ + head_got_, p, k);
      head_got_ += k;
      p += k;
      n -= k;
      if (head_got_ == sizeof head_) {
        ++handshake_records_;
        body_left_ = static_cast<size_t>(head_[3]) << 8 | head_[4];
        if (body_left_ == 0) head_got_ = 0;
      }
      continue;
    }
    const size_t k = std::min(n, body_left_);
    body_left_ -= k;
    p += k;
    n -= k;
    if (body_left_ == 0) head_got_ = 0;
  }
}

size_t Stream::to_record_end() const {
  return head_got_ < sizeof head_ ? sizeof head_ - head_got_ : body_left_;
}

// The handshake's last records have left (shake() sent them before it ended): the kernel may
// take over from record 0 in each direction.
void Stream::to_kernel() {
  if (!kernel_wanted_) {
    records_ = "user space";
    return;
  }
  auto secrets = tls_->take_secrets();  // taken (and wiped from the session) either way
  if (!secrets) {
    records_ = "user space: not at a record boundary when the handshake ended";
    return;
  }
  const KernelTls k = move_to_kernel(fd_, *secrets);
  kernel_rx_ = k.receive;
  kernel_tx_ = k.send;
  records_ = k.receive && k.send ? "kernel"
             : k.receive         ? fmt::format("kernel receives, user space sends: {}", k.why_not)
                                 : fmt::format("user space: {}", k.why_not);
}

void Stream::end_handshake(Status s) {
  in_send_ = false;
  auto done = std::move(shaken_);
  shaken_ = nullptr;
  done(std::move(s));  // last: the owner may free the stream
}

}  // namespace blkcopy::nvme
