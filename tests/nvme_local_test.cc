// The parts of the local NVMe driver that need no drive (the drive itself is tested in the QEMU
// guest: tests/interop/local_nvme.sh): device-string parsing, Identify checks and the limits
// they give, and the engine's use of a failed Copy's progress (DW0).
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <gtest/gtest.h>

#include <cstring>

#include "drivers/nvme/nvme_device.h"
#include "nvme/namespace.h"
#include "nvme/spec.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

TEST(NvmeLocal, NamespacePathsAreRecognisedAndOthersAreNot) {
  auto n = nvme_nodes("/dev/nvme12n3");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->block, "/dev/nvme12n3");
  EXPECT_EQ(n->generic, "/dev/ng12n3");
  EXPECT_EQ(n->controller, "/dev/nvme12");
  EXPECT_EQ(nvme_nodes("/dev/ng0n1")->block, "/dev/nvme0n1");
  for (const char* other : {"/dev/nvme0", "/dev/nvme0n1p1", "/dev/nvme0n", "/dev/sda",
                            "/dev/ngXn1", "/tmp/nvme0n1", "/dev/nvme0n1 "}) {
    EXPECT_FALSE(nvme_nodes(other)) << other;
  }
}

TEST(NvmeLocal, OptionsAreCheckedWithClearErrors) {
  auto c = parse_nvme_local_config("/dev/ng0n1,ro,timeout=500");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->read_only);
  EXPECT_EQ(c->timeout_ms, 500u);
  struct Bad {
    const char* spec;
    const char* says;
  } bad[] = {{"", "missing path"},
             {"/dev/ng0n1,timeout=0", "timeout must be 1 to 3600000 ms"},
             {"/dev/ng0n1,timeout=5x", "timeout must be"},
             {"/dev/ng0n1,fast", "unknown option 'fast'"}};
  for (const Bad& b : bad) {
    auto r = parse_nvme_local_config(b.spec);
    ASSERT_FALSE(r) << b.spec;
    EXPECT_NE(r.error().message().find(b.says), std::string::npos) << r.error().message();
  }
}

TEST(NvmeLocal, OpeningWhatIsNotANamespaceSaysWhy) {
  auto loop = test::make_loop();
  auto r = open_device(*loop, "nvme:/tmp/not-nvme");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("not an NVMe namespace"), std::string::npos);
  // A namespace path with no such device here: the generic device is named.
  auto missing = open_device(*loop, "/dev/nvme999n1");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("/dev/ng999n1"), std::string::npos)
      << missing.error().message();
}

// An Identify Namespace page: nsze blocks of 2^lbads bytes, metadata ms, PI type dps.
std::vector<uint8_t> identify_ns(uint64_t nsze, uint8_t lbads, uint16_t ms = 0, uint8_t dps = 0) {
  std::vector<uint8_t> id(4096, 0);
  std::memcpy(id.data() + nvme::idns::kNsze, &nsze, 8);
  std::memcpy(id.data() + nvme::idns::kLbaf0, &ms, 2);
  id[nvme::idns::kLbaf0 + 2] = lbads;
  id[nvme::idns::kDps] = dps;
  const uint16_t mssrl = 32;
  const uint32_t mcl = 64;
  std::memcpy(id.data() + nvme::idns::kMssrl, &mssrl, 2);
  std::memcpy(id.data() + nvme::idns::kMcl, &mcl, 4);
  id[nvme::idns::kMsrc] = 3;
  return id;
}

