// The file driver on XFS in an image on a loop device: an offloaded copy shares extents
// (reflink), an emulated one does not. Needs root (mount); skips with a message otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "drivers/file/file_device.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

constexpr uint64_t M = 1 << 20;

// Bytes of [offset, offset + length) of the file that lie in extents shared with another file
// or range, according to FIEMAP.
uint64_t shared_bytes(const std::string& path, uint64_t offset, uint64_t length) {
  int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  constexpr unsigned kMax = 512;
  std::vector<std::byte> buf(sizeof(fiemap) + kMax * sizeof(fiemap_extent));
  auto* fm = reinterpret_cast<fiemap*>(buf.data());
  fm->fm_start = offset;
  fm->fm_length = length;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  fm->fm_extent_count = kMax;
  EXPECT_EQ(ioctl(fd, FS_IOC_FIEMAP, fm), 0) << strerror(errno);
  close(fd);
  uint64_t shared = 0;
  for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
    const fiemap_extent& e = fm->fm_extents[i];
    if (!(e.fe_flags & FIEMAP_EXTENT_SHARED)) continue;
    const uint64_t lo = std::max<uint64_t>(e.fe_logical, offset);
    const uint64_t hi = std::min<uint64_t>(e.fe_logical + e.fe_length, offset + length);
    if (hi > lo) shared += hi - lo;
  }
  return shared;
}

class XfsTest : public ::testing::Test {
 protected:
  void SetUp() override { make_and_mount(true); }
  void make_and_mount(bool reflink) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to mount an XFS image on a loop device";
    if (std::system("command -v mkfs.xfs >/dev/null") != 0) {
      GTEST_SKIP() << "mkfs.xfs not found (scripts/setup installs xfsprogs)";
    }
    img_ = (dir_.path() / "xfs.img").string();
    mnt_ = dir_.path() / "mnt";
    std::filesystem::create_directory(mnt_);
    const std::string mk = "truncate -s 512M " + img_ + " && mkfs.xfs -q -f -m reflink=" +
                           (reflink ? "1 " : "0 ") + img_;
    ASSERT_EQ(std::system(mk.c_str()), 0) << mk;
    const std::string mount = "mount -o loop " + img_ + " " + mnt_.string() + " 2>/dev/null";
    if (std::system(mount.c_str()) != 0) GTEST_SKIP() << "cannot mount a loop device here";
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) {
      EXPECT_EQ(std::system(("umount " + mnt_.string()).c_str()), 0);
    }
  }

  test::TempDir dir_;
  std::string img_;
  std::filesystem::path mnt_;
  bool mounted_ = false;
};

TEST_F(XfsTest, OffloadedCopySharesExtentsAndEmulatedDoesNot) {
  {
    auto loop = test::make_loop();
    test::TempDir on_xfs(mnt_);
    const std::string a = on_xfs.file("a", 64 * M, 17);
    const std::string b = on_xfs.file("b", 64 * M);
    auto da = test::open_dev(*loop, a);
    auto db = test::open_dev(*loop, b);
    EXPECT_EQ(static_cast<FileDevice&>(*da).copy_method(), FileCopyMethod::reflink);
    EXPECT_NE(da->describe().copy_method.find("reflink on xfs"), std::string::npos);
    const test::Bytes original = test::pattern(0, 16 * M, 17);

    CopyResult r = copy(*da, 0, *db, 8 * M, 16 * M);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    EXPECT_EQ(r.offloaded_bytes, 16 * M);
    EXPECT_EQ(r.host_read_bytes + r.host_written_bytes, 0u);
    EXPECT_EQ(shared_bytes(b, 8 * M, 16 * M), 16 * M) << "offloaded range not reflinked";
    EXPECT_EQ(test::read_bytes(*db, 8 * M, 16 * M), original);

    CopyOptions emulate;
    emulate.emulation = Emulation::force;
    r = copy(*da, 0, *db, 32 * M, 16 * M, emulate);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    EXPECT_EQ(r.emulated_bytes, 16 * M);
    EXPECT_EQ(shared_bytes(b, 32 * M, 16 * M), 0u) << "emulated range should own its blocks";
    EXPECT_EQ(test::read_bytes(*db, 32 * M, 16 * M), original);
    EXPECT_EQ(test::read_bytes(*da, 0, 16 * M), original) << "source changed";
  }
}

