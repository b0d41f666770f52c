// PDUs waiting to leave one NVMe/TCP socket, for the target's connections and the host's
// queues alike: a header, optional data (pointing at the caller's buffer) and its digest, sent
// with one sendmsg at a time on the loop; after a short send the rest goes first.
#pragma once

#include <blkcopy/event_loop.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <vector>

namespace blkcopy::nvme {

// Owner: what a PDU keeps alive until it has left (the target's command and its data), or an
// empty type.
template <class Owner>
class SendQueue {
 public:
  struct Pdu {
    std::vector<uint8_t> head;     // header (and its digest)
    const uint8_t* data = nullptr; // must stay valid until the PDU has left
    uint32_t len = 0;
    uint32_t ddgst = 0;
    bool has_ddgst = false;
    Owner owner{};
  };

  void push(Pdu p) { q_.push_back(std::move(p)); }
  bool empty() const { return q_.empty(); }
  // A send is in flight: the queue (and whatever owns it) must outlive its completion.
  bool pending() const { return pending_; }
  void clear() {
    q_.clear();
    part_ = 0;
  }

  // Starts sending the front PDU unless a send is in flight or nothing waits.
  // done(res, left) runs on the loop: res is what sendmsg returned (bytes or -errno); `left` is
  // the PDU that has now wholly left (nullptr after a short send or an error), popped once
  // done returns.
  template <class Done>
  void start(EventLoop& loop, int fd, Done done) {
    if (pending_ || q_.empty()) return;
    Pdu& p = q_.front();
    size_t n = 0;
    iov_[n++] = {p.head.data(), p.head.size()};
    if (p.len) iov_[n++] = {const_cast<uint8_t*>(p.data), p.len};
    if (p.has_ddgst) iov_[n++] = {&p.ddgst, 4};
    size_t skip = part_, first = 0;
    while (skip && skip >= iov_[first].iov_len) skip -= iov_[first++].iov_len;
    iov_[first].iov_base = static_cast<uint8_t*>(iov_[first].iov_base) + skip;
    iov_[first].iov_len -= skip;
    msg_ = {};
    msg_.msg_iov = iov_ + first;
    msg_.msg_iovlen = n - first;
    size_t total = 0;
    for (size_t i = first; i < n; ++i) total += iov_[i].iov_len;
    pending_ = true;
    loop.sendmsg(fd, &msg_, [this, total, done](int res) mutable {
      pending_ = false;
      if (res < 0 || static_cast<size_t>(res) < total) {
        if (res > 0) part_ += static_cast<size_t>(res);
        return done(res, static_cast<Pdu*>(nullptr));
      }
      part_ = 0;
      Pdu left = std::move(q_.front());
      q_.pop_front();
      done(res, &left);
    });
  }

 private:
  std::deque<Pdu> q_;
  bool pending_ = false;
  size_t part_ = 0;  // bytes of the front PDU already sent
  msghdr msg_{};
  iovec iov_[3]{};
};

}  // namespace blkcopy::nvme
