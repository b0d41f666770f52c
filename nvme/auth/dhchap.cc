#include "nvme/auth/dhchap.h"

#include <fmt/format.h>
#include <isa-l.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/dh.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>

#include <cstring>

#include "nvme/auth/interchange.h"

namespace blkcopy::nvme::auth {
namespace {

const EVP_MD* md(Hash h) {
  switch (h) {
    case Hash::sha256: return EVP_sha256();
    case Hash::sha384: return EVP_sha384();
    case Hash::sha512: return EVP_sha512();
  }
  return EVP_sha256();
}

constexpr const char* kGroups[] = {"null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144",
                                   "ffdhe8192"};

void put16(Bytes& b, size_t off, uint16_t v) { std::memcpy(b.data() + off, &v, 2); }
void put32(Bytes& b, size_t off, uint32_t v) { std::memcpy(b.data() + off, &v, 4); }
uint16_t get16(std::span<const uint8_t> b, size_t off) {
  uint16_t v;
  std::memcpy(&v, b.data() + off, 2);
  return v;
}
uint32_t get32(std::span<const uint8_t> b, size_t off) {
  uint32_t v;
  std::memcpy(&v, b.data() + off, 4);
  return v;
}

Bytes header(uint8_t type, uint8_t id, uint16_t tid, size_t size) {
  Bytes b(size, 0);
  b[0] = type;
  b[1] = id;
  put16(b, 4, tid);
  return b;
}

Status bad(std::string_view what) {
  return Status::error(EPROTO, fmt::format("DH-HMAC-CHAP: {}", what));
}

Bytes response(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> challenge, uint32_t seq,
               uint16_t tid, std::string_view role, std::string_view nqn1, std::string_view nqn2) {
  Bytes m(challenge.begin(), challenge.end());
  auto add = [&m](const void* p, size_t n) {
    m.insert(m.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  };
  add(&seq, 4);
  add(&tid, 2);
  const uint8_t zero = 0;  // SC_C: no secure channel concatenation
  add(&zero, 1);
  add(role.data(), role.size());
  add(nqn1.data(), nqn1.size());
  add(&zero, 1);
  add(nqn2.data(), nqn2.size());
  return hmac(h, key, m);
}

}  // namespace

size_t hash_len(Hash h) { return h == Hash::sha256 ? 32 : h == Hash::sha384 ? 48 : 64; }

Result<Hash> parse_hash(std::string_view t) {
  if (t == "hmac(sha256)" || t == "sha256" || t == "1") return Hash::sha256;
  if (t == "hmac(sha384)" || t == "sha384" || t == "2") return Hash::sha384;
  if (t == "hmac(sha512)" || t == "sha512" || t == "3") return Hash::sha512;
  return fail(EINVAL, fmt::format("hash '{}': expected hmac(sha256), hmac(sha384) or hmac(sha512)", t));
}

std::string hash_name(Hash h) {
  return h == Hash::sha256 ? "hmac(sha256)" : h == Hash::sha384 ? "hmac(sha384)" : "hmac(sha512)";
}

Result<uint8_t> parse_dhgroup(std::string_view t) {
  for (uint8_t i = 0; i < std::size(kGroups); ++i) {
    if (t == kGroups[i]) return i;
  }
  return fail(EINVAL, fmt::format("DH group '{}': expected null or ffdhe2048, ffdhe3072, "
                                  "ffdhe4096, ffdhe6144, ffdhe8192",
                                  t));
}

std::string dhgroup_name(uint8_t id) {
  return id < std::size(kGroups) ? kGroups[id] : fmt::format("unknown ({})", id);
}

size_t dhgroup_bytes(uint8_t id) {
  constexpr size_t kBits[] = {0, 2048, 3072, 4096, 6144, 8192};
  return id < std::size(kBits) ? kBits[id] / 8 : 0;
}

Result<Secret> parse_secret(std::string_view text) {
  auto k = parse_interchange(text, "DHHC-1", {32, 48, 64}, "DH-HMAC-CHAP secret",
                             "DHHC-1:00:BASE64: as 'nvme gen-dhchap-key' prints it");
  if (!k) return std::unexpected(k.error());
  if (k->hh > 3) {
    return fail(EINVAL, fmt::format("DH-HMAC-CHAP secret: transform '{:02}' is not 00, 01, 02 or "
                                    "03 (expected DHHC-1:00:BASE64: as 'nvme gen-dhchap-key' "
                                    "prints it)",
                                    k->hh));
  }
  return Secret{std::move(k->key), k->hh};
}

Bytes transformed_key(const Secret& s, std::string_view nqn) {
  if (s.transform == 0) return s.key;
  std::string m(nqn);
  m += "NVMe-over-Fabrics";
  return hmac(static_cast<Hash>(s.transform), s.key,
              std::span(reinterpret_cast<const uint8_t*>(m.data()), m.size()));
}

Bytes hmac(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> data) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  HMAC(md(h), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &len);
  out.resize(len);
  return out;
}

Bytes digest(Hash h, std::span<const uint8_t> data) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, md(h), nullptr);
  out.resize(len);
  return out;
}

