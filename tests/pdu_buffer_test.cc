// The receive buffer of NVMe/TCP connections: PDUs cut out whole from reads of any size, and a
// buffer that never shrinks below what reads were given (it once shrank to one PDU after a PDU
// split at its end, and from then on every read took one PDU).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "nvme/tcp/pdu_buffer.h"

namespace blkcopy::nvme {
namespace {

std::vector<uint8_t> pdu(uint8_t type, uint32_t plen) {
  std::vector<uint8_t> p(plen, type);
  PduHeader h{type, 0, 24, 0, plen};
  std::memcpy(p.data(), &h, sizeof h);
  return p;
}

// Feeds `bytes` into the buffer in reads of at most `chunk`, as a socket would hand them over.
std::vector<std::pair<uint8_t, uint32_t>> feed(PduBuffer& b, const std::vector<uint8_t>& bytes,
                                                size_t chunk) {
  std::vector<std::pair<uint8_t, uint32_t>> seen;
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t n = std::min({chunk, size_t{b.room()}, bytes.size() - at});
    std::memcpy(b.tail(), bytes.data() + at, n);
    at += n;
    b.consumed(
        n, [](const PduHeader&, const uint8_t*, size_t) { return true; },
        [&](const uint8_t* p) {
          PduHeader h;
          std::memcpy(&h, p, sizeof h);
          for (uint32_t i = sizeof h; i < h.plen; ++i) EXPECT_EQ(p[i], h.type);
          seen.emplace_back(h.type, h.plen);
          return true;
        });
  }
  return seen;
}

TEST(PduBuffer, CutsWholePdusOutOfReadsOfAnySize) {
  std::vector<uint8_t> stream;
  std::vector<std::pair<uint8_t, uint32_t>> want;
  for (uint8_t t = 1; t <= 40; ++t) {
    const uint32_t len = 24 + 97u * t;
    auto p = pdu(t, len);
    stream.insert(stream.end(), p.begin(), p.end());
    want.emplace_back(t, len);
  }
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{500}, size_t{1} << 20}) {
    PduBuffer b(64);
    EXPECT_EQ(feed(b, stream, chunk), want) << "reads of " << chunk;
  }
}

TEST(PduBuffer, KeepsItsRoomAfterAPduSplitAtTheEnd) {
  PduBuffer b(64 * 1024);
  // 15 PDUs of 4120 bytes fill 61,800 bytes; the 16th crosses the end of the buffer.
  std::vector<uint8_t> stream;
  for (int i = 0; i < 17; ++i) {
    auto p = pdu(5, 4120);
    stream.insert(stream.end(), p.begin(), p.end());
  }
  EXPECT_EQ(feed(b, stream, 64 * 1024).size(), 17u);
  EXPECT_GE(b.room(), 64u * 1024 - b.partial()) << "the buffer shrank";
}

TEST(PduBuffer, GrowsToTheLongestPdu) {
  PduBuffer b(256);
  auto p = pdu(9, 300 * 1024);
  EXPECT_EQ(feed(b, p, 4096).size(), 1u);
  EXPECT_GE(b.room(), 300u * 1024);
}

}  // namespace
}  // namespace blkcopy::nvme
