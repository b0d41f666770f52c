#include "nvme/tcp/kernel_tls.h"

#include <fmt/format.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "nvme/auth/tls_psk.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace blkcopy::nvme {
namespace {

// One direction's key, salt (the IV's first 4 bytes) and IV (the other 8), record number 0.
template <class Info>
int install(int fd, int direction, uint16_t cipher_type, const std::vector<uint8_t>& secret,
            auth::TlsCipher cipher) {
  auth::TrafficKey k = auth::traffic_key(cipher, secret);
  Info info{};
  info.info.version = TLS_1_3_VERSION;
  info.info.cipher_type = cipher_type;
  static_assert(sizeof info.salt + sizeof info.iv == 12);
  std::memcpy(info.key, k.key.data(), sizeof info.key);
  std::memcpy(info.salt, k.iv.data(), sizeof info.salt);
  std::memcpy(info.iv, k.iv.data() + sizeof info.salt, sizeof info.iv);
  const int r = setsockopt(fd, SOL_TLS, direction, &info, sizeof info);
  const int err = r == 0 ? 0 : errno;
  OPENSSL_cleanse(&info, sizeof info);
  OPENSSL_cleanse(k.key.data(), k.key.size());
  OPENSSL_cleanse(k.iv.data(), k.iv.size());
  return err;
}

int install(int fd, int direction, const std::vector<uint8_t>& secret, auth::TlsCipher cipher) {
  if (cipher == auth::TlsCipher::aes256gcm_sha384) {
    return install<tls12_crypto_info_aes_gcm_256>(fd, direction, TLS_CIPHER_AES_GCM_256, secret, cipher);
  }
  return install<tls12_crypto_info_aes_gcm_128>(fd, direction, TLS_CIPHER_AES_GCM_128, secret, cipher);
}

}  // namespace

std::string kernel_tls_unavailable() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fmt::format("socket: {}", std::strerror(errno));
  // The module is looked up (and loaded) first; a socket that is not connected is refused
  // after that (ENOTCONN): that answer means the kernel has it.
  const int r = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls");
  const int err = errno;
  ::close(fd);
  if (r == 0 || err == ENOTCONN) return "";
  return err == ENOENT ? "the kernel has no tls module" : fmt::format("TCP_ULP tls: {}", std::strerror(err));
}

KernelTls move_to_kernel(int fd, const TlsSession::Secrets& secrets) {
  KernelTls out;
  if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") != 0) {
    out.why_not = errno == ENOENT ? "the kernel has no tls module"
                                  : fmt::format("TCP_ULP tls: {}", std::strerror(errno));
  } else if (int e = install(fd, TLS_RX, secrets.receive, secrets.cipher); e != 0) {
    out.why_not = fmt::format("TLS_RX: {}", std::strerror(e));
  } else {
    out.receive = true;
#ifdef TLS_RX_EXPECT_NO_PAD
    // Records without padding (OpenSSL adds none unless asked) are opened in place; a padded
    // one is only opened again, slower.
    const int one = 1;
    setsockopt(fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof one);
#endif
    if (int tx = install(fd, TLS_TX, secrets.send, secrets.cipher); tx != 0) {
      out.why_not = fmt::format("TLS_TX: {}", std::strerror(tx));
    } else {
      out.send = true;
    }
  }
  return out;  // the secrets are wiped as they go
}

}  // namespace blkcopy::nvme
