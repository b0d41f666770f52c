#include "nvme/auth/tls_psk.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>

#include "nvme/auth/interchange.h"

namespace blkcopy::nvme::auth {
namespace {

const EVP_MD* md_of(TlsCipher c) {
  return c == TlsCipher::aes256gcm_sha384 ? EVP_sha384() : EVP_sha256();
}

// HKDF-Expand-Label (RFC 8446 §7.1) for `len` bytes: of `secret` itself (a traffic secret is
// already a pseudorandom key), or of HKDF-Extract(zero salt, secret) with `extract`. With
// `libnvme1`, its HkdfLabel as libnvme 1.x writes it: the length little-endian, the label and
// the context without their length bytes.
std::vector<uint8_t> expand_label(const EVP_MD* md, std::span<const uint8_t> secret,
                                  std::string_view label, std::string_view context, size_t len,
                                  bool extract = true, bool libnvme1 = false) {
  const std::string full = fmt::format("tls13 {}", label);
  std::vector<uint8_t> info;
  if (libnvme1) {
    info.push_back(static_cast<uint8_t>(len));
    info.push_back(static_cast<uint8_t>(len >> 8));
    info.insert(info.end(), full.begin(), full.end());
    info.insert(info.end(), context.begin(), context.end());
  } else {
    info.push_back(static_cast<uint8_t>(len >> 8));
    info.push_back(static_cast<uint8_t>(len));
    info.push_back(static_cast<uint8_t>(full.size()));
    info.insert(info.end(), full.begin(), full.end());
    info.push_back(static_cast<uint8_t>(context.size()));  // callers keep it under 256 bytes
    info.insert(info.end(), context.begin(), context.end());
  }
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr), EVP_PKEY_CTX_free);
  std::vector<uint8_t> out(len);
  size_t got = len;
  const int mode = extract ? EVP_PKEY_HKDEF_MODE_EXTRACT_AND_EXPAND : EVP_PKEY_HKDEF_MODE_EXPAND_ONLY;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), md) != 1 ||
      EVP_PKEY_CTX_set_hkdf_mode(ctx.get(), mode) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), reinterpret_cast<const unsigned char*>(""), 0) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), secret.data(), static_cast<int>(secret.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.data(), static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &got) != 1 || got != len) {
    std::abort();  // OpenSSL without HKDF: nothing sensible to go on with
  }
  return out;
}

}  // namespace

const char* tls_cipher_name(TlsCipher c) {
  return c == TlsCipher::aes256gcm_sha384 ? "TLS_AES_256_GCM_SHA384" : "TLS_AES_128_GCM_SHA256";
}

Result<TlsKey> parse_tls_key(std::string_view text) {
  constexpr std::string_view kExample = "NVMeTLSkey-1:01:BASE64: as 'nvme gen-tls-key' prints it";
  if (text.starts_with("DHHC-1:")) {
    return fail(EINVAL, fmt::format("TLS PSK: this is a DH-HMAC-CHAP secret (DHHC-1), not a TLS "
                                    "key (expected {})",
                                    kExample));
  }
  auto k = parse_interchange(text, "NVMeTLSkey-1", {32, 48}, "TLS PSK", kExample);
  if (!k) return std::unexpected(k.error());
  if (k->hh > 2) {
    return fail(EINVAL, fmt::format("TLS PSK: hash '{:02}' is not 00, 01 (SHA-256) or 02 "
                                    "(SHA-384) (expected {})",
                                    k->hh, kExample));
  }
  if (k->hh && k->key.size() != (k->hh == 1 ? 32u : 48u)) {
    return fail(EINVAL, fmt::format("TLS PSK: hash {:02} goes with a {}-byte key, this one has {} "
                                    "(expected {})",
                                    k->hh, k->hh == 1 ? 32 : 48, k->key.size(), kExample));
  }
  return TlsKey{std::move(k->key), k->hh};
}

std::vector<uint8_t> retained_psk(const TlsKey& k, std::string_view hostnqn) {
  if (k.hash == 0) return k.configured;
  const EVP_MD* md = k.hash == 2 ? EVP_sha384() : EVP_sha256();
  return expand_label(md, k.configured, "HostNQN", hostnqn, k.configured.size(), true, k.libnvme1);
}

std::string tls_identity(TlsCipher c, std::string_view hostnqn, std::string_view subnqn) {
  return fmt::format("NVMe0R{:02} {} {}", static_cast<int>(c), hostnqn, subnqn);
}

Result<std::vector<uint8_t>> tls_psk(std::span<const uint8_t> retained, std::string_view identity,
                                     TlsCipher c, bool libnvme1) {
  if (identity.size() > 255) {
    return fail(EINVAL, fmt::format("TLS PSK identity is {} bytes; TLS allows 255 (shorter host "
                                    "and subsystem NQNs are needed)",
                                    identity.size()));
  }
  return expand_label(md_of(c), retained, "nvme-tls-psk", identity, retained.size(), true, libnvme1);
}

TrafficKey traffic_key(TlsCipher c, std::span<const uint8_t> secret) {
  const size_t key_len = c == TlsCipher::aes256gcm_sha384 ? 32 : 16;
  return {expand_label(md_of(c), secret, "key", "", key_len, false),
          expand_label(md_of(c), secret, "iv", "", 12, false)};
}

Result<TlsIdentity> parse_tls_identity(std::string_view text) {
  if (!text.empty() && text.back() == '\0') text.remove_suffix(1);  // a C string's NUL, sent along
  auto bad = [&](std::string_view why) {
    return fail(EACCES, fmt::format("TLS PSK identity '{}': {}", text.substr(0, 300), why));
  };
  if (text.starts_with("NVMe1")) return bad("version 1 identities (with a PSK digest) are not supported");
  if (text.starts_with("NVMe0G")) {
    return bad("PSKs generated by DH-HMAC-CHAP (secure channel concatenation) are not supported");
  }
  if (!text.starts_with("NVMe0R0") || text.size() < 10 || (text[7] != '1' && text[7] != '2') ||
      text[8] != ' ') {
    return bad("not of the form 'NVMe0R01 HOSTNQN SUBNQN' or 'NVMe0R02 ...'");
  }
  const std::string_view rest = text.substr(9);
  const size_t space = rest.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 == rest.size() ||
      rest.find(' ', space + 1) != std::string_view::npos || space > 223 ||
      rest.size() - space - 1 > 223) {
    return bad("expected a host NQN and a subsystem NQN of at most 223 bytes after it");
  }
  return TlsIdentity{text[7] == '2' ? TlsCipher::aes256gcm_sha384 : TlsCipher::aes128gcm_sha256,
                     std::string(rest.substr(0, space)), std::string(rest.substr(space + 1))};
}

}  // namespace blkcopy::nvme::auth
