// One TLS 1.3 session with a pre-shared key, over memory: the caller moves ciphertext between
// the session and the socket (nvme/tcp/stream.h), so TLS runs on the event loop like any other
// socket work. OpenSSL 3 does the handshake and the records; this class only configures it
// the way NVMe/TCP requires (TP 8011): TLS 1.3 only, PSK only (no certificates, the peer is
// never asked for one), TLS_AES_128_GCM_SHA256 or TLS_AES_256_GCM_SHA384, psk_dhe_ke offered
// by the host and psk_ke accepted by the target, no session tickets and no early data.
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nvme/auth/tls_psk.h"

struct ssl_st;
struct bio_st;
struct ssl_session_st;
struct evp_md_st;

namespace blkcopy::nvme {

class TlsSession {
 public:
  struct Psk {
    std::string identity;
    std::vector<uint8_t> key;  // the TLS PSK (auth::tls_psk)
    auth::TlsCipher cipher = auth::TlsCipher::aes128gcm_sha256;
  };
  // The target's: the PSK for an identity a host offers, or an error saying why there is none
  // (logged by the caller; the host only sees the handshake fail).
  using Lookup = std::function<Result<Psk>(std::string_view identity)>;

  // The PSK a host with `key` uses for `subnqn`: its identity and TLS PSK (auth/tls_psk.h).
  // EINVAL when the NQNs make the identity longer than TLS allows.
  static Result<Psk> psk_for(const auth::TlsKey& key, std::string_view hostnqn,
                             std::string_view subnqn);
  static std::unique_ptr<TlsSession> client(Psk psk);
  static std::unique_ptr<TlsSession> server(Lookup lookup);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  enum class Step { done, want_read, failed };
  // Advances the handshake with what was fed; its output waits in take_output().
  Step handshake();
  // Ciphertext from the peer.
  void feed(const uint8_t* p, size_t n);
  // Plaintext into buf: the bytes (> 0), 0 when more ciphertext must be fed first, or -1 when
  // the session ended: the peer closed it (peer_closed()) or broke it (error()).
  long read(void* buf, size_t len);
  // Plaintext to send; its records wait in take_output().
  void write(const void* p, size_t n);
  // Moves the ciphertext waiting to be sent to the end of `out`.
  void take_output(std::vector<uint8_t>& out);
  size_t output_waiting() const;

  bool peer_closed() const { return peer_closed_; }
  // Why the handshake failed: the PSK was refused (or unknown), the peer does not speak TLS
  // (clear text where a record was due), or it answered with a certificate instead of the PSK.
  enum class Failure { refused, not_tls, certificate };
  Failure failure() const { return failure_; }
  // Ends the session for a reason of the caller's (reads fail from now on).
  void fail(std::string why);
  const std::string& error() const { return error_; }
  // After the handshake: the identity of the PSK both sides used, and the cipher suite.
  const std::string& identity() const { return identity_; }
  std::string cipher_name() const;

  // The application traffic secrets of both directions (TLS 1.3's CLIENT_ and
  // SERVER_TRAFFIC_SECRET_0) as this side uses them, for the kernel to take the records over
  // (nvme/tcp/kernel_tls.h).
  struct Secrets {
    std::vector<uint8_t> send, receive;
    auth::TlsCipher cipher = auth::TlsCipher::aes128gcm_sha256;
    ~Secrets();  // wipes both
  };
  // Keep the two secrets from the handshake (before it starts; without it none are kept).
  void keep_secrets() { keep_secrets_ = true; }
  // Once, after the handshake, and only while the session sits at a record boundary both ways
  // with no application record made or opened yet (both sequence numbers still 0): nothing
  // received that it has not taken, nothing waiting to be sent. nullopt otherwise.
  std::optional<Secrets> take_secrets();
  // OpenSSL's key-log callback for the contexts of both roles: keeps those two secrets.
  static void keylog(const ssl_st* ssl, const char* line);

 private:
  explicit TlsSession(bool server);
  static int find_psk(ssl_st* ssl, const unsigned char* id, size_t len, ssl_session_st** sess);
  static int use_psk(ssl_st* ssl, const evp_md_st* md, const unsigned char** id, size_t* len,
                     ssl_session_st** sess);
  static ssl_session_st* session_for(ssl_st* ssl, const Psk& psk);
  void failed(std::string_view what);

  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // memory: the peer's ciphertext is fed into it
  bio_st* wbio_ = nullptr;  // memory: the records to send collect in it
  std::optional<Psk> psk_;  // the host's
  Lookup lookup_;           // the target's
  std::string identity_, error_;
  bool peer_closed_ = false;
  Failure failure_ = Failure::refused;
  bool server_;
  bool records_used_ = false;
  bool keep_secrets_ = false;  // application data read or written: sequence numbers moved
  std::vector<uint8_t> client_secret_, server_secret_;  // until take_secrets() or the end
};

}  // namespace blkcopy::nvme