// A file's block on XFS is the file system's from the start. XFS asks direct I/O on a file with
// shared extents to be aligned to its block, so a 512-byte block would turn into 4096 the first
// time the file shares one, refusing copies that worked before. Copies at sector offsets are
// refused with the reason (buffered too: XFS shares whole blocks only, and would copy through
// the page cache); at block offsets they share extents, and the CLI says who copied.
TEST_F(XfsTest, AFilesBlockIsTheFileSystemsFromTheStart) {
  auto loop = test::make_loop();
  test::TempDir on_xfs(mnt_);
  const std::string a = on_xfs.file("a", 64 * M, 29);
  const std::string b = on_xfs.file("b", 64 * M, 30);
  const test::Bytes original_a = test::pattern(0, 64 * M, 29), original_b = test::pattern(0, 64 * M, 30);
  auto blocks = [&](const std::string& spec) {
    auto d = test::open_dev(*loop, spec);
    return d->limits().logical_block_size;
  };
  for (const std::string& spec : {a, "file:" + a + ",nocopy", "file:" + a + ",buffered"}) {
    EXPECT_EQ(blocks(spec), 4096u) << spec << ", before it shares an extent";
  }
  {
    auto da = test::open_dev(*loop, a);
    auto db = test::open_dev(*loop, b);
    CopyResult r = copy(*da, 0, *db, 8 * M, 4 * M);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    ASSERT_EQ(shared_bytes(a, 0, 4 * M), 4 * M);
  }
  for (const std::string& spec : {a, b, "file:" + a + ",nocopy", "file:" + a + ",buffered"}) {
    EXPECT_EQ(blocks(spec), 4096u) << spec << ", sharing extents";
  }

  for (const std::string& src : {a, "file:" + a + ",buffered", "file:" + a + ",nocopy"}) {
    auto r = test::run_cli({"copy", src + "@512", b + "@40M", "--length", "1M"});
    EXPECT_EQ(r.exit_code, 2) << src << ": " << r.out;
    EXPECT_NE(r.err.find("4096"), std::string::npos) << r.err;
  }
  test::Bytes expect_b = original_b;
  std::copy(original_a.begin(), original_a.begin() + 4 * M, expect_b.begin() + 8 * M);
  EXPECT_EQ(test::read_file(b, 0, 64 * M), expect_b) << "a refused copy wrote";

  auto r = test::run_cli({"copy", "file:" + a + ",buffered@16M", b + "@32M", "--length", "8M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(R"x("offloaded_by": "xfs, sharing the extents (no data moved)")x"), std::string::npos) << r.out;
  EXPECT_EQ(shared_bytes(b, 32 * M, 8 * M), 8 * M) << "said offloaded, but not shared";
  std::copy(original_a.begin() + 16 * M, original_a.begin() + 24 * M, expect_b.begin() + 32 * M);
  EXPECT_EQ(test::read_file(b, 0, 64 * M), expect_b);
  EXPECT_EQ(test::read_file(a, 0, 64 * M), original_a) << "source changed";
}

// XFS made without reflink cannot share extents; there copy_file_range would copy through the
// page cache, so the driver says so and the copy is emulated (and still right).
class XfsNoReflinkTest : public XfsTest {
 protected:
  void SetUp() override { make_and_mount(false); }
};

TEST_F(XfsNoReflinkTest, CopiesAreEmulatedWithTheReason) {
  auto loop = test::make_loop();
  test::TempDir on_xfs(mnt_);
  const std::string a = on_xfs.file("a", 16 * M, 23);
  const std::string b = on_xfs.file("b", 16 * M);
  auto da = test::open_dev(*loop, a);
  auto db = test::open_dev(*loop, b);
  EXPECT_EQ(static_cast<FileDevice&>(*db).copy_method(), FileCopyMethod::none);
  EXPECT_NE(db->describe().copy_method.find("cannot share extents (made without reflink)"),
            std::string::npos)
      << db->describe().copy_method;
  EXPECT_FALSE(db->limits().can_offload());
  CopyResult r = copy(*da, 0, *db, 4 * M, 8 * M);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.emulated_bytes, 8 * M);
  EXPECT_EQ(r.offloaded_bytes, 0u);
  EXPECT_EQ(test::read_bytes(*db, 4 * M, 8 * M), test::pattern(0, 8 * M, 23));
  EXPECT_EQ(test::read_bytes(*db, 0, 4 * M), test::Bytes(4 * M, std::byte{0})) << "outside the range";
}

}  // namespace
}  // namespace blkcopy
