// Network addresses as people write them: "HOST:PORT", "[IPv6]:PORT", or "HOST" where a default
// port applies. Ports are 1 to 65535 everywhere; anything else is an error naming the input.
#pragma once

#include <blkcopy/status.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace blkcopy {

struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
};

// A port number, 1 to 65535. `what` names the input in the error ("--listen").
Result<uint16_t> parse_port(std::string_view text, std::string_view what);

// "HOST:PORT", "[V6]:PORT"; "HOST" or "[V6]" alone only when a default port is given. An IPv6
// address with a port needs brackets ("[::1]:4420"): "::1:4420" is refused as ambiguous.
Result<HostPort> parse_host_port(std::string_view text, std::string_view what,
                                 std::optional<uint16_t> default_port = std::nullopt);

// "1.2.3.4:80" or "[::1]:80", as the address would be typed.
std::string format_host_port(std::string_view host, uint16_t port);

// A numeric IPv4 or IPv6 address (no name lookup) into a socket address.
Result<sockaddr_storage> numeric_address(const std::string& host, uint16_t port,
                                         socklen_t* len);

// A listening TCP socket on a numeric address (port 0: a free one picked) and the port it has.
struct Listener {
  int fd;
  uint16_t port;
};
Result<Listener> tcp_listen(const std::string& host, uint16_t port, int backlog);

// The numeric address of a socket address ("127.0.0.1", "::1") and its port.
HostPort address_of(const sockaddr* sa);

}  // namespace blkcopy
