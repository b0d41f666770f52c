// PDUs waiting to leave one NVMe/TCP socket, for the target's connections and the host's
// queues alike: a header, optional data (pointing at the caller's buffer) and its digest. One
// sendmsg at a time is in flight, and it gathers every PDU waiting (up to kMaxPdus, kMaxBytes):
// a queue of completions and C2HData PDUs leaves in one system call instead of one each. After
// a short send the rest goes first.
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

  static constexpr size_t kMaxPdus = 64;
  static constexpr size_t kMaxBytes = 1u << 20;

  // Starts sending the waiting PDUs unless a send is in flight or nothing waits.
  // done(res, left) runs on the loop: res is what sendmsg returned (bytes or -errno); `left`
  // holds the PDUs that have now wholly left (none after an error), destroyed once done returns.
  template <class Done>
  void start(EventLoop& loop, int fd, Done done) {
    if (pending_ || q_.empty()) return;
    size_t n = 0, total = 0, skip = part_;
    for (size_t i = 0; i < q_.size() && i < kMaxPdus && (i == 0 || total < kMaxBytes); ++i) {
      Pdu& p = q_[i];
      iovec parts[3];
      size_t k = 0;
      parts[k++] = {p.head.data(), p.head.size()};
      if (p.len) parts[k++] = {const_cast<uint8_t*>(p.data), p.len};
      if (p.has_ddgst) parts[k++] = {&p.ddgst, 4};
      for (size_t j = 0; j < k; ++j) {
        if (skip >= parts[j].iov_len) {  // already sent (the front PDU after a short send)
          skip -= parts[j].iov_len;
          continue;
        }
        iov_[n] = {static_cast<uint8_t*>(parts[j].iov_base) + skip, parts[j].iov_len - skip};
        total += iov_[n++].iov_len;
        skip = 0;
      }
    }
    msg_ = {};
    msg_.msg_iov = iov_;
    msg_.msg_iovlen = n;
    pending_ = true;
    loop.sendmsg(fd, &msg_, [this, done](int res) mutable {
      pending_ = false;
      std::deque<Pdu> left;
      if (res > 0) {
        // Pop what has wholly left; a PDU sent in part stays in front with its progress.
        size_t sent = static_cast<size_t>(res) + part_;
        while (!q_.empty()) {
          const Pdu& p = q_.front();
          const size_t size = p.head.size() + p.len + (p.has_ddgst ? 4 : 0);
          if (sent < size) break;
          sent -= size;
          left.push_back(std::move(q_.front()));
          q_.pop_front();
        }
        part_ = sent;
      }
      done(res, left);
    });
  }

 private:
  std::deque<Pdu> q_;
  bool pending_ = false;
  size_t part_ = 0;  // bytes of the front PDU already sent
  msghdr msg_{};
  iovec iov_[3 * kMaxPdus]{};
};

}  // namespace blkcopy::nvme
