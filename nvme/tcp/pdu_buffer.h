// Bytes read from an NVMe/TCP socket, cut into whole PDUs: one read often carries several, and
// a PDU may arrive over several reads. Shared by the target's connections and the host's queues.
//
// The buffer starts small (a connection that never sends a PDU costs little) and grows to hold
// the longest PDU announced so far; the caller's accept() bounds that length.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "nvme/spec.h"

namespace blkcopy::nvme {

class PduBuffer {
 public:
  explicit PduBuffer(size_t initial) : buf_(initial) {}

  // Where the next read goes, and how much it may take.
  uint8_t* tail() { return buf_.data() + have_; }
  uint32_t room() const { return static_cast<uint32_t>(buf_.size() - have_); }
  // Bytes not handled yet (a PDU not yet complete, or PDUs left after a pause).
  size_t partial() const { return have_; }
  // Lets reads take at least n bytes at once from now on.
  void reserve(size_t n) {
    if (buf_.size() < n) buf_.resize(n);
  }

  // After a read of n bytes: for each PDU whose header is in, `accept(header, pdu, available)`
  // says whether to go on (false: the connection is ending); for each whole PDU,
  // `handle(pdu)` runs and says whether to go on. A partial PDU stays for the next read, and
  // the buffer grows to hold all of it. After handle() said stop, the PDUs not handled yet stay:
  // consumed(0, ...) takes them up again (a reader that paused).
  template <class Accept, class Handle>
  void consumed(size_t n, Accept accept, Handle handle) {
    have_ += n;
    size_t at = 0;
    while (have_ - at >= sizeof(PduHeader)) {
      PduHeader h;
      std::memcpy(&h, buf_.data() + at, sizeof h);
      if (!accept(h, buf_.data() + at, have_ - at)) return;
      if (have_ - at < h.plen) {
        if (buf_.size() - at < h.plen) {
          compact(at);
          at = 0;
          // Only ever grows: a buffer cut down to one PDU would take one PDU per read.
          if (buf_.size() < h.plen) buf_.resize(h.plen);
        }
        break;
      }
      const uint32_t plen = h.plen;
      if (!handle(buf_.data() + at)) {
        compact(at + plen);
        return;
      }
      at += plen;
    }
    compact(at);
  }

 private:
  void compact(size_t at) {
    if (!at) return;
    std::memmove(buf_.data(), buf_.data() + at, have_ - at);
    have_ -= at;
  }
  std::vector<uint8_t> buf_;
  size_t have_ = 0;
};

}  // namespace blkcopy::nvme
