// A token-style driver written against the public Device interface, the way SCSI offload works
// (POPULATE TOKEN for the source, later WRITE USING TOKEN for the destination): the copy engine
// hands it one context holding every leg, and the driver runs the two halves one after the
// other. Nothing needs both halves in flight at once, and no leg is ever paired up later.
#include <blkcopy/copy.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

class TokenDevice final : public Device {
 public:
  TokenDevice(EventLoop& loop, uint64_t size) : Device(loop, "token-test"), data_(size) {
    limits_.capacity = size;
    limits_.copy_max_hw_bytes = limits_.copy_max_bytes = 64 << 10;
    limits_.copy_segment_max_bytes = 16 << 10;
    limits_.copy_max_src_segments = 4;
  }

  void submit(const Request& req, Completion done) override {
    if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
    if (req.op != Op::copy) {
      loop().post([this, req, done = std::move(done)] {
        if (req.op == Op::read) std::memcpy(req.buf, data_.data() + req.offset, req.length);
        if (req.op == Op::write) std::memcpy(data_.data() + req.offset, req.buf, req.length);
        done(Status());
      });
      return;
    }
    if (!std::all_of(req.copy->sources.begin(), req.copy->sources.end(),
                     [&](const CopySegment& s) { return same_copy_domain(*s.dev); })) {
      return not_offloaded(req, std::move(done), "foreign leg");
    }
    // Phase 1: populate a token: a point-in-time image of the source legs.
    loop().post([this, desc = req.copy, done = std::move(done)]() mutable {
      const uint64_t token = next_token_++;
      auto& image = tokens_[token];
      for (const CopySegment& s : desc->sources) {
        image.insert(image.end(), data_.begin() + s.offset, data_.begin() + s.offset + s.length);
      }
      ++populated_;
      // Phase 2, strictly after phase 1 completed: write using the token.
      loop().post([this, token, dst = desc->dst, done = std::move(done)] {
        ++written_;
        max_outstanding_tokens_ = std::max(max_outstanding_tokens_, tokens_.size());
        std::memcpy(data_.data() + dst.offset, tokens_[token].data(), dst.length);
        tokens_.erase(token);
        done(Status());
      });
    });
  }

  DeviceInfo describe() const override { return {"token-test", name(), "tokens", {}}; }

  test::Bytes data_;
  std::map<uint64_t, test::Bytes> tokens_;
  uint64_t next_token_ = 1;
  int populated_ = 0, written_ = 0;
  size_t max_outstanding_tokens_ = 0;
};

TEST(TokenDevice, EngineOffloadsVectoredCopiesThroughTwoPhases) {
  auto loop = test::make_loop();
  TokenDevice dev(*loop, 1 << 20);
  test::Bytes original = test::pattern(0, 1 << 20, 5);
  dev.data_ = original;
  std::vector<CopySegment> srcs{{&dev, 0, 40 << 10}, {&dev, 256 << 10, 100 << 10}};
  CopyResult r = copy_ranges(srcs, dev, 512 << 10);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.offloaded_bytes, 140u << 10);
  EXPECT_EQ(dev.populated_, dev.written_);
  EXPECT_GT(dev.populated_, 2) << "split by the 64k/16k/4-segment limits";
  EXPECT_TRUE(dev.tokens_.empty());
  test::Bytes want = original;
  std::memcpy(want.data() + (512 << 10), original.data(), 40 << 10);
  std::memcpy(want.data() + (552 << 10), original.data() + (256 << 10), 100 << 10);
  EXPECT_EQ(dev.data_, want);
}

}  // namespace
}  // namespace blkcopy
