// DH-HMAC-CHAP (NVMe Base Specification, in-band authentication): secrets as nvme-cli writes
// them, the hash and Diffie-Hellman groups, the responses both sides compute, and the
// messages of a transaction. Crypto is OpenSSL 3's; nothing here is hand-rolled.
//
// A transaction on one queue, after Connect answered "authentication required" (ATR):
//   host  -> Negotiate (hash and DH groups it offers)          Auth Send
//   ctrl  -> Challenge (hash, group, S1, C1, its DH value)     Auth Receive
//   host  -> Reply (R1, optional C2 and S2, its DH value)      Auth Send
//   ctrl  -> Success1 (R2 when the host asked) or Failure1     Auth Receive
//   host  -> Success2 (after checking R2) or Failure2          Auth Send
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace blkcopy::nvme::auth {

using Bytes = std::vector<uint8_t>;

// Hash functions by their protocol IDs; HL is the digest length.
enum class Hash : uint8_t { sha256 = 1, sha384 = 2, sha512 = 3 };
size_t hash_len(Hash h);
// "hmac(sha256)" (as Linux's configfs writes it), "sha256", or "1".
Result<Hash> parse_hash(std::string_view text);
std::string hash_name(Hash h);  // "hmac(sha256)"

// Diffie-Hellman groups by protocol ID: 0 null (no DH), 1..5 ffdhe2048..ffdhe8192.
inline constexpr uint8_t kDhNull = 0;
Result<uint8_t> parse_dhgroup(std::string_view text);  // "null", "ffdhe2048", ...
std::string dhgroup_name(uint8_t id);                  // "null", "ffdhe2048", ...
size_t dhgroup_bytes(uint8_t id);                      // size of a public value; 0 for null

// A secret "DHHC-1:hh:BASE64:" where BASE64 holds the key (32, 48 or 64 bytes) and its CRC-32
// (little-endian) and hh says how the key is transformed before use (00: not at all,
// 01/02/03: HMAC with SHA-256/384/512 of the NQN and "NVMe-over-Fabrics").
struct Secret {
  Bytes key;
  uint8_t transform = 0;
};
Result<Secret> parse_secret(std::string_view text);
// The key a side responds with: the secret transformed for `nqn` (the host NQN for the host's
// secret, the subsystem NQN for the controller's).
Bytes transformed_key(const Secret& s, std::string_view nqn);

Bytes hmac(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> data);
Bytes digest(Hash h, std::span<const uint8_t> data);
Bytes random_bytes(size_t n);
// Constant-time comparison of two responses.
bool same(std::span<const uint8_t> a, std::span<const uint8_t> b);

// One side's ephemeral key in a group (not null).
class DhKey {
 public:
  static Result<DhKey> generate(uint8_t group);
  DhKey(DhKey&&) noexcept;
  DhKey& operator=(DhKey&&) noexcept;
  ~DhKey();
  // The public value, big-endian, padded to the group size.
  Bytes public_value() const;
  // g^xy mod p from the peer's public value, padded to the group size; EPROTO when the peer's
  // value is not a valid public key of the group.
  Result<Bytes> shared_secret(std::span<const uint8_t> peer) const;

 private:
  DhKey(uint8_t group, void* pkey) : group_(group), pkey_(pkey) {}
  uint8_t group_ = 0;
  void* pkey_ = nullptr;  // EVP_PKEY
};

// The challenge a response is computed over: C itself without DH, else HMAC(H(Ks), C).
Bytes augmented_challenge(Hash h, std::span<const uint8_t> challenge,
                          std::span<const uint8_t> shared_secret);
// The host's response (R1): role "HostHost", NQNs host then subsystem; the controller's (R2):
// role "Controller", subsystem then host.
Bytes host_response(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> challenge,
                    uint32_t seq, uint16_t tid, std::string_view hostnqn, std::string_view subnqn);
Bytes controller_response(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> challenge,
                          uint32_t seq, uint16_t tid, std::string_view subnqn,
                          std::string_view hostnqn);

// ---- Messages (byte offsets as the specification lays them out) ----
inline constexpr uint8_t kTypeCommon = 0x00, kTypeDhchap = 0x01;
inline constexpr uint8_t kIdNegotiate = 0x00, kIdChallenge = 0x01, kIdReply = 0x02,
                         kIdSuccess1 = 0x03, kIdSuccess2 = 0x04, kIdFailure2 = 0xF0,
                         kIdFailure1 = 0xF1;
// Failure reason code explanations (reason code is always 01h).
inline constexpr uint8_t kFailFailed = 0x01, kFailNotUsable = 0x02, kFailConcatMismatch = 0x03,
                         kFailHashUnusable = 0x04, kFailDhUnusable = 0x05,
                         kFailIncorrectPayload = 0x06, kFailIncorrectProtocol = 0x07;
// Auth Send/Receive: CDW10 SECP E9h, SPSP1 01h, SPSP0 01h; CDW11 TL or AL.
inline constexpr uint32_t kAuthCdw10 = (0xE9u << 24) | (0x01u << 16) | (0x01u << 8);

struct Negotiate {
  uint16_t tid = 0;
  std::vector<uint8_t> hashes, dhgroups;
};
Bytes encode_negotiate(const Negotiate& n);
Result<Negotiate> decode_negotiate(std::span<const uint8_t> m);

struct Challenge {
  uint16_t tid = 0;
  Hash hash = Hash::sha256;
  uint8_t dhgroup = 0;
  uint32_t seq = 0;
  Bytes c, dh;
};
Bytes encode_challenge(const Challenge& c);
Result<Challenge> decode_challenge(std::span<const uint8_t> m);

struct Reply {
  uint16_t tid = 0;
  uint32_t seq = 0;  // S2; 0 when the host does not authenticate the controller
  bool cvalid = false;
  Bytes r, c2, dh;
};
Bytes encode_reply(const Reply& r, size_t hl);
Result<Reply> decode_reply(std::span<const uint8_t> m, size_t hl, size_t dh_bytes);

struct Success1 {
  uint16_t tid = 0;
  bool rvalid = false;
  Bytes r;  // R2 when rvalid
};
Bytes encode_success1(const Success1& s, size_t hl);
Result<Success1> decode_success1(std::span<const uint8_t> m, size_t hl);

Bytes encode_success2(uint16_t tid);
Bytes encode_failure(uint8_t id, uint16_t tid, uint8_t explanation);  // Failure1 or Failure2
// The message type and ID, and for a failure its explanation ("the response did not match").
struct Header {
  uint8_t type = 0, id = 0;
  uint16_t tid = 0;
};
Result<Header> decode_header(std::span<const uint8_t> m);
std::string failure_text(uint8_t explanation);

}  // namespace blkcopy::nvme::auth
