#include <blkcopy/units.h>
#include <gtest/gtest.h>

namespace blkcopy {
namespace {

TEST(ParseSize, AcceptsSuffixes) {
  EXPECT_EQ(parse_size("512").value(), 512u);
  EXPECT_EQ(parse_size("4k").value(), 4096u);
  EXPECT_EQ(parse_size("4K").value(), 4096u);
  EXPECT_EQ(parse_size("4KiB").value(), 4096u);
  EXPECT_EQ(parse_size("1M").value(), 1u << 20);
  EXPECT_EQ(parse_size("2G").value(), 2ull << 30);
  EXPECT_EQ(parse_size("3T").value(), 3ull << 40);
  EXPECT_EQ(parse_size("0").value(), 0u);
}

// As dd: kB, MB, GB and TB are powers of 1000; M and MiB powers of 1024.
TEST(ParseSize, DecimalUnitsAreDds) {
  EXPECT_EQ(parse_size("1kB").value(), 1000u);
  EXPECT_EQ(parse_size("64MB").value(), 64'000'000u);
  EXPECT_EQ(parse_size("2GB").value(), 2'000'000'000u);
  EXPECT_EQ(parse_size("1TB").value(), 1'000'000'000'000u);
  EXPECT_EQ(parse_size("64MiB").value(), 64u << 20);
  EXPECT_EQ(parse_size("64M").value(), 64u << 20);
  EXPECT_FALSE(parse_size("1XB"));
  EXPECT_EQ(parse_size("20000000TB").error().code(), ERANGE);
}

TEST(ParseSize, RejectsJunkWithAMessage) {
  for (const char* bad : {"", "k", "-1", "1X", "1MM", "12 M", "0x10"}) {
    auto r = parse_size(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), EINVAL) << bad;
    EXPECT_NE(r.error().message().find("invalid size"), std::string::npos) << bad;
  }
  auto big = parse_size("20000000T");
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ERANGE);
}

TEST(FormatBytes, PicksAUnit) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(double(1ull << 30)), "1.00 GiB");
  EXPECT_EQ(format_bytes(100.0 * (1 << 20)), "100.0 MiB");
}

}  // namespace
}  // namespace blkcopy
