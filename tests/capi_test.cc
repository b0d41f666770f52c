// The C API: every documented error provoked, and copies checked against the original data.
#include <blkcopy/blkcopy.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

struct Dev {
  blkcopy_device* d = nullptr;
  explicit Dev(const std::string& spec) { EXPECT_EQ(blkcopy_open(spec.c_str(), &d), 0) << spec; }
  ~Dev() { blkcopy_close(d); }
};

TEST(CApi, CopiesAndReportsLikeTheCli) {
  test::TempDir dir;
  const std::string f = dir.file("f", 8 << 20, 5);
  Dev dev(f);
  blkcopy_limits l{};
  ASSERT_EQ(blkcopy_info(dev.d, &l), 0);
  EXPECT_EQ(l.capacity, 8u << 20);
  blkcopy_copy_result r{};
  ASSERT_EQ(blkcopy_copy(dev.d, 0, dev.d, 4 << 20, 1 << 20, nullptr, &r), 0) << r.error;
  EXPECT_EQ(r.bytes, 1u << 20);
  EXPECT_EQ(r.offloaded_bytes + r.emulated_bytes, r.bytes);
  std::vector<std::byte> got(1 << 20);
  ASSERT_EQ(blkcopy_read(dev.d, 4 << 20, got.data(), got.size()), 0);
  EXPECT_EQ(got, test::pattern(0, 1 << 20, 5));
  // Vectored, emulated on request, into a RAM device.
  Dev mem("mem:4M");
  blkcopy_range ranges[] = {{dev.d, 4096, 8192}, {dev.d, 65536, 4096}};
  blkcopy_copy_options o = BLKCOPY_COPY_OPTIONS_INIT;
  o.emulation = BLKCOPY_EMULATE_FORCE;
  ASSERT_EQ(blkcopy_copy_ranges(ranges, 2, mem.d, 0, &o, &r), 0) << r.error;
  EXPECT_EQ(r.emulated_bytes, 12288u);
  EXPECT_EQ(r.host_read_bytes, 12288u);
  std::vector<std::byte> both(12288);
  ASSERT_EQ(blkcopy_read(mem.d, 0, both.data(), both.size()), 0);
  auto want = test::pattern(4096, 8192, 5);
  auto second = test::pattern(65536, 4096, 5);
  want.insert(want.end(), second.begin(), second.end());
  EXPECT_EQ(both, want);
  // Unaligned user memory is fine for read and write.
  std::vector<char> odd(4096 + 1, 'x');
  ASSERT_EQ(blkcopy_write(mem.d, 8192, odd.data() + 1, 4096), 0);
  std::vector<char> back(4096);
  ASSERT_EQ(blkcopy_read(mem.d, 8192, back.data(), 4096), 0);
  EXPECT_EQ(std::memcmp(back.data(), odd.data() + 1, 4096), 0);
}

