// The scsi driver without a LUN: CDBs and the EXTENDED COPY list against the bytes SPC-4
// defines, parsers against answers shaped like LIO's and against truncated or lying ones, sense
// decoding and its errno, device strings. The LUN itself is tested in the guest
// (tests/interop/scsi.sh, LIO through tcm_loop).
#include <blkcopy/open.h>
#include <gtest/gtest.h>

#include <vector>

#include "drivers/scsi/scsi_device.h"
#include "drivers/scsi/scsi_proto.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using Bytes = std::vector<uint8_t>;

// A VPD page: code, 16-bit length, body.
Bytes vpd_page(uint8_t code, const Bytes& body) {
  Bytes b{0, code, static_cast<uint8_t>(body.size() >> 8), static_cast<uint8_t>(body.size())};
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

// LIO's VPD 0x83 as SCSI.md shows it: the NAA 6 designator first, then T10 vendor ID and the
// relative port; here the ASCII one comes first to show it is skipped.
Bytes lio_vpd83() {
  Bytes body{0x02, 0x01, 0x00, 0x08, 'L', 'I', 'O', '-', 'O', 'R', 'G', ' '};  // T10, ASCII
  const Bytes naa{0x61, 0x03, 0x00, 0x10, 0x60, 0x01, 0x40, 0x50, 0xa0, 0xa0, 0xa0, 0xa0,
                  0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0};  // protocol 6, PIV clear
  body.insert(body.end(), naa.begin(), naa.end());
  const Bytes port{0x61, 0x94, 0x00, 0x04, 0, 0, 0, 1};
  body.insert(body.end(), port.begin(), port.end());
  return vpd_page(0x83, body);
}

// LIO's OPERATING PARAMETERS (46 bytes).
Bytes lio_operating_parameters() {
  Bytes b(46, 0);
  b[3] = 42;
  b[4] = 1;
  b[9] = 2;                      // max CSCD descriptors
  b[11] = 1;                     // max segment descriptors
  b[14] = 0x04;                  // max descriptor list length 1024
  b[16] = 0x10;                  // max segment length 268435456
  b[37] = b[38] = b[39] = 9;
  b[43] = 2;
  b[44] = 0x02;
  b[45] = 0xE4;
  return b;
}

TEST(ScsiProto, CdbsCarryTheirFields) {
  const auto xcopy = scsi::cdb_extended_copy(108);
  EXPECT_EQ(Bytes(xcopy.begin(), xcopy.end()),
            (Bytes{0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 108, 0, 0}));
  const auto rcr = scsi::cdb_operating_parameters(0x1234);
  EXPECT_EQ(Bytes(rcr.begin(), rcr.end()),
            (Bytes{0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0}));
  const auto inq = scsi::cdb_inquiry(true, 0x83, 1024);
  EXPECT_EQ(Bytes(inq.begin(), inq.end()), (Bytes{0x12, 1, 0x83, 0x04, 0x00, 0}));
  const auto rc = scsi::cdb_read_capacity16(32);
  EXPECT_EQ(rc[0], 0x9E);
  EXPECT_EQ(rc[1], 0x10);
  EXPECT_EQ(rc[13], 32);
}

TEST(ScsiProto, ExtendedCopyListMatchesSpc) {
  Bytes other = lio_vpd83();
  other[4 + 12 + 19] = 0xbb;  // the last byte of the second LUN's designator
  auto a = scsi::parse_naa_designator(lio_vpd83());
  auto b = scsi::parse_naa_designator(other);
  ASSERT_TRUE(a && b);
  const std::vector<scsi::Designator> luns{*a, *b};
  const std::vector<scsi::XcopySegment> segs{{1, 0, 0xFFFF, 0x0102030405060708, 0x1122}};
  const Bytes l = scsi::encode_extended_copy(7, luns, 4096, segs);
  ASSERT_EQ(l.size(), 16u + 2 * 32 + 28);
  // Header: list id, LIST ID USAGE 10b + priority 1, CSCD list 64 bytes, segment list 28.
  EXPECT_EQ(l[0], 7);
  EXPECT_EQ(l[1], 0x11);
  EXPECT_EQ(l[2], 0);
  EXPECT_EQ(l[3], 64);
  EXPECT_EQ(l[11], 28);
  EXPECT_EQ(l[15], 0);  // no inline data
  // CSCD 0: E4h, binary code set, LU association, NAA type, 16 bytes, the designator, 4096.
  const uint8_t* c = &l[16];
  EXPECT_EQ(c[0], 0xE4);
  EXPECT_EQ(c[1], 0x00);
  EXPECT_EQ(c[4], 0x01);  // protocol identifier dropped
  EXPECT_EQ(c[5], 0x03);  // PIV dropped
  EXPECT_EQ(c[7], 16);
  EXPECT_EQ(c[8], 0x60);
  EXPECT_EQ(c[23], 0xa0);
  EXPECT_EQ(c[28], 0);
  EXPECT_EQ((c[29] << 16) | (c[30] << 8) | c[31], 4096);
  EXPECT_EQ(l[16 + 32 + 23], 0xbb);
  // Segment: 02h, length 0x18, source CSCD 1, destination 0, blocks, LBAs big-endian.
  const uint8_t* s = &l[16 + 64];
  EXPECT_EQ(s[0], 0x02);
  EXPECT_EQ((s[2] << 8) | s[3], 0x18);
  EXPECT_EQ((s[4] << 8) | s[5], 1);
  EXPECT_EQ((s[6] << 8) | s[7], 0);
  EXPECT_EQ((s[10] << 8) | s[11], 0xFFFF);
  EXPECT_EQ(Bytes(s + 12, s + 20), (Bytes{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(Bytes(s + 20, s + 28), (Bytes{0, 0, 0, 0, 0, 0, 0x11, 0x22}));
}

TEST(ScsiProto, NaaDesignatorIsTheLogicalUnitsBinaryOne) {
  auto d = scsi::parse_naa_designator(lio_vpd83());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->hex(), "60014050a0a0a0a0a0a0a0a0a0a0a0a0");
  // Only ASCII and port designators: none.
  const Bytes ascii_only = vpd_page(0x83, {0x02, 0x01, 0x00, 0x04, 'L', 'I', 'O', ' ', 0x61,
                                           0x93, 0x00, 0x08, 0x60, 1, 2, 3, 4, 5, 6, 7});
  EXPECT_FALSE(scsi::parse_naa_designator(ascii_only));  // the NAA one is the port's (0x93)
  // A page whose length says more than was answered, or a descriptor running past the end.
  Bytes cut = lio_vpd83();
  cut.resize(20);
  EXPECT_FALSE(scsi::parse_naa_designator(cut));
  Bytes lying = vpd_page(0x83, {0x01, 0x03, 0x00, 0xFF, 0x60});
  EXPECT_FALSE(scsi::parse_naa_designator(lying));
  EXPECT_FALSE(scsi::parse_naa_designator(vpd_page(0x80, {})));  // another page
}

TEST(ScsiProto, OperatingParametersAsLioAnswers) {
  auto p = scsi::parse_operating_parameters(lio_operating_parameters());
  ASSERT_TRUE(p);
  EXPECT_EQ(p->max_cscd, 2);
  EXPECT_EQ(p->max_segments, 1);
  EXPECT_EQ(p->max_list_bytes, 1024u);
  EXPECT_EQ(p->max_segment_bytes, 268435456u);
  EXPECT_EQ(p->segment_granularity_log2, 9);
  EXPECT_TRUE(p->implements(0x02));
  EXPECT_TRUE(p->implements(0xE4));
  EXPECT_FALSE(p->implements(0x0A));
  Bytes b = lio_operating_parameters();
  b[43] = 200;  // more type codes than were sent: only those present
  p = scsi::parse_operating_parameters(b);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->descriptor_types.size(), 2u);
  b.resize(40);
  EXPECT_FALSE(scsi::parse_operating_parameters(b));
}

TEST(ScsiProto, InquiryCapacityAndBlockLimits) {
  Bytes inq(36, 0);
  inq[5] = 0x08;
  for (int i = 0; i < 8; ++i) inq[8 + i] = "LIO-ORG "[i];
  auto q = scsi::parse_inquiry(inq);
  ASSERT_TRUE(q);
  EXPECT_TRUE(q->tpc);
  EXPECT_EQ(q->device_type, 0);
  EXPECT_EQ(q->vendor, "LIO-ORG");
  EXPECT_FALSE(scsi::parse_inquiry(Bytes(7, 0)));
  Bytes cap(32, 0);
  cap[6] = 0x3F;
  cap[7] = 0xFF;  // last LBA 16383
  cap[10] = 0x02;  // 512
  auto c = scsi::parse_read_capacity16(cap);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->blocks, 16384u);
  EXPECT_EQ(c->block_size, 512u);
  EXPECT_FALSE(scsi::parse_read_capacity16(Bytes(12, 0xFF)));  // last LBA 2^64 - 1
  Bytes b0(60, 0);
  b0[6] = 0x40;  // MAXIMUM TRANSFER LENGTH 16384 (bytes 8-11 of the page, 4-7 after its header)
  auto bl = scsi::parse_block_limits(vpd_page(0xB0, b0));
  ASSERT_TRUE(bl);
  EXPECT_EQ(bl->max_transfer_blocks, 16384u);
  EXPECT_FALSE(scsi::parse_block_limits(vpd_page(0xB0, Bytes(4, 0))));
  EXPECT_TRUE(scsi::vpd_lists(vpd_page(0x00, {0x00, 0x83, 0x8F}), 0x8F));
  EXPECT_FALSE(scsi::vpd_lists(vpd_page(0x00, {0x00, 0x83, 0xB0}), 0x8F));
}

TEST(ScsiProto, SenseInBothFormatsNamesTheConditionAndMapsToErrno) {
  Bytes fixed(18, 0);
  fixed[0] = 0x70;
  fixed[2] = 0x0A;  // COPY ABORTED
  fixed[7] = 10;
  fixed[11] = 3;    // COMMAND-SPECIFIC INFORMATION: segment 3
  fixed[12] = 0x0D;
  fixed[13] = 0x02;
  scsi::Sense s = scsi::parse_sense(fixed);
  ASSERT_TRUE(s.valid);
  EXPECT_EQ(s.key, 0x0A);
  EXPECT_EQ(s.command_specific, 3u);
  EXPECT_EQ(scsi::sense_text(s),
            "COPY ABORTED, copy target device not reachable (ASC/ASCQ 0x0d/0x02)");
  EXPECT_EQ(scsi::errno_for_sense(s), EOPNOTSUPP);

  // Descriptor format with an INFORMATION descriptor.
  Bytes desc{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 12, 0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 42};
  s = scsi::parse_sense(desc);
  ASSERT_TRUE(s.valid);
  EXPECT_EQ(s.key, 0x05);
  EXPECT_EQ(s.information, 42u);
  EXPECT_EQ(scsi::sense_text(s), "ILLEGAL REQUEST, invalid field in CDB (ASC/ASCQ 0x24/0x00)");
  EXPECT_EQ(scsi::errno_for_sense(s), EINVAL);
  desc[7] = 200;  // a descriptor list longer than the sense: read only what is there
  EXPECT_TRUE(scsi::parse_sense(desc).valid);

  struct Case {
    uint8_t key, asc, ascq;
    int err;
  } cases[] = {{0x05, 0x20, 0x00, EOPNOTSUPP}, {0x05, 0x26, 0x08, EOPNOTSUPP},
               {0x05, 0x26, 0x00, EINVAL},     {0x05, 0x21, 0x00, ERANGE},
               {0x07, 0x27, 0x00, EROFS},      {0x03, 0x11, 0x00, EIO},
               {0x0A, 0x0D, 0x01, EOPNOTSUPP}, {0x0A, 0x08, 0x00, EIO},
               {0x06, 0x29, 0x00, EAGAIN}};
  for (const Case& c : cases) {
    Bytes f(18, 0);
    f[0] = 0x70;
    f[2] = c.key;
    f[7] = 10;
    f[12] = c.asc;
    f[13] = c.ascq;
    EXPECT_EQ(scsi::errno_for_sense(scsi::parse_sense(f)), c.err) << scsi::sense_text(scsi::parse_sense(f));
  }
  EXPECT_TRUE(scsi::retry_once(scsi::parse_sense(Bytes{0x70, 0, 0x06})));
  EXPECT_FALSE(scsi::parse_sense(Bytes{0x70, 0}).valid);  // too short for the key
  EXPECT_FALSE(scsi::parse_sense(Bytes{0x7F, 0, 0, 0}).valid);
  EXPECT_EQ(scsi::sense_text(scsi::Sense{}), "no sense data");
}

TEST(ScsiDevice, DeviceStringsAndOptions) {
  for (const char* other : {"/dev/nvme0n1", "/tmp/sda", "/dev/sda1", "/dev/vda", "/dev/sg999",
                            "/dev/sdzz", "/dev/"}) {
    EXPECT_FALSE(scsi_nodes(other)) << other;  // not SCSI here (no SCSI disks on this machine)
  }
  auto c = parse_scsi_config("/dev/sg1,ro");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->read_only);
  EXPECT_EQ(c->timeout_ms, 60000u);  // the default for SCSI
  auto bad = parse_scsi_config("/dev/sg1,timeout=0");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("scsi:/dev/sg1,timeout=0: timeout must be"), std::string::npos);
  auto loop = test::make_loop();
  auto r = open_device(*loop, "scsi:/tmp/not-scsi");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("not a SCSI disk"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace blkcopy
