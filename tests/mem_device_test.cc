#include "drivers/mem/mem_device.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::Bytes;

class MemTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> loop = test::make_loop();
  std::unique_ptr<Device> open(const std::string& spec) { return test::open_dev(*loop, spec); }
  Status copy_req(Device& dst, std::vector<CopySegment> srcs, uint64_t dst_off,
                  CopyReport* report = nullptr) {
    uint64_t len = 0;
    for (auto& s : srcs) len += s.length;
    CopyDesc d{std::move(srcs), {&dst, dst_off, len}};
    CopyReport own;
    return submit_and_wait(dst, Request{Op::copy, 0, 0, nullptr, &d, report ? report : &own});
  }
  // Submits and runs the loop until the completion: its status, and whether it ran inside
  // submit() (it must not).
  Status submit_once(Device& d, const Request& r) {
    bool inside = true, called = false;
    Status out;
    d.submit(r, [&](Status s) {
      EXPECT_FALSE(inside) << "the completion ran inside submit()";
      EXPECT_FALSE(called) << "the completion ran twice";
      called = true;
      out = std::move(s);
    });
    inside = false;
    EXPECT_TRUE(loop->run_until([&] { return called; }).ok());
    return out;
  }
};

TEST_F(MemTest, OptionsSetTheLimits) {
  auto d = open("mem:4M,block=4k,copy_max=1M,segment_max=64k,max_segments=8");
  const QueueLimits& l = d->limits();
  EXPECT_EQ(l.capacity, 4u << 20);
  EXPECT_EQ(l.logical_block_size, 4096u);
  EXPECT_EQ(l.copy_max_hw_bytes, 1u << 20);
  EXPECT_EQ(l.copy_max_bytes, 1u << 20);
  EXPECT_EQ(l.copy_segment_max_bytes, 64u << 10);
  EXPECT_EQ(l.copy_max_src_segments, 8u);
  EXPECT_FALSE(l.read_only);
  auto n = open("mem:1M,nocopy,ro");
  EXPECT_EQ(n->limits().copy_max_hw_bytes, 0u);
  EXPECT_FALSE(n->limits().can_offload());
  EXPECT_TRUE(n->limits().read_only);
}

TEST_F(MemTest, BadOptionsAreNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"mem:", "invalid size"},
      {"mem:1M,block=1000", "power of two"},
      {"mem:1M,block=256", "power of two"},
      {"mem:1000", "multiple of the block size"},
      {"mem:1M,copy_max=1000", "multiples of the block size"},
      {"mem:1M,bogus", "unknown mem option 'bogus'"},
      {"mem:1M,latency=5parsecs", "invalid latency"},
      {"mem:1M,fail=read", "expected OP:N"},
      {"mem:1M,fail=frobnicate:1", "unknown request type 'frobnicate'"},
      {"mem:1M,fail=read:0", "positive count"},
      {"mem:1M,fail=read:1:EWHAT", "invalid error code"},
  };
  for (auto [spec, msg] : cases) {
    auto d = open_device(*loop, spec);
    ASSERT_FALSE(d) << spec;
    EXPECT_EQ(d.error().code(), EINVAL) << spec;
    EXPECT_NE(d.error().message().find(msg), std::string::npos)
        << spec << " -> " << d.error().message();
  }
}

TEST_F(MemTest, ReadWriteZeroesDiscard) {
  auto d = open("mem:1M,seed=7");
  EXPECT_EQ(test::read_bytes(*d, 4096, 8192), test::pattern(4096, 8192, 7));
  Bytes data(4096, std::byte{0xab});
  test::write_bytes(*d, 8192, data);
  EXPECT_EQ(test::read_bytes(*d, 8192, 4096), data);
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::write_zeroes, 0, 4096}).ok());
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::discard, 8192, 4096}).ok());
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::flush}).ok());
  EXPECT_EQ(test::read_bytes(*d, 0, 4096), Bytes(4096));
  EXPECT_EQ(test::read_bytes(*d, 8192, 4096), Bytes(4096));
  EXPECT_EQ(test::read_bytes(*d, 4096, 4096), test::pattern(4096, 4096, 7));
}