TEST(NvmeLocal, IdentifyGivesTheLimitsAndBadValuesAreRefused) {
  auto g = nvme::parse_identify_namespace(identify_ns(262144, 9), "ns");
  ASSERT_TRUE(g) << g.error().message();
  nvme::ControllerCaps caps;
  caps.oncs = nvme::idctrl::kOncsCopy;
  caps.mdts = 5;  // 128 KiB
  QueueLimits l;
  nvme::fill_limits(l, *g, caps, caps.max_transfer(1u << 20));
  EXPECT_EQ(l.capacity, 262144u * 512);
  EXPECT_EQ(l.max_io_bytes, 128u * 1024);
  EXPECT_EQ(l.copy_max_hw_bytes, 64u * 512);
  EXPECT_EQ(l.copy_segment_max_bytes, 32u * 512);
  EXPECT_EQ(l.copy_max_src_segments, 4u);
  caps.oncs = 0;  // no Copy: nothing offloaded
  nvme::fill_limits(l, *g, caps, caps.max_transfer(1u << 20));
  EXPECT_FALSE(l.can_offload());
  EXPECT_EQ(l.copy_max_hw_bytes, 0u);

  auto tiny = nvme::parse_identify_namespace(identify_ns(8, 8), "ns");
  ASSERT_FALSE(tiny);
  EXPECT_NE(tiny.error().message().find("block size of 2^8"), std::string::npos);
  auto huge = nvme::parse_identify_namespace(identify_ns(~0ull, 12), "ns");
  ASSERT_FALSE(huge);
  auto none = nvme::parse_identify_namespace(identify_ns(0, 9), "ns");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ENODEV);
  auto pi = nvme::parse_identify_namespace(identify_ns(64, 9, 8, 1), "ns");
  ASSERT_TRUE(pi);  // the driver refuses it; the parse reports what it is
  EXPECT_EQ(pi->metadata_size, 8u);
  EXPECT_EQ(pi->dps & 7, 1);
}

// A device that behaves like a controller whose Copy fails after its first range: that range
// is copied (on the mem device below), the completion fails and says so, as NVMe's DW0 does.
class FirstRangeOnly final : public Device {
 public:
  explicit FirstRangeOnly(std::unique_ptr<Device> inner)
      : Device(inner->loop(), "first-range-only"), inner_(std::move(inner)) {
    limits_ = inner_->limits();
  }
  void submit(const Request& req, Completion done) override {
    if (req.op != Op::copy) return inner_->submit(req, std::move(done));
    auto one = std::make_shared<CopyDesc>();
    const CopySegment& first = req.copy->sources.front();
    one->sources.push_back({inner_.get(), first.offset, first.length});
    one->dst = {inner_.get(), req.copy->dst.offset, first.length};
    CopyReport* report = req.report;
    auto inner_report = std::make_shared<CopyReport>();
    Request r{Op::copy, 0, 0, nullptr, one.get(), inner_report.get()};
    inner_->submit(r, [one, inner_report, report, done](Status s) {
      if (!s.ok()) return done(s);
      report->done_before_error = one->dst.length;
      done(Status::error(EIO, "test: Copy failed at range 1"));
    });
  }
  DeviceInfo describe() const override { return {"test", name(), "", {}, {}}; }

 private:
  std::unique_ptr<Device> inner_;
};

TEST(NvmeLocal, AFailedCopyReportsTheRangesItCopiedExactly) {
  auto loop = test::make_loop();
  FirstRangeOnly d(test::open_dev(*loop, "mem:1M,seed=7,copy_max=64k,segment_max=16k,max_segments=4"));
  const test::Bytes before = test::read_bytes(d, 0, 1 << 20);
  CopyOptions o;
  o.max_copies_in_flight = 1;
  CopyResult r = copy(d, 0, d, 512 * 1024, 64 * 1024, o);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), EIO);
  EXPECT_EQ(r.bytes, 16u * 1024) << "the first range is on the destination";
  EXPECT_EQ(r.offloaded_bytes, 16u * 1024);
  EXPECT_EQ(r.emulated_bytes, 0u);
  const test::Bytes after = test::read_bytes(d, 0, 1 << 20);
  test::Bytes want = before;
  std::memcpy(want.data() + 512 * 1024, before.data(), 16 * 1024);
  EXPECT_TRUE(after == want) << "exactly the first 16 KiB copied, nothing else changed";
}

}  // namespace
}  // namespace blkcopy
