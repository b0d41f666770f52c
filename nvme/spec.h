// NVMe and NVMe/TCP wire formats: commands, completions, Identify fields, status codes, Copy
// source ranges, PDUs. Every offset from the reference (shared/reference/NVME.md, checked
// against the NVMe Base and TCP specifications) is a named constant or a struct field, and
// checked below with static_assert. Little-endian, as on the wire (x86 and arm64 hosts).
#pragma once

#include <cstddef>
#include <cstdint>

namespace blkcopy::nvme {

// ---- Submission and completion queue entries ----

struct SglDesc {  // 16 bytes
  uint64_t addr;
  uint32_t length;
  uint8_t rsvd[3];
  uint8_t type;  // (descriptor type << 4) | subtype
};
inline constexpr uint8_t kSglInCapsule = 0x01;  // data block, offset: data follows the SQE
inline constexpr uint8_t kSglTransport = 0x5A;  // transport data block: R2T / C2HData

struct Sqe {  // 64 bytes
  uint8_t opcode;
  uint8_t flags;
  uint16_t cid;
  uint32_t nsid;  // fabrics commands: byte 4 is FCTYPE
  uint32_t cdw2, cdw3;
  uint64_t mptr;
  SglDesc dptr;
  uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};

struct Cqe {  // 16 bytes
  uint32_t dw0;
  uint32_t dw1;
  uint16_t sqhd;
  uint16_t sqid;
  uint16_t cid;
  uint16_t status;  // bit 0 phase, 8:1 SC, 11:9 SCT, 13:12 CRD, 14 M, 15 DNR
};

// ---- Opcodes ----

namespace admin {
inline constexpr uint8_t kGetLogPage = 0x02, kIdentify = 0x06, kAbort = 0x08,
                         kSetFeatures = 0x09, kGetFeatures = 0x0A, kAsyncEvent = 0x0C,
                         kKeepAlive = 0x18, kFabrics = 0x7F;
}  // namespace admin
namespace io {
inline constexpr uint8_t kFlush = 0x00, kWrite = 0x01, kRead = 0x02, kWriteZeroes = 0x08,
                         kDsm = 0x09, kCopy = 0x19;
}  // namespace io
namespace fabrics {
inline constexpr uint8_t kPropertySet = 0x00, kConnect = 0x01, kPropertyGet = 0x04,
                         kAuthSend = 0x05, kAuthReceive = 0x06;
}  // namespace fabrics

// Fabrics command fields (bytes of the SQE).
inline constexpr size_t kFcType = 4;
inline constexpr size_t kConnectRecfmt = 40, kConnectQid = 42, kConnectSqsize = 44,
                        kConnectCattr = 46, kConnectKato = 48;
// CATTR bit 2: the host does not need SQ Head Pointer updates (SQ flow control disabled), which
// lets an NVMe/TCP controller end a read with C2HData's SUCCESS flag instead of a response.
inline constexpr uint8_t kCattrDisableSqFlow = 1u << 2;
inline constexpr size_t kPropAttrib = 40, kPropOffset = 44, kPropValue = 48;

// Connect data (1024 bytes, in-capsule).
inline constexpr size_t kConnectDataSize = 1024;
inline constexpr size_t kCdHostId = 0, kCdCntlid = 16, kCdSubnqn = 256, kCdHostnqn = 512;

// Properties.
inline constexpr uint32_t kPropCap = 0x00, kPropVs = 0x08, kPropCc = 0x14, kPropCsts = 0x1C;

// ---- Status codes: (SCT << 8) | SC ----
namespace status {
inline constexpr uint16_t kSuccess = 0x000, kInvalidOpcode = 0x001, kInvalidField = 0x002,
                          kCidConflict = 0x003, kDataTransferError = 0x004,
                          kInternal = 0x006, kAborted = 0x007, kInvalidNamespace = 0x00B,
                          kSglLengthInvalid = 0x00F, kLbaOutOfRange = 0x080,
                          kNsNotReady = 0x082,
                          // command specific (SCT 1)
                          kConnectInvalidParam = 0x182, kConnectInvalidHost = 0x184,
                          kConnectControllerBusy = 0x181, kAuthRequired = 0x191,
                          kCommandSequenceError = 0x00C,
                          kConflictingAttributes = 0x180, kReadOnlyRange = 0x182,
                          kCommandSizeLimit = 0x183, kIncompatibleNamespace = 0x185,
                          kFastCopyNotPossible = 0x186, kOverlappingRange = 0x187,
                          kFeatureNotSaveable = 0x10D, kInvalidLogPage = 0x109,
                          // media errors (SCT 2)
                          kWriteFault = 0x280, kUnrecoveredRead = 0x281;
inline constexpr uint16_t kDnr = 0x8000;  // in the CQE status field, above (code << 1)
}  // namespace status
inline constexpr uint16_t cqe_status(uint16_t code, bool dnr) {
  return static_cast<uint16_t>((code << 1) | (dnr ? status::kDnr : 0));
}

// ---- Copy (I/O opcode 0x19) ----
// CDW10-11 SDLBA; CDW12: NR 7:0 (0-based), DESFMT 11:8.
struct CopyRange0 {  // format 0: 32 bytes
  uint8_t rsvd0[8];
  uint64_t slba;
  uint16_t nlb;  // 0-based
  uint8_t cetype;
  uint8_t rsvd19;
  uint16_t cev;
  uint8_t rsvd22[2];
  uint32_t eilbrt;
  uint16_t elbat;
  uint16_t elbatm;
};
struct CopyRange2 {  // format 2: 32 bytes, cross-namespace
  uint32_t snsid;
  uint8_t rsvd4[4];
  uint64_t slba;
  uint16_t nlb;  // 0-based
  uint8_t cetype;
  uint8_t rsvd19;
  uint16_t cev;
  uint16_t sopt;
  uint32_t eilbrt;
  uint16_t elbat;
  uint16_t elbatm;
};

// ---- Dataset Management (I/O opcode 0x09) ----
// CDW10: NR 7:0 (0-based); CDW11: AD (deallocate) bit 2.
struct DsmRange {  // 16 bytes
  uint32_t cattr;
  uint32_t nlb;  // 1-based
  uint64_t slba;
};

// ---- Identify ----
inline constexpr uint8_t kCnsNamespace = 0x00, kCnsController = 0x01, kCnsActiveNsList = 0x02,
                         kCnsNsDescriptors = 0x03;
namespace idctrl {  // Identify Controller byte offsets
inline constexpr size_t kVid = 0, kSn = 4, kMn = 24, kFr = 64, kCmic = 76, kMdts = 77, kCntlid = 78,
                        kVer = 80, kOaes = 92, kCtratt = 96, kCntrltype = 111, kAerl = 259,
                        kLpa = 261, kElpe = 262, kKas = 320, kSqes = 512, kCqes = 513,
                        kMaxcmd = 514, kNn = 516, kOncs = 520, kVwc = 525, kOcfs = 534,
                        kSgls = 536, kSubnqn = 768, kIoccsz = 1792, kIorcsz = 1796,
                        kIcdoff = 1800, kMsdbd = 1803;
inline constexpr uint16_t kOncsWriteZeroes = 1u << 3, kOncsDsm = 1u << 2, kOncsCopy = 1u << 8;
}  // namespace idctrl
namespace idns {  // Identify Namespace byte offsets
inline constexpr size_t kNsze = 0, kNcap = 8, kNuse = 16, kNsfeat = 24, kNlbaf = 25,
                        kFlbas = 26, kDps = 29, kNmic = 30, kDlfeat = 33, kMssrl = 74, kMcl = 76, kMsrc = 80,
                        kNguid = 104, kEui64 = 120, kLbaf0 = 128;
}  // namespace idns

// Features.
inline constexpr uint8_t kFeatArbitration = 0x01, kFeatPowerMgmt = 0x02, kFeatTempThreshold = 0x04,
                         kFeatErrorRecovery = 0x05, kFeatNumQueues = 0x07, kFeatAsyncEvent = 0x0B,
                         kFeatKato = 0x0F, kFeatHostBehavior = 0x16;
inline constexpr size_t kHostBehaviorCdfe = 4;  // bytes 5:4 of the 512-byte data; bit 2: fmt 2

// Log pages.
inline constexpr uint8_t kLogError = 0x01, kLogSmart = 0x02, kLogFirmwareSlot = 0x03,
                         kLogChangedNs = 0x04, kLogCmdEffects = 0x05, kLogDiscovery = 0x70;
// Asynchronous events: OAES / Asynchronous Event Configuration bit 8 (Namespace Attribute
// Notices), and the completion DW0 of that event (type 2 notice, information 0, log 04h).
inline constexpr uint32_t kAenNamespaceAttribute = 1u << 8;
inline constexpr uint32_t kAenNamespaceChanged = (uint32_t(kLogChangedNs) << 16) | 0x02;
inline constexpr size_t kDiscHeaderSize = 1024, kDiscEntrySize = 1024;
namespace disc {  // discovery log entry offsets
inline constexpr size_t kTrtype = 0, kAdrfam = 1, kSubtype = 2, kTreq = 3, kPortid = 4,
                        kCntlid = 6, kAsqsz = 8, kEflags = 10, kTrsvcid = 32, kSubnqn = 256,
                        kTraddr = 512, kTsas = 768;
}  // namespace disc
inline constexpr const char* kDiscoveryNqn = "nqn.2014-08.org.nvmexpress.discovery";

// ---- NVMe/TCP PDUs ----
namespace pdu {
inline constexpr uint8_t kICReq = 0x00, kICResp = 0x01, kH2CTermReq = 0x02, kC2HTermReq = 0x03,
                         kCapsuleCmd = 0x04, kCapsuleResp = 0x05, kH2CData = 0x06,
                         kC2HData = 0x07, kR2T = 0x09;
inline constexpr uint8_t kFlagHdgst = 1u << 0, kFlagDdgst = 1u << 1, kFlagLast = 1u << 2,
                         kFlagSuccess = 1u << 3;
}  // namespace pdu

struct PduHeader {  // common header: 8 bytes
  uint8_t type;
  uint8_t flags;
  uint8_t hlen;
  uint8_t pdo;
  uint32_t plen;
};

struct ICReq {  // 128 bytes
  PduHeader hdr;
  uint16_t pfv;
  uint8_t hpda;
  uint8_t dgst;  // bit 0 header digest, bit 1 data digest
  uint32_t maxr2t;  // 0-based
  uint8_t rsvd[112];
};
struct ICResp {  // 128 bytes
  PduHeader hdr;
  uint16_t pfv;
  uint8_t cpda;
  uint8_t dgst;
  uint32_t maxh2cdata;
  uint8_t rsvd[112];
};
struct TermReq {  // 24 bytes (+ up to 128 bytes of the offending PDU header)
  PduHeader hdr;
  uint16_t fes;
  uint32_t fei;
  uint8_t rsvd[10];
} __attribute__((packed));
inline constexpr uint16_t kFesInvalidHeaderField = 0x01, kFesPduSequenceError = 0x02,
                          kFesHeaderDigestError = 0x03, kFesDataOutOfRange = 0x04,
                          kFesDataLimitExceeded = 0x05, kFesUnsupportedParameter = 0x06;
inline constexpr size_t kTermReqMaxLen = 152;

struct CapsuleCmdHeader {  // 72 bytes: header + SQE; in-capsule data may follow
  PduHeader hdr;
  Sqe sqe;
};
struct CapsuleResp {  // 24 bytes
  PduHeader hdr;
  Cqe cqe;
};
struct DataPdu {  // H2CData and C2HData: 24 bytes
  PduHeader hdr;
  uint16_t cccid;
  uint16_t ttag;  // H2CData only
  uint32_t datao;
  uint32_t datal;
  uint8_t rsvd[4];
};
struct R2T {  // 24 bytes
  PduHeader hdr;
  uint16_t cccid;
  uint16_t ttag;
  uint32_t r2to;
  uint32_t r2tl;
  uint8_t rsvd[4];
};

// ---- Static checks against the reference ----
static_assert(sizeof(SglDesc) == 16 && offsetof(SglDesc, type) == 15);
static_assert(sizeof(Sqe) == 64);
static_assert(offsetof(Sqe, cid) == 2 && offsetof(Sqe, nsid) == 4 && offsetof(Sqe, dptr) == 24);
static_assert(offsetof(Sqe, cdw10) == 40 && offsetof(Sqe, cdw12) == 48 &&
              offsetof(Sqe, cdw15) == 60);
static_assert(kConnectRecfmt == offsetof(Sqe, cdw10) && kConnectKato == offsetof(Sqe, cdw12));
static_assert(sizeof(Cqe) == 16 && offsetof(Cqe, sqhd) == 8 && offsetof(Cqe, cid) == 12 &&
              offsetof(Cqe, status) == 14);
static_assert(sizeof(DsmRange) == 16 && offsetof(DsmRange, nlb) == 4 &&
              offsetof(DsmRange, slba) == 8);
static_assert(sizeof(CopyRange0) == 32 && offsetof(CopyRange0, slba) == 8 &&
              offsetof(CopyRange0, nlb) == 16 && offsetof(CopyRange0, cetype) == 18 &&
              offsetof(CopyRange0, cev) == 20 && offsetof(CopyRange0, eilbrt) == 24 &&
              offsetof(CopyRange0, elbat) == 28 && offsetof(CopyRange0, elbatm) == 30);
static_assert(sizeof(CopyRange2) == 32 && offsetof(CopyRange2, snsid) == 0 &&
              offsetof(CopyRange2, slba) == 8 && offsetof(CopyRange2, nlb) == 16 &&
              offsetof(CopyRange2, sopt) == 22);
static_assert(idctrl::kOncs == 520 && idctrl::kOcfs == 534 && idctrl::kSgls == 536 &&
              idctrl::kSubnqn == 768 && idctrl::kIoccsz == 1792 && idctrl::kMsdbd == 1803);
static_assert(idns::kMssrl == 74 && idns::kMcl == 76 && idns::kMsrc == 80 &&
              idns::kNguid == 104 && idns::kEui64 == 120);
static_assert(sizeof(PduHeader) == 8 && offsetof(PduHeader, plen) == 4);
static_assert(sizeof(ICReq) == 128 && offsetof(ICReq, pfv) == 8 && offsetof(ICReq, hpda) == 10 &&
              offsetof(ICReq, dgst) == 11 && offsetof(ICReq, maxr2t) == 12);
static_assert(sizeof(ICResp) == 128 && offsetof(ICResp, cpda) == 10 &&
              offsetof(ICResp, maxh2cdata) == 12);
static_assert(sizeof(TermReq) == 24 && offsetof(TermReq, fes) == 8 && offsetof(TermReq, fei) == 10);
static_assert(sizeof(CapsuleCmdHeader) == 72 && offsetof(CapsuleCmdHeader, sqe) == 8);
static_assert(sizeof(CapsuleResp) == 24);
static_assert(sizeof(DataPdu) == 24 && offsetof(DataPdu, cccid) == 8 &&
              offsetof(DataPdu, ttag) == 10 && offsetof(DataPdu, datao) == 12 &&
              offsetof(DataPdu, datal) == 16);
static_assert(sizeof(R2T) == 24 && offsetof(R2T, ttag) == 10 && offsetof(R2T, r2to) == 12 &&
              offsetof(R2T, r2tl) == 16);

}  // namespace blkcopy::nvme
