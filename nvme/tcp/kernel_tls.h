// Handing a TLS 1.3 session's records to the kernel (kTLS, the "tls" TCP upper-layer protocol)
// once the handshake is over: from then on the socket's sends and receives, io_uring's
// included, carry plaintext, and the kernel makes and opens the records (with the CPU's AES
// instructions, without copying them through user space twice).
//
// It takes each direction at its first application record (sequence number 0) with the key
// and IV of that direction's traffic secret (TlsSession::take_secrets). Receive moves first,
// then send; whatever the kernel does not take stays with OpenSSL in user space, so a kernel
// without the module (ENOENT), or one that refuses a suite, costs nothing but speed. Once
// moved, a record the kernel cannot hand up as data (an alert, a KeyUpdate) fails the receive
// with EIO: the connection ends, as Linux's own NVMe/TCP host and target end it.
#pragma once

#include <string>

#include "nvme/tcp/tls_session.h"

namespace blkcopy::nvme {

struct KernelTls {
  bool send = false, receive = false;
  std::string why_not;  // what the kernel said about the direction it did not take
};
KernelTls move_to_kernel(int fd, const TlsSession::Secrets& secrets);
// Whether this kernel can take records: empty when it can, else why not ("the kernel has no
// tls module"). Asks with a socket of its own that is not connected.
std::string kernel_tls_unavailable();

}  // namespace blkcopy::nvme
