// PDUs waiting to leave one NVMe/TCP socket, for the target's connections and the host's
// queues alike: a header, optional data (pointing at the caller's buffer) and its digest. One
// sendmsg at a time is in flight, and it gathers every PDU waiting (up to kMaxPdus, kMaxBytes):
// a queue of completions and C2HData PDUs leaves in one system call instead of one each. After
// a short send the rest goes first. The bytes go through a Stream (clear text or TLS). Headers are held inline and the queue's storage is kept
// from one PDU to the next: in a steady state, queuing and sending allocate nothing.
#pragma once

#include <blkcopy/event_loop.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "nvme/tcp/framing.h"
#include "nvme/tcp/stream.h"

namespace blkcopy::nvme {

// Owner: what a PDU keeps alive until it has left (the target's request, which owns its data),
// or an empty type. Cheap to copy (a pointer).
template <class Owner>
class SendQueue {
 public:
  struct Pdu {
    tcp::Header head;              // header (and its digest)
    const uint8_t* data = nullptr; // must stay valid until the PDU has left
    uint32_t len = 0;
    uint32_t ddgst = 0;
    bool has_ddgst = false;
    Owner owner{};
  };

  // Queues a PDU. An urgent one (a command capsule, an R2T: small, and what the peer waits on
  // before it can move data) goes ahead of the PDUs that are only waiting, behind those being
  // sent and the urgent ones queued before it: a read command or an R2T does not wait behind
  // megabytes of data. Never for a PDU that must follow others (a completion after its data).
  void push(const Pdu& p, bool urgent = false) {
    if (!urgent) return q_.push_back(p);
    const size_t at = std::min(size(), std::max({in_flight_, urgent_end_, part_ ? size_t{1} : 0}));
    q_.insert(q_.begin() + static_cast<std::ptrdiff_t>(front_ + at), p);
    urgent_end_ = at + 1;
  }
  size_t size() const { return q_.size() - front_; }
  bool empty() const { return size() == 0; }
  // A send is in flight: the queue (and whatever owns it) must outlive its completion.
  bool pending() const { return pending_; }
  void clear() {
    q_.clear();  // keeps the storage
    front_ = part_ = urgent_end_ = 0;
  }
  // Drops every PDU waiting, handing each one's owner to f first. REQUIRES: !pending().
  template <class F>
  void clear(F f) {
    for (size_t i = front_; i < q_.size(); ++i) f(q_[i].owner);
    clear();
  }

  static constexpr size_t kMaxPdus = 64;
  static constexpr size_t kMaxBytes = 1 << 20;

  // Starts sending the waiting PDUs unless a send is in flight or nothing waits.
  // done(res, left) runs on the loop: res is what sendmsg returned (bytes or -errno); `left`
  // holds the owners of the PDUs that have now wholly left (none after an error), valid until
  // done returns; done may queue more PDUs.
  template <class Done>
  void start(Stream& stream, Done done) {
    if (pending_ || empty()) return;
    size_t n = 0, total = 0, skip = part_;
    size_t i = 0;
    for (; i < size() && i < kMaxPdus && (i == 0 || total < kMaxBytes); ++i) {
      Pdu& p = q_[front_ + i];
      iovec parts[3];
      size_t k = 0;
      parts[k++] = {p.head.data(), p.head.size()};
      if (p.len) parts[k++] = {const_cast<uint8_t*>(p.data), p.len};
      // The header and digest are copied out: an urgent push may move the queue's elements.
      heads_[i] = p.head;
      parts[0].iov_base = heads_[i].data();
      ddgst_[i] = p.ddgst;
      if (p.has_ddgst) parts[k++] = {&ddgst_[i], 4};
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
    in_flight_ = i;
    stream.sendmsg(&msg_, [this, done](int res) mutable {
      pending_ = false;
      in_flight_ = 0;
      size_t gone = 0;
      if (res > 0) {
        // Pop what has wholly left; a PDU sent in part stays in front with its progress.
        size_t sent = static_cast<size_t>(res) + part_;
        while (!empty()) {
          const Pdu& p = q_[front_];
          const size_t size = p.head.size() + p.len + (p.has_ddgst ? 4 : 0);
          if (sent < size) break;
          sent -= size;
          left_[gone++] = p.owner;
          ++front_;
          if (urgent_end_) --urgent_end_;
        }
        part_ = sent;
        compact();
      }
      std::span<Owner> left(left_.data(), gone);
      done(res, left);
    });
  }

 private:
  // Storage before front_ has left; it is reused once the queue empties, or moved down when
  // it has grown past what is still waiting.
  void compact() {
    if (front_ == q_.size()) {
      q_.clear();
      front_ = 0;
    } else if (front_ >= kMaxPdus && front_ >= size()) {
      q_.erase(q_.begin(), q_.begin() + static_cast<std::ptrdiff_t>(front_));
      front_ = 0;
    }
  }

  std::vector<Pdu> q_;
  size_t front_ = 0;       // the first PDU still waiting
  bool pending_ = false;
  size_t part_ = 0;        // bytes of the front PDU already sent
  size_t in_flight_ = 0;   // PDUs at the front in the sendmsg in flight
  size_t urgent_end_ = 0;  // one past the last urgent PDU queued (0: none waiting)
  std::array<Owner, kMaxPdus> left_{};
  std::array<tcp::Header, kMaxPdus> heads_{};
  uint32_t ddgst_[kMaxPdus]{};
  msghdr msg_{};
  iovec iov_[3 * kMaxPdus]{};
};

}  // namespace blkcopy::nvme