TEST(CApi, EveryErrorIsANegativeErrnoWithAMessage) {
  blkcopy_device* d = nullptr;
  EXPECT_EQ(blkcopy_open(nullptr, &d), -EINVAL);
  EXPECT_EQ(blkcopy_open("mem:1M", nullptr), -EINVAL);
  EXPECT_EQ(blkcopy_open("nope:x", &d), -EINVAL);
  EXPECT_EQ(d, nullptr);
  EXPECT_EQ(blkcopy_open("/nonexistent/file", &d), -ENOENT);
  Dev a("mem:1M"), ro("mem:1M,ro");
  blkcopy_copy_result r{};
  EXPECT_EQ(blkcopy_copy(a.d, 0, a.d, 1 << 20, 4096, nullptr, &r), -ERANGE);
  EXPECT_NE(std::strstr(r.error, "beyond the end"), nullptr) << r.error;
  EXPECT_EQ(blkcopy_copy(a.d, 100, a.d, 8192, 4096, nullptr, &r), -EINVAL);
  EXPECT_EQ(blkcopy_copy(a.d, 0, ro.d, 0, 4096, nullptr, &r), -EROFS);
  blkcopy_copy_options never = BLKCOPY_COPY_OPTIONS_INIT;
  never.emulation = BLKCOPY_EMULATE_NEVER;
  Dev other("mem:1M");
  EXPECT_EQ(blkcopy_copy(a.d, 0, other.d, 0, 4096, &never, &r), -EOPNOTSUPP);
  EXPECT_EQ(blkcopy_copy_ranges(nullptr, 1, a.d, 0, nullptr, &r), -EINVAL);
  EXPECT_EQ(blkcopy_copy(a.d, 0, a.d, 8192, 4096, nullptr, nullptr), 0) << "out may be NULL";
  char buf[4096];
  EXPECT_EQ(blkcopy_read(a.d, 1 << 20, buf, 4096), -ERANGE);
  EXPECT_EQ(blkcopy_read(a.d, 1, buf, 512), -EINVAL);
  EXPECT_EQ(blkcopy_read(a.d, 0, buf, 0), -EINVAL);
  EXPECT_EQ(blkcopy_write(ro.d, 0, buf, 512), -EROFS);
  EXPECT_EQ(blkcopy_info(a.d, nullptr), -EINVAL);
  // A device belongs to the thread that opened it.
  int from_other = 0;
  std::thread([&] { from_other = blkcopy_read(a.d, 0, buf, 512); }).join();
  EXPECT_EQ(from_other, -EXDEV);
  EXPECT_STREQ(blkcopy_strerror(-ERANGE), std::strerror(ERANGE));
  EXPECT_NE(std::strlen(blkcopy_version()), 0u);
  EXPECT_EQ(blkcopy_close(nullptr), 0);
}

// The second security round's findings on the C API (issue 19, item 8).
TEST(CApi, EdgesThatWereUndefinedOrSilent) {
  EXPECT_NE(blkcopy_strerror(INT_MIN), nullptr);  // -INT_MIN overflowed
  EXPECT_NE(std::strlen(blkcopy_strerror(INT_MIN)), 0u);
  // Why an open failed can be had, not only its errno.
  blkcopy_device* d = nullptr;
  EXPECT_EQ(blkcopy_open("/nonexistent/file", &d), -ENOENT);
  EXPECT_NE(std::strstr(blkcopy_last_error(), "/nonexistent/file"), nullptr) << blkcopy_last_error();
  Dev a("mem:1M"), huge("mem:16000000T,nodata");  // 1.76e19 bytes: two halves of 2^64 fit
  // Source lengths summing past 2^64 wrapped into a small "success".
  blkcopy_range wrap[3] = {{huge.d, 0, 1ull << 63}, {huge.d, 0, 1ull << 63}, {huge.d, 0, 4096}};
  blkcopy_copy_result r{};
  EXPECT_EQ(blkcopy_copy_ranges(wrap, 3, huge.d, 65536, nullptr, &r), -EINVAL);
  EXPECT_NE(std::strstr(r.error, "more than 2^64"), nullptr) << r.error;
  EXPECT_EQ(r.bytes, 0u);
  // An emulation value the enum does not have is refused, not read as "allow".
  blkcopy_copy_options odd = BLKCOPY_COPY_OPTIONS_INIT;
  odd.emulation = 7;
  EXPECT_EQ(blkcopy_copy(a.d, 0, a.d, 8192, 4096, &odd, &r), -EINVAL);
  EXPECT_NE(std::strstr(r.error, "emulation"), nullptr) << r.error;
  // Closing from another thread leaves the device open and says why.
  int from_other = 0;
  std::thread([&] { from_other = blkcopy_close(a.d); }).join();
  EXPECT_EQ(from_other, -EXDEV);
  char buf[512];
  EXPECT_EQ(blkcopy_read(a.d, 0, buf, sizeof buf), 0) << "still open";
}

}  // namespace
}  // namespace blkcopy