Bytes random_bytes(size_t n) {
  Bytes b(n);
  if (RAND_bytes(b.data(), static_cast<int>(n)) != 1) std::abort();  // no entropy: do not go on
  return b;
}

bool same(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---------------------------------------------------------------- Diffie-Hellman

Result<DhKey> DhKey::generate(uint8_t group) {
  if (group == kDhNull || group >= std::size(kGroups)) {
    return fail(EINVAL, fmt::format("DH group {} cannot make a key", group));
  }
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "DH", nullptr);
  EVP_PKEY* pkey = nullptr;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(kGroups[group]), 0),
      OSSL_PARAM_construct_end()};
  const bool ok = ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_CTX_set_params(ctx, params) == 1 &&
                  EVP_PKEY_generate(ctx, &pkey) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) return fail(EIO, fmt::format("DH-HMAC-CHAP: cannot make a {} key", kGroups[group]));
  return DhKey(group, pkey);
}

DhKey::DhKey(DhKey&& o) noexcept : group_(o.group_), pkey_(o.pkey_) { o.pkey_ = nullptr; }
DhKey& DhKey::operator=(DhKey&& o) noexcept {
  std::swap(group_, o.group_);
  std::swap(pkey_, o.pkey_);
  return *this;
}
DhKey::~DhKey() { EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_)); }

Bytes DhKey::public_value() const {
  BIGNUM* pub = nullptr;
  Bytes out(dhgroup_bytes(group_), 0);
  if (EVP_PKEY_get_bn_param(static_cast<EVP_PKEY*>(pkey_), OSSL_PKEY_PARAM_PUB_KEY, &pub) == 1) {
    BN_bn2binpad(pub, out.data(), static_cast<int>(out.size()));
  }
  BN_free(pub);
  return out;
}

