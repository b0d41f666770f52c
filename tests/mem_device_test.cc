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
  Status copy_req(Device& dst, std::vector<CopySegment> srcs, uint64_t dst_off) {
    uint64_t len = 0;
    for (auto& s : srcs) len += s.length;
    CopyDesc d{std::move(srcs), {&dst, dst_off, len}};
    return submit_and_wait(dst, Request{Op::copy, 0, 0, nullptr, &d});
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

TEST_F(MemTest, RequestsOutsideTheLimitsFailAtOnce) {
  auto d = open("mem:1M,copy_max=64k,segment_max=16k,max_segments=2");
  Bytes buf(4096);
  bool called = false;
  auto never = [&](Status) { called = true; };
  EXPECT_EQ(d->submit(Request{Op::read, 100, 512, buf.data()}, never).code(), EINVAL);
  EXPECT_EQ(d->submit(Request{Op::read, 0, 500, buf.data()}, never).code(), EINVAL);
  EXPECT_EQ(d->submit(Request{Op::read, (1 << 20) - 512, 1024, buf.data()}, never).code(), ERANGE);
  EXPECT_EQ(d->submit(Request{Op::write_zeroes, 1 << 20, 512}, never).code(), ERANGE);
  CopyDesc too_long{{{d.get(), 0, 16384}, {d.get(), 16384, 16384}, {d.get(), 32768, 512}},
                    {d.get(), 65536, 33280}};
  EXPECT_EQ(d->submit(Request{Op::copy, 0, 0, nullptr, &too_long}, never).code(), EINVAL);
  CopyDesc big_segment{{{d.get(), 0, 32768}}, {d.get(), 65536, 32768}};
  EXPECT_EQ(d->submit(Request{Op::copy, 0, 0, nullptr, &big_segment}, never).code(), EINVAL);
  CopyDesc beyond{{{d.get(), (1 << 20) - 512, 1024}}, {d.get(), 0, 1024}};
  EXPECT_EQ(d->submit(Request{Op::copy, 0, 0, nullptr, &beyond}, never).code(), ERANGE);
  EXPECT_FALSE(called) << "a submission that failed at once must not complete";
}

TEST_F(MemTest, ReadOnlyRefusesWrites) {
  auto d = open("mem:1M,ro");
  Bytes buf(512);
  Status s = d->submit(Request{Op::write, 0, 512, buf.data()}, [](Status) {});
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

TEST_F(MemTest, CopyFromAnotherDeviceOrWithoutSupportIsNotSupported) {
  auto a = open("mem:1M,seed=1");
  auto b = open("mem:1M,seed=2");
  auto n = open("mem:1M,seed=3,nocopy,copy_max=0");
  EXPECT_EQ(copy_req(*b, {{a.get(), 0, 4096}}, 0).code(), EOPNOTSUPP);
  EXPECT_EQ(test::read_bytes(*b, 0, 4096), test::pattern(0, 4096, 2));
  Status s = copy_req(*n, {{n.get(), 0, 4096}}, 8192);
  EXPECT_NE(s.code(), 0);
  EXPECT_EQ(test::read_bytes(*n, 8192, 4096), test::pattern(8192, 4096, 3));
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
  ASSERT_TRUE(d->submit(Request{Op::read, 0, a.size(), a.data()}, [&](Status) {
                 order.push_back(1);
               }).ok());
  ASSERT_TRUE(d->submit(Request{Op::read, 0, b.size(), b.data()}, [&](Status) {
                 order.push_back(2);
               }).ok());
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
