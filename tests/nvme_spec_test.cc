// The NVMe/TCP protocol's structures and codes on their own: PDUs against fixed bytes, CRC32C,
// nvmetcli JSON, and the status codes the target answers for a device's errno.
#include <gtest/gtest.h>

#include <cstring>

#include "nvme/codec.h"
#include "nvme/copy_report.h"
#include "nvme/status.h"
#include <blkcopy/target.h>

namespace blkcopy {
namespace {

using namespace nvme;

TEST(NvmeSpec, PdusMatchFixedBytes) {
  ICReq req{};
  req.hdr = {pdu::kICReq, 0, 128, 0, 128};
  req.dgst = 3;
  req.maxr2t = 0;
  const uint8_t* b = reinterpret_cast<const uint8_t*>(&req);
  const uint8_t want[] = {0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03};
  EXPECT_EQ(std::memcmp(b, want, sizeof want), 0);

  // An R2T for CID 0x1234, TTAG 7, 64 KiB at offset 4096, as the wire carries it.
  const uint8_t r2t_bytes[24] = {0x09, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00,
                                 0x34, 0x12, 0x07, 0x00, 0x00, 0x10, 0x00, 0x00,
                                 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00};
  R2T r;
  std::memcpy(&r, r2t_bytes, sizeof r);
  EXPECT_EQ(r.hdr.type, pdu::kR2T);
  EXPECT_EQ(r.cccid, 0x1234);
  EXPECT_EQ(r.ttag, 7);
  EXPECT_EQ(r.r2to, 4096u);
  EXPECT_EQ(r.r2tl, 65536u);

  // A format-0 copy range: SLBA 0x0102030405060708, NLB 0x00ff.
  CopyRange0 c{};
  c.slba = 0x0102030405060708ull;
  c.nlb = 0xff;
  const uint8_t* cb = reinterpret_cast<const uint8_t*>(&c);
  EXPECT_EQ(cb[8], 0x08);
  EXPECT_EQ(cb[15], 0x01);
  EXPECT_EQ(cb[16], 0xff);
  EXPECT_EQ(cb[17], 0x00);
}

TEST(NvmeSpec, Crc32cIsTheCastagnoliCrc) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c_extend(crc32c("1234", 4), "56789", 5), 0xE3069283u);
}

TEST(NvmeSpec, NvmetcliJsonIsParsed) {
  auto cfg = parse_nvmetcli_json(R"({
    "hosts": [{"nqn": "nqn.2024-01.io.example:h1"}],
    "ports": [{"portid": 3, "addr": {"trtype": "tcp", "adrfam": "ipv4",
               "traddr": "127.0.0.1", "trsvcid": "4455"}, "subsystems": ["nqn.2024-01.io.example:s1"]}],
    "subsystems": [{"nqn": "nqn.2024-01.io.example:s1", "allowed_hosts": ["nqn.2024-01.io.example:h1"],
                    "attr": {"allow_any_host": "0"},
                    "namespaces": [{"nsid": 7, "enable": 1,
                                    "device": {"path": "mem:1M", "nguid": "00112233-4455-6677-8899-aabbccddeeff",
                                               "uuid": "12345678-1234-1234-1234-123456789abc"}}]}]
  })");
  ASSERT_TRUE(cfg) << cfg.error().message();
  ASSERT_EQ(cfg->ports.size(), 1u);
  EXPECT_EQ(cfg->ports[0].port, 4455);
  EXPECT_EQ(cfg->ports[0].id, 3);
  ASSERT_EQ(cfg->subsystems.size(), 1u);
  EXPECT_FALSE(cfg->subsystems[0].allow_any_host);
  EXPECT_EQ(cfg->subsystems[0].allowed_hosts[0], "nqn.2024-01.io.example:h1");
  EXPECT_EQ(cfg->subsystems[0].namespaces[0].nsid, 7u);
  EXPECT_EQ(cfg->subsystems[0].namespaces[0].uuid, "12345678-1234-1234-1234-123456789abc");
  auto loop = EventLoop::create().value();
  auto bad = *cfg;
  bad.subsystems[0].namespaces[0].nguid = "xyz";
  auto t = Target::create(*loop, bad);
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message().find("nguid: 'xyz' is not 32 hex digits"), std::string::npos);
  ASSERT_TRUE(Target::create(*loop, *cfg));
  EXPECT_FALSE(parse_nvmetcli_json("{ not json"));
  auto rdma = parse_nvmetcli_json(R"({"ports": [{"addr": {"trtype": "rdma"}}]})");
  ASSERT_FALSE(rdma);
  EXPECT_NE(rdma.error().message().find("ports[0].addr.trtype: 'rdma': only tcp is served"),
            std::string::npos)
      << rdma.error().message();
}