Result<Bytes> DhKey::shared_secret(std::span<const uint8_t> peer) const {
  const size_t n = dhgroup_bytes(group_);
  if (peer.size() != n) {
    return std::unexpected(bad(fmt::format("the peer's DH value has {} bytes; {} needs {}", peer.size(),
                                           kGroups[group_], n)));
  }
  BIGNUM* pub = BN_bin2bn(peer.data(), static_cast<int>(peer.size()), nullptr);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* fctx = EVP_PKEY_CTX_new_from_name(nullptr, "DH", nullptr);
  EVP_PKEY* peer_key = nullptr;
  EVP_PKEY_CTX* dctx = nullptr;
  Bytes out(n, 0);
  size_t len = n;
  const bool ok =
      pub && bld && fctx &&
      OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, kGroups[group_], 0) == 1 &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PUB_KEY, pub) == 1 &&
      (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr && EVP_PKEY_fromdata_init(fctx) == 1 &&
      EVP_PKEY_fromdata(fctx, &peer_key, EVP_PKEY_PUBLIC_KEY, params) == 1 &&
      (dctx = EVP_PKEY_CTX_new(static_cast<EVP_PKEY*>(pkey_), nullptr)) != nullptr &&
      EVP_PKEY_derive_init(dctx) == 1 && EVP_PKEY_CTX_set_dh_pad(dctx, 1) == 1 &&
      EVP_PKEY_derive_set_peer(dctx, peer_key) == 1 &&  // checks the value is in range
      EVP_PKEY_derive(dctx, out.data(), &len) == 1 && len == n;
  EVP_PKEY_CTX_free(dctx);
  EVP_PKEY_free(peer_key);
  EVP_PKEY_CTX_free(fctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(pub);
  if (!ok) return std::unexpected(bad("the peer's DH value is not a valid public key of the group"));
  return out;
}

Bytes augmented_challenge(Hash h, std::span<const uint8_t> challenge,
                          std::span<const uint8_t> shared_secret) {
  if (shared_secret.empty()) return Bytes(challenge.begin(), challenge.end());
  return hmac(h, digest(h, shared_secret), challenge);
}

Bytes host_response(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> challenge,
                    uint32_t seq, uint16_t tid, std::string_view hostnqn, std::string_view subnqn) {
  return response(h, key, challenge, seq, tid, "HostHost", hostnqn, subnqn);
}

Bytes controller_response(Hash h, std::span<const uint8_t> key, std::span<const uint8_t> challenge,
                          uint32_t seq, uint16_t tid, std::string_view subnqn,
                          std::string_view hostnqn) {
  return response(h, key, challenge, seq, tid, "Controller", subnqn, hostnqn);
}

// ---------------------------------------------------------------- messages

Bytes encode_negotiate(const Negotiate& n) {
  Bytes b = header(kTypeCommon, kIdNegotiate, n.tid, 8 + 64);
  b[7] = 1;   // NAPD: one protocol descriptor
  b[8] = 1;   // AUTHID: DH-HMAC-CHAP
  b[10] = static_cast<uint8_t>(std::min<size_t>(n.hashes.size(), 30));
  b[11] = static_cast<uint8_t>(std::min<size_t>(n.dhgroups.size(), 30));
  for (size_t i = 0; i < b[10]; ++i) b[12 + i] = n.hashes[i];
  for (size_t i = 0; i < b[11]; ++i) b[42 + i] = n.dhgroups[i];
  return b;
}

Result<Negotiate> decode_negotiate(std::span<const uint8_t> m) {
  if (m.size() < 8 + 64) return std::unexpected(bad("Negotiate message too short"));
  if (m[0] != kTypeCommon || m[1] != kIdNegotiate) return std::unexpected(bad("not a Negotiate message"));
  if (m[6] != 0) return std::unexpected(bad("secure channel concatenation is not supported"));
  if (m[7] < 1 || m[8] != 1) return std::unexpected(bad("no DH-HMAC-CHAP protocol descriptor"));
  if (m[10] > 30 || m[11] > 30) return std::unexpected(bad("Negotiate lists more than 30 IDs"));
  Negotiate n;
  n.tid = get16(m, 4);
  n.hashes.assign(m.begin() + 12, m.begin() + 12 + m[10]);
  n.dhgroups.assign(m.begin() + 42, m.begin() + 42 + m[11]);
  return n;
}

Bytes encode_challenge(const Challenge& c) {
  Bytes b = header(kTypeDhchap, kIdChallenge, c.tid, 16 + c.c.size() + c.dh.size());
  b[6] = static_cast<uint8_t>(c.c.size());
  b[8] = static_cast<uint8_t>(c.hash);
  b[9] = c.dhgroup;
  put16(b, 10, static_cast<uint16_t>(c.dh.size()));
  put32(b, 12, c.seq);
  std::memcpy(b.data() + 16, c.c.data(), c.c.size());
  if (!c.dh.empty()) std::memcpy(b.data() + 16 + c.c.size(), c.dh.data(), c.dh.size());
  return b;
}

Result<Challenge> decode_challenge(std::span<const uint8_t> m) {
  if (m.size() < 16 || m[0] != kTypeDhchap || m[1] != kIdChallenge) {
    return std::unexpected(bad("not a Challenge message"));
  }
  Challenge c;
  c.tid = get16(m, 4);
  if (m[8] < 1 || m[8] > 3) return std::unexpected(bad(fmt::format("unknown hash ID {}", m[8])));
  c.hash = static_cast<Hash>(m[8]);
  const size_t hl = m[6];
  if (hl != hash_len(c.hash)) return std::unexpected(bad("challenge length does not match the hash"));
  c.dhgroup = m[9];
  if (c.dhgroup >= std::size(kGroups)) {
    return std::unexpected(bad(fmt::format("unknown DH group ID {}", c.dhgroup)));
  }
  const size_t dhv = get16(m, 10);
  if (dhv != dhgroup_bytes(c.dhgroup) || m.size() < 16 + hl + dhv) {
    return std::unexpected(bad("the DH value's length does not match the group"));
  }
  c.seq = get32(m, 12);
  c.c.assign(m.begin() + 16, m.begin() + 16 + static_cast<long>(hl));
  c.dh.assign(m.begin() + 16 + static_cast<long>(hl), m.begin() + 16 + static_cast<long>(hl + dhv));
  return c;
}

Bytes encode_reply(const Reply& r, size_t hl) {
  Bytes b = header(kTypeDhchap, kIdReply, r.tid, 16 + 2 * hl + r.dh.size());
  b[6] = static_cast<uint8_t>(hl);
  b[8] = r.cvalid ? 1 : 0;
  put16(b, 10, static_cast<uint16_t>(r.dh.size()));
  put32(b, 12, r.seq);
  std::memcpy(b.data() + 16, r.r.data(), std::min(hl, r.r.size()));
  if (r.cvalid) std::memcpy(b.data() + 16 + hl, r.c2.data(), std::min(hl, r.c2.size()));
  if (!r.dh.empty()) std::memcpy(b.data() + 16 + 2 * hl, r.dh.data(), r.dh.size());
  return b;
}

Result<Reply> decode_reply(std::span<const uint8_t> m, size_t hl, size_t dh_bytes) {
  if (m.size() < 16 || m[0] != kTypeDhchap || m[1] != kIdReply) return std::unexpected(bad("not a Reply message"));
  if (m[6] != hl) return std::unexpected(bad("response length does not match the hash"));
  if (get16(m, 10) != dh_bytes || m.size() < 16 + 2 * hl + dh_bytes) {
    return std::unexpected(bad("the Reply's DH value does not match the group"));
  }
  Reply r;
  r.tid = get16(m, 4);
  r.cvalid = m[8] & 1;
  r.seq = get32(m, 12);
  r.r.assign(m.begin() + 16, m.begin() + 16 + static_cast<long>(hl));
  if (r.cvalid) r.c2.assign(m.begin() + 16 + static_cast<long>(hl), m.begin() + 16 + static_cast<long>(2 * hl));
  r.dh.assign(m.begin() + 16 + static_cast<long>(2 * hl), m.begin() + 16 + static_cast<long>(2 * hl + dh_bytes));
  return r;
}

Bytes encode_success1(const Success1& s, size_t hl) {
  Bytes b = header(kTypeDhchap, kIdSuccess1, s.tid, 16 + hl);
  b[6] = static_cast<uint8_t>(hl);
  b[8] = s.rvalid ? 1 : 0;
  if (s.rvalid) std::memcpy(b.data() + 16, s.r.data(), std::min(hl, s.r.size()));
  return b;
}

Result<Success1> decode_success1(std::span<const uint8_t> m, size_t hl) {
  if (m.size() < 16 || m[0] != kTypeDhchap || m[1] != kIdSuccess1) {
    return std::unexpected(bad("not a Success1 message"));
  }
  Success1 s;
  s.tid = get16(m, 4);
  s.rvalid = m[8] & 1;
  if (s.rvalid) {
    if (m[6] != hl || m.size() < 16 + hl) return std::unexpected(bad("Success1 response length"));
    s.r.assign(m.begin() + 16, m.begin() + 16 + static_cast<long>(hl));
  }
  return s;
}

Bytes encode_success2(uint16_t tid) { return header(kTypeDhchap, kIdSuccess2, tid, 16); }

Bytes encode_failure(uint8_t id, uint16_t tid, uint8_t explanation) {
  Bytes b = header(kTypeCommon, id, tid, 8);
  b[6] = 0x01;  // reason: authentication failure
  b[7] = explanation;
  return b;
}

Result<Header> decode_header(std::span<const uint8_t> m) {
  if (m.size() < 8) return std::unexpected(bad("message shorter than its header"));
  return Header{m[0], m[1], get16(m, 4)};
}

std::string failure_text(uint8_t e) {
  switch (e) {
    case kFailFailed:
      return "authentication failed (a wrong key, or the target is holding this host back "
             "after repeated failures from its address: retry within a minute)";
    case kFailNotUsable: return "authentication protocol not usable";
    case kFailConcatMismatch: return "secure channel concatenation mismatch";
    case kFailHashUnusable: return "no hash function both sides can use";
    case kFailDhUnusable: return "no DH group both sides can use";
    case kFailIncorrectPayload: return "incorrect payload";
    case kFailIncorrectProtocol: return "message out of sequence";
    default: return fmt::format("failure {:#04x}", e);
  }
}

}  // namespace blkcopy::nvme::auth
