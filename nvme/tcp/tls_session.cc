#include "nvme/tcp/tls_session.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cstring>
#include <mutex>

namespace blkcopy::nvme {
namespace {

// One context per role for the whole process (OpenSSL's contexts are safe to share between
// threads once set up).
SSL_CTX* context(bool server) {
  static std::once_flag once;
  static SSL_CTX* made[2];
  std::call_once(once, [] {
    for (int i = 0; i < 2; ++i) {
      SSL_CTX* c = SSL_CTX_new(i ? TLS_server_method() : TLS_client_method());
      if (!c) std::abort();
      SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
      SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
      // No tickets (every connection starts from the configured key), no early data, no
      // compression; records may be cut at any size the caller writes.
      SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION |
                                 (i ? SSL_OP_ALLOW_NO_DHE_KEX : 0));
      SSL_CTX_set_num_tickets(c, 0);
      SSL_CTX_set_max_early_data(c, 0);
      SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
      // PSK only: a target that answers with a certificate instead fails verification (there
      // is nothing to verify it against), and the target never asks the host for one.
      SSL_CTX_set_verify(c, i ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
      SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
      SSL_CTX_set_keylog_callback(c, &TlsSession::keylog);  // the secrets for kTLS
      made[i] = c;
    }
  });
  return made[server ? 1 : 0];
}

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out;
}

}  // namespace

Result<TlsSession::Psk> TlsSession::psk_for(const auth::TlsKey& key, std::string_view hostnqn,
                                             std::string_view subnqn) {
  const auth::TlsCipher c = key.cipher();
  std::string id = auth::tls_identity(c, hostnqn, subnqn);
  auto psk = auth::tls_psk(auth::retained_psk(key, hostnqn), id, c, key.libnvme1);
  if (!psk) return std::unexpected(psk.error());
  return Psk{std::move(id), std::move(*psk), c};
}

// A session of one role over two memory BIOs: the peer's ciphertext is fed into one, the
// records to send collect in the other.
TlsSession::TlsSession(bool server) : server_(server) {
  ssl_ = SSL_new(context(server));
  if (!ssl_) std::abort();
  SSL_set_app_data(ssl_, this);
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(rbio_, -1);  // empty means "more to come", not the end
  SSL_set_bio(ssl_, rbio_, wbio_);
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
}

std::unique_ptr<TlsSession> TlsSession::client(Psk psk) {
  std::unique_ptr<TlsSession> s(new TlsSession(false));
  s->psk_ = std::move(psk);
  SSL_set_psk_use_session_callback(s->ssl_, &TlsSession::use_psk);
  // Only the suite whose hash the PSK was made for: a target choosing another could not use it.
  SSL_set_ciphersuites(s->ssl_, auth::tls_cipher_name(s->psk_->cipher));
  return s;
}

std::unique_ptr<TlsSession> TlsSession::server(Lookup lookup) {
  std::unique_ptr<TlsSession> s(new TlsSession(true));
  s->lookup_ = std::move(lookup);
  SSL_set_psk_find_session_callback(s->ssl_, &TlsSession::find_psk);
  return s;
}

TlsSession::~TlsSession() {
  SSL_free(ssl_);  // frees both BIOs too
  OPENSSL_cleanse(client_secret_.data(), client_secret_.size());
  OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
}

// OpenSSL's key log ("LABEL <client random> <secret>", hex): only the two application traffic
// secrets are kept, in this session, never written anywhere.
void TlsSession::keylog(const SSL* ssl, const char* line) {
  auto* self = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  if (!self->keep_secrets_) return;
  const std::string_view text(line);
  std::vector<uint8_t>* to = text.starts_with("CLIENT_TRAFFIC_SECRET_0 ")   ? &self->client_secret_
                             : text.starts_with("SERVER_TRAFFIC_SECRET_0 ") ? &self->server_secret_
                                                                            : nullptr;
  if (!to) return;
  const size_t sp = text.rfind(' ');
  const std::string_view h = text.substr(sp + 1);
  if (h.size() % 2 || h.size() > 2 * EVP_MAX_MD_SIZE) return;
  to->resize(h.size() / 2);
  for (size_t i = 0; i < to->size(); ++i) {
    const int hi = OPENSSL_hexchar2int(static_cast<unsigned char>(h[2 * i]));
    const int lo = OPENSSL_hexchar2int(static_cast<unsigned char>(h[2 * i + 1]));
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(to->data(), to->size());
      return to->clear();
    }
    (*to)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
}

TlsSession::Secrets::~Secrets() {
  OPENSSL_cleanse(send.data(), send.size());
  OPENSSL_cleanse(receive.data(), receive.size());
}

std::optional<TlsSession::Secrets> TlsSession::take_secrets() {
  std::optional<Secrets> out;
  // No tickets either: OpenSSL would have sent one after the handshake with record number 0
  // (the contexts turn them off; this keeps that assumption checked).
  const bool boundary = SSL_is_init_finished(ssl_) && !records_used_ && error_.empty() &&
                        SSL_get_num_tickets(ssl_) == 0 &&
                        BIO_ctrl_pending(rbio_) == 0 && SSL_has_pending(ssl_) == 0 &&
                        BIO_ctrl_pending(wbio_) == 0;
  if (boundary && !client_secret_.empty() && !server_secret_.empty()) {
    const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
    const bool aes256 = c && std::strcmp(SSL_CIPHER_get_name(c), "TLS_AES_256_GCM_SHA384") == 0;
    out = Secrets{server_ ? server_secret_ : client_secret_, server_ ? client_secret_ : server_secret_,
                  aes256 ? auth::TlsCipher::aes256gcm_sha384 : auth::TlsCipher::aes128gcm_sha256};
  }
  OPENSSL_cleanse(client_secret_.data(), client_secret_.size());
  OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
  client_secret_.clear();
  server_secret_.clear();
  return out;
}

