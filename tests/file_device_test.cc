#include "drivers/file/file_device.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::Bytes;

class FileTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> loop = test::make_loop();
  test::TempDir dir;
};

TEST_F(FileTest, OpensARegularFileWithItsLimits) {
  const std::string p = dir.file("a", 1 << 20, 5);
  auto d = test::open_dev(*loop, p);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->limits().capacity, 1u << 20);
  EXPECT_GE(d->limits().logical_block_size, 512u);
  EXPECT_FALSE(d->limits().read_only);
  const DeviceInfo info = d->describe();
  EXPECT_EQ(info.kind, "file");
  EXPECT_NE(info.copy_method.find("copy_file_range"), std::string::npos) << info.copy_method;
  EXPECT_EQ(test::read_bytes(*d, 4096, 65536), test::pattern(4096, 65536, 5));
}

TEST_F(FileTest, FilePrefixAndOptions) {
  const std::string p = dir.file("a", 1 << 20);
  auto d = test::open_dev(*loop, "file:" + p + ",ro,buffered,nocopy");
  auto& f = static_cast<FileDevice&>(*d);
  EXPECT_TRUE(d->limits().read_only);
  EXPECT_FALSE(f.direct());
  EXPECT_FALSE(d->limits().can_offload());
  EXPECT_NE(d->describe().copy_method.find("nocopy"), std::string::npos);
  auto bad = open_device(*loop, "file:" + p + ",sparkly");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("unknown file option 'sparkly'"), std::string::npos);
}

TEST_F(FileTest, OpenErrorsNameTheProblem) {
  auto missing = open_device(*loop, (dir.path() / "nope").string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ENOENT);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
  auto directory = open_device(*loop, "file:" + dir.path().string() + ",ro");
  ASSERT_FALSE(directory);
  EXPECT_NE(directory.error().message().find("neither a regular file nor a block device"),
            std::string::npos)
      << directory.error().message();
  auto unknown = open_device(*loop, "nvme-foo:thing");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message().find("unknown device type 'nvme-foo'"), std::string::npos);
}

TEST_F(FileTest, ReadWriteFlushZeroesDiscard) {
  auto d = test::open_dev(*loop, dir.file("a", 1 << 20, 9));
  Bytes data = test::pattern(0, 1 << 16, 99);
  test::write_bytes(*d, 65536, data);
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::flush}).ok());
  EXPECT_EQ(test::read_bytes(*d, 65536, data.size()), data);
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::write_zeroes, 0, 8192}).ok());
  ASSERT_TRUE(submit_and_wait(*d, Request{Op::discard, 16384, 8192}).ok());
  EXPECT_EQ(test::read_bytes(*d, 0, 8192), Bytes(8192));
  EXPECT_EQ(test::read_bytes(*d, 16384, 8192), Bytes(8192));
  EXPECT_EQ(test::read_bytes(*d, 8192, 8192), test::pattern(8192, 8192, 9));
  EXPECT_EQ(std::filesystem::file_size(dir.path() / "a"), 1u << 20) << "size kept";
}

TEST_F(FileTest, CopyFileRangeWithinAndBetweenFiles) {
  auto a = test::open_dev(*loop, "file:" + dir.file("a", 1 << 20, 1) + ",kernelcopy");
  auto b = test::open_dev(*loop, "file:" + dir.file("b", 1 << 20, 2) + ",kernelcopy");
  ASSERT_TRUE(a->same_copy_domain(*b));
  CopyDesc within{{{a.get(), 0, 65536}, {a.get(), 131072, 4096}}, {a.get(), 524288, 69632}};
  CopyReport r;
  ASSERT_TRUE(submit_and_wait(*a, Request{Op::copy, 0, 0, nullptr, &within, &r}).ok());
  EXPECT_TRUE(r.not_supported.empty());
  EXPECT_EQ(test::read_bytes(*a, 524288, 65536), test::pattern(0, 65536, 1));
  EXPECT_EQ(test::read_bytes(*a, 524288 + 65536, 4096), test::pattern(131072, 4096, 1));
  CopyDesc across{{{a.get(), 4096, 8192}}, {b.get(), 0, 8192}};
  ASSERT_TRUE(submit_and_wait(*b, Request{Op::copy, 0, 0, nullptr, &across, &r}).ok());
  EXPECT_TRUE(r.not_supported.empty());
  EXPECT_EQ(test::read_bytes(*b, 0, 8192), test::pattern(4096, 8192, 1));
  EXPECT_EQ(test::read_bytes(*b, 8192, 4096), test::pattern(8192, 4096, 2));
}

TEST_F(FileTest, CopyFromAMemDeviceIsNotSupported) {
  auto f = test::open_dev(*loop, "file:" + dir.file("a", 1 << 20, 1) + ",kernelcopy");
  auto m = test::open_dev(*loop, "mem:1M,seed=4");
  EXPECT_FALSE(f->same_copy_domain(*m));
  CopyDesc d{{{m.get(), 0, 4096}}, {f.get(), 0, 4096}};
  CopyReport r;
  ASSERT_TRUE(submit_and_wait(*f, Request{Op::copy, 0, 0, nullptr, &d, &r}).ok());
  EXPECT_EQ(r.not_supported, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 4096}}));
  EXPECT_EQ(test::read_bytes(*f, 0, 4096), test::pattern(0, 4096, 1));
}

TEST_F(FileTest, TheSameFileUnderTwoNamesIsTheSameStorage) {
  const std::string p = dir.file("a", 1 << 20);
  auto a = test::open_dev(*loop, p);
  auto b = test::open_dev(*loop, "file:" + p);
  auto c = test::open_dev(*loop, dir.file("c", 1 << 20));
  EXPECT_TRUE(a->same_storage(*b));
  EXPECT_FALSE(a->same_storage(*c));
}

// tmpfs (and ext4) copy only inside the kernel, through the page cache: no offload unless
// kernelcopy asks for it; since Linux 6.6 tmpfs also takes O_DIRECT.
TEST_F(FileTest, TmpfsCopiesInTheKernelOnlyWhenAskedTo) {
  if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm here";
  test::TempDir shm("/dev/shm");
  const std::string p = shm.file("a", 1 << 20, 3);
  auto d = test::open_dev(*loop, p);
  EXPECT_EQ(static_cast<FileDevice&>(*d).copy_method(), FileCopyMethod::none);
  EXPECT_FALSE(d->limits().can_offload());
  EXPECT_NE(d->describe().copy_method.find("none: tmpfs cannot share extents"), std::string::npos)
      << d->describe().copy_method;
  auto k = test::open_dev(*loop, "file:" + p + ",kernelcopy");
  EXPECT_EQ(static_cast<FileDevice&>(*k).copy_method(), FileCopyMethod::kernel_copy);
  EXPECT_TRUE(k->limits().can_offload());
  EXPECT_NE(k->describe().copy_method.find("tmpfs"), std::string::npos);
  EXPECT_EQ(test::read_bytes(*d, 0, 4096), test::pattern(0, 4096, 3));
}

TEST_F(FileTest, ReadOnlyFileRefusesWrites) {
  auto d = test::open_dev(*loop, "file:" + dir.file("a", 1 << 20) + ",ro");
  Bytes buf(4096);
  EXPECT_EQ(write_sync(*d, 0, buf).code(), EROFS);
}

}  // namespace
}  // namespace blkcopy