// One map both ways: what the target answers for a device's errno, the host reads back as the
// same errno (where the status has one).
// blkcopy's log page C0h: what the target encodes the host reads back; a page that is short or
// not blkcopy's (another vendor's C0h) is not taken for a report, and the text in it is shown
// only as printable characters, at most its field.
TEST(NvmeSpec, CopyReportPageRoundTripsAndForeignPagesAreRefused) {
  nvme::TargetCopyReport r{3, 5u << 20, 7u << 20, "the RAM device, by memmove"};
  const std::vector<uint8_t> page = nvme::encode_copy_report(r);
  ASSERT_EQ(page.size(), nvme::kCopyReportSize);
  auto back = nvme::decode_copy_report(page);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->commands, 3u);
  EXPECT_EQ(back->device_bytes, 5u << 20);
  EXPECT_EQ(back->emulated_bytes, 7u << 20);
  EXPECT_EQ(back->device_copies_by, r.device_copies_by);

  EXPECT_FALSE(nvme::decode_copy_report(std::span(page).first(511))) << "short";
  std::vector<uint8_t> foreign = page;
  foreign[0] = 'X';
  EXPECT_FALSE(nvme::decode_copy_report(foreign)) << "another vendor's C0h";

  std::vector<uint8_t> lying = page;
  for (size_t i = 64; i < 512; ++i) lying[i] = (i % 3) ? 'a' : (i % 2) ? '\x1b' : '\xff';  // no NUL
  lying[100] = '\xc2', lying[101] = '\x9b';  // CSI as UTF-8: a C1 control
  back = nvme::decode_copy_report(lying);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->device_copies_by.size(), 256u) << "not beyond its field";
  for (char c : back->device_copies_by) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7F) << "shown as is: " << int(static_cast<unsigned char>(c));
  }

  r.device_copies_by = std::string(1000, 'x');
  back = nvme::decode_copy_report(nvme::encode_copy_report(r));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->device_copies_by, std::string(255, 'x')) << "cut to the field, NUL-ended";
}

TEST(NvmeStatus, ErrnoAndStatusMapBothWays) {
  using namespace nvme;
  auto code = [](uint16_t field) { return static_cast<uint16_t>((field >> 1) & 0x7FF); };
  auto dnr = [](uint16_t field) { return (field & status::kDnr) != 0; };
  const uint16_t rofs = status_for_io_error(Status::error(EROFS, "ro"), false);
  EXPECT_EQ(code(rofs), status::kReadOnlyRange);
  EXPECT_TRUE(dnr(rofs));
  EXPECT_EQ(errno_for_status(code(rofs)), EROFS);
  const uint16_t range = status_for_io_error(Status::error(ERANGE, "r"), true);
  EXPECT_EQ(errno_for_status(code(range)), ERANGE);
  const uint16_t media = status_for_io_error(Status::error(EIO, "media"), true);
  EXPECT_EQ(code(media), status::kUnrecoveredRead);
  EXPECT_FALSE(dnr(media)) << "a media error may be retried";
  EXPECT_EQ(code(status_for_io_error(Status::error(EIO, "w"), false)), status::kWriteFault);
  EXPECT_EQ(status_for_io_error(Status(), true), 0);
  EXPECT_EQ(code(status_for_invalid_copy(Status::error(EINVAL, "overlap"))), status::kOverlappingRange);
  EXPECT_EQ(code(status_for_invalid_copy(Status::error(ERANGE, "end"))), status::kLbaOutOfRange);
  // A command the controller does not do, and one it calls malformed: both without a retry.
  const uint16_t unsupported = status_for_io_error(Status::error(EOPNOTSUPP, "no"), false);
  EXPECT_EQ(code(unsupported), status::kInvalidOpcode);
  EXPECT_TRUE(dnr(unsupported));
  EXPECT_EQ(errno_for_status(code(unsupported)), EOPNOTSUPP);
  const uint16_t malformed = status_for_io_error(Status::error(EINVAL, "bad"), false);
  EXPECT_EQ(code(malformed), status::kInvalidField);
  EXPECT_TRUE(dnr(malformed));
  EXPECT_EQ(errno_for_status(code(malformed)), EINVAL);
  EXPECT_EQ(errno_for_status(status::kAuthRequired), EACCES);
  // A Copy the controller cannot take is emulated by the host; a malformed one fails.
  EXPECT_TRUE(copy_not_supported(status::kInvalidOpcode));
  EXPECT_TRUE(copy_not_supported(status::kIncompatibleNamespace));
  EXPECT_FALSE(copy_not_supported(status::kInvalidField));
  EXPECT_EQ(status_text(status::kCommandSizeLimit), "Command Size Limit Exceeded");
}

}  // namespace
}  // namespace blkcopy