SSL_SESSION* TlsSession::session_for(SSL* ssl, const Psk& psk) {
  const SSL_CIPHER* cipher = nullptr;
  STACK_OF(SSL_CIPHER)* ciphers = SSL_get_ciphers(ssl);
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    const SSL_CIPHER* c = sk_SSL_CIPHER_value(ciphers, i);
    if (std::strcmp(SSL_CIPHER_get_name(c), auth::tls_cipher_name(psk.cipher)) == 0) cipher = c;
  }
  SSL_SESSION* sess = SSL_SESSION_new();
  if (!sess || !cipher || SSL_SESSION_set_cipher(sess, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION) != 1 ||
      SSL_SESSION_set1_master_key(sess, psk.key.data(), psk.key.size()) != 1) {
    SSL_SESSION_free(sess);
    return nullptr;
  }
  return sess;
}

// The target: the host names its PSK by identity.
int TlsSession::find_psk(SSL* ssl, const unsigned char* id, size_t len, SSL_SESSION** sess) {
  auto* self = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  *sess = nullptr;
  const std::string_view identity(reinterpret_cast<const char*>(id), len);
  auto psk = self->lookup_(identity);
  if (!psk) {
    self->error_ = psk.error().message();
    return 1;  // no session: the handshake fails (the host gets an alert)
  }
  *sess = session_for(ssl, *psk);
  if (!*sess) return 0;
  self->identity_ = psk->identity;
  return 1;
}

// The host: offers its one PSK, for the hash of the cipher suite it was made for.
int TlsSession::use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* len,
                        SSL_SESSION** sess) {
  auto* self = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  *sess = nullptr;
  const Psk& psk = *self->psk_;
  const EVP_MD* want = psk.cipher == auth::TlsCipher::aes256gcm_sha384 ? EVP_sha384() : EVP_sha256();
  if (md && EVP_MD_get_type(md) != EVP_MD_get_type(want)) return 1;  // a retry for another hash
  *sess = session_for(ssl, psk);
  if (!*sess) return 0;
  *id = reinterpret_cast<const unsigned char*>(psk.identity.data());
  *len = psk.identity.size();
  self->identity_ = psk.identity;
  return 1;
}

void TlsSession::failed(std::string_view what) {
  const std::string errs = openssl_errors();
  if (error_.empty()) error_ = errs.empty() ? std::string(what) : fmt::format("{}: {}", what, errs);
}

TlsSession::Step TlsSession::handshake() {
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    // TLS 1.3 without certificates: the peer proved the PSK, or there was no handshake.
    if (!SSL_session_reused(ssl_)) {
      error_ = "the peer did not use the pre-shared key";
      return Step::failed;
    }
    return Step::done;
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) return Step::want_read;
  const int reason = ERR_GET_REASON(ERR_peek_error());
  if (reason == SSL_R_WRONG_VERSION_NUMBER ||
      reason == SSL_R_PACKET_LENGTH_TOO_LONG) {
    failure_ = Failure::not_tls;
    failed("the peer does not speak TLS here (clear text where a TLS record was due)");
  } else if (reason == SSL_R_BINDER_DOES_NOT_VERIFY) {
    ERR_clear_error();  // said below in words
    failed(fmt::format("the peer's key for '{}' is not the one configured here (binder does not "
                       "verify; a key that nvme-cli 2.x / libnvme 1.x put into Linux's keyring is "
                       "derived differently: --tls-libnvme1, tls_libnvme1)",
                       identity_));
  } else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    failure_ = Failure::certificate;
    failed("the peer answered with a certificate, not the pre-shared key");
  } else {
    failed("TLS handshake");
  }
  return Step::failed;
}

void TlsSession::feed(const uint8_t* p, size_t n) { BIO_write(rbio_, p, static_cast<int>(n)); }

void TlsSession::fail(std::string why) {
  if (error_.empty()) error_ = std::move(why);
  SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

long TlsSession::read(void* buf, size_t len) {
  if (!error_.empty() && !peer_closed_) return -1;
  records_used_ = true;
  size_t got = 0;
  const int r = SSL_read_ex(ssl_, buf, len, &got);
  if (r == 1) return static_cast<long>(got);
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) {
    peer_closed_ = true;
  } else {
    failed("TLS record");
  }
  return -1;
}

void TlsSession::write(const void* p, size_t n) {
  size_t done = 0;
  records_used_ = true;
  // Into a memory BIO a write takes everything at once (it only fails on a broken session,
  // whose next read reports it).
  if (n && SSL_write_ex(ssl_, p, n, &done) != 1) failed("TLS write");
}

void TlsSession::take_output(std::vector<uint8_t>& out) {
  const size_t n = BIO_ctrl_pending(wbio_);
  if (!n) return;
  const size_t at = out.size();
  out.resize(at + n);
  const int got = BIO_read(wbio_, out.data() + at, static_cast<int>(n));
  out.resize(at + (got > 0 ? static_cast<size_t>(got) : 0));
}

size_t TlsSession::output_waiting() const { return BIO_ctrl_pending(wbio_); }

std::string TlsSession::cipher_name() const {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  return c ? SSL_CIPHER_get_name(c) : "";
}

}  // namespace blkcopy::nvme