// Errors come through the completion, once, never inside submit() (the one error channel).
TEST_F(MemTest, RequestsOutsideTheLimitsFailThroughTheirCompletion) {
  auto d = open("mem:1M,copy_max=64k,segment_max=16k,max_segments=2");
  Bytes buf(4096);
  EXPECT_EQ(submit_once(*d, Request{Op::read, 100, 512, buf.data()}).code(), EINVAL);
  EXPECT_EQ(submit_once(*d, Request{Op::read, 0, 500, buf.data()}).code(), EINVAL);
  EXPECT_EQ(submit_once(*d, Request{Op::read, (1 << 20) - 512, 1024, buf.data()}).code(), ERANGE);
  EXPECT_EQ(submit_once(*d, Request{Op::write_zeroes, 1 << 20, 512}).code(), ERANGE);
  CopyReport r;
  CopyDesc too_long{{{d.get(), 0, 16384}, {d.get(), 16384, 16384}, {d.get(), 32768, 512}},
                    {d.get(), 65536, 33280}};
  EXPECT_EQ(submit_once(*d, Request{Op::copy, 0, 0, nullptr, &too_long, &r}).code(), EINVAL);
  CopyDesc big_segment{{{d.get(), 0, 32768}}, {d.get(), 65536, 32768}};
  EXPECT_EQ(submit_once(*d, Request{Op::copy, 0, 0, nullptr, &big_segment, &r}).code(), EINVAL);
  CopyDesc beyond{{{d.get(), (1 << 20) - 512, 1024}}, {d.get(), 0, 1024}};
  EXPECT_EQ(submit_once(*d, Request{Op::copy, 0, 0, nullptr, &beyond, &r}).code(), ERANGE);
  CopyDesc fine{{{d.get(), 0, 512}}, {d.get(), 4096, 512}};
  EXPECT_EQ(submit_once(*d, Request{Op::copy, 0, 0, nullptr, &fine}).code(), EINVAL)
      << "a copy needs its report";
}

TEST_F(MemTest, ReadOnlyRefusesWrites) {
  auto d = open("mem:1M,ro");
  Bytes buf(512);
  Status s = submit_once(*d, Request{Op::write, 0, 512, buf.data()});
  EXPECT_EQ(s.code(), EROFS);
  EXPECT_NE(s.message().find("read-only"), std::string::npos);
  EXPECT_TRUE(submit_and_wait(*d, Request{Op::read, 0, 512, buf.data()}).ok());
}

TEST_F(MemTest, CopiesVectoredRangesInsideTheDevice) {
  auto d = open("mem:1M,seed=3");
  ASSERT_TRUE(copy_req(*d, {{d.get(), 0, 4096}, {d.get(), 65536, 8192}}, 131072).ok());
  EXPECT_EQ(test::read_bytes(*d, 131072, 4096), test::pattern(0, 4096, 3));
  EXPECT_EQ(test::read_bytes(*d, 131072 + 4096, 8192), test::pattern(65536, 8192, 3));
  EXPECT_EQ(test::read_bytes(*d, 131072 + 12288, 4096), test::pattern(131072 + 12288, 4096, 3));
}

// "Not supported" is no error: the copy completes ok and its report lists what was not done.
TEST_F(MemTest, CopyFromAnotherDeviceOrWithoutSupportIsNotSupported) {
  auto a = open("mem:1M,seed=1");
  auto b = open("mem:1M,seed=2");
  auto n = open("mem:1M,seed=3,nocopy,copy_max=0");
  CopyReport r;
  ASSERT_TRUE(copy_req(*b, {{a.get(), 0, 4096}}, 0, &r).ok());
  EXPECT_EQ(r.not_supported, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 4096}}));
  EXPECT_NE(r.why_not_supported.find("other device"), std::string::npos) << r.why_not_supported;
  EXPECT_EQ(test::read_bytes(*b, 0, 4096), test::pattern(0, 4096, 2));
  Status s = copy_req(*n, {{n.get(), 0, 4096}}, 8192);
  EXPECT_NE(s.code(), 0);  // beyond its limits (copy_max 0)
  EXPECT_EQ(test::read_bytes(*n, 8192, 4096), test::pattern(8192, 4096, 3));
}

// A channel is the same RAM on another loop: what one writes, the other reads; copies between
// them offload (one copy domain).
TEST_F(MemTest, AChannelSharesTheDeviceOnAnotherLoop) {
  auto d = open("mem:1M,seed=4");
  auto other = test::make_loop();
  auto ch = d->channel(*other);
  ASSERT_TRUE(ch) << ch.error().message();
  Device& c = **ch;
  EXPECT_EQ(&c.loop(), other.get());
  EXPECT_TRUE(c.same_storage(*d));
  EXPECT_TRUE(d->same_copy_domain(c));
  Bytes data(4096, std::byte{0x5a});
  test::write_bytes(c, 8192, data);
  EXPECT_EQ(test::read_bytes(*d, 8192, 4096), data);
  CopyDesc desc{{{&c, 0, 4096}}, {&c, 65536, 4096}};
  CopyReport r;
  ASSERT_TRUE(submit_and_wait(c, Request{Op::copy, 0, 0, nullptr, &desc, &r}).ok());
  EXPECT_TRUE(r.not_supported.empty());
  EXPECT_EQ(test::read_bytes(*d, 65536, 4096), test::pattern(0, 4096, 4));
}

TEST_F(MemTest, FaultInjectionFailsTheNthRequestOfAType) {
  auto d = open("mem:1M,fail=write:3:ENOSPC");
  Bytes buf(512);
  for (int i = 1; i <= 5; ++i) {
    Status s = submit_and_wait(*d, Request{Op::write, 0, 512, buf.data()});
    EXPECT_EQ(s.code(), i == 3 ? ENOSPC : 0) << "write #" << i;
    ASSERT_TRUE(submit_and_wait(*d, Request{Op::read, 0, 512, buf.data()}).ok());
  }
  auto every = open("mem:1M,fail=any:2:EIO:every");
  for (int i = 1; i <= 6; ++i) {
    const Op op = i % 3 ? Op::read : Op::flush;
    Status s = submit_and_wait(*every, Request{op, 0, 512, buf.data()});
    EXPECT_EQ(s.code(), i % 2 == 0 ? EIO : 0) << "request #" << i;
  }
}

TEST_F(MemTest, DataLessDeviceReadsZeroes) {
  auto d = open("mem:1G,nodata");
  Bytes data(4096, std::byte{1});
  test::write_bytes(*d, 0, data);
  EXPECT_EQ(test::read_bytes(*d, 0, 4096), Bytes(4096));
}

TEST_F(MemTest, LatencyAndBandwidthKeepCompletionOrder) {
  auto d = open("mem:1M,latency=2ms,bw=100M");
  Bytes a(65536), b(512);
  std::vector<int> order;
  d->submit(Request{Op::read, 0, a.size(), a.data()}, [&](Status) { order.push_back(1); });
  d->submit(Request{Op::read, 0, b.size(), b.data()}, [&](Status) { order.push_back(2); });
  EXPECT_TRUE(order.empty());
  ASSERT_TRUE(loop->run_until([&] { return order.size() == 2; }).ok());
  EXPECT_EQ(order, (std::vector<int>{1, 2})) << "the cap serialises transfers";
}

TEST_F(MemTest, UserCopyLimit) {
  auto d = open("mem:1M,copy_max=64k");
  EXPECT_EQ(d->set_copy_max_bytes(128 << 10).code(), EINVAL);
  EXPECT_EQ(d->set_copy_max_bytes(1000).code(), EINVAL);
  ASSERT_TRUE(d->set_copy_max_bytes(4096).ok());
  EXPECT_EQ(d->limits().copy_max_bytes, 4096u);
  EXPECT_EQ(copy_req(*d, {{d.get(), 0, 8192}}, 65536).code(), EINVAL);
  ASSERT_TRUE(d->set_copy_max_bytes(0).ok());
  EXPECT_FALSE(d->limits().can_offload());
}

}  // namespace
}  // namespace blkcopy
