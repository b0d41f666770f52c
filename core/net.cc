#include "core/net.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fmt/format.h>

#include <charconv>
#include <cstring>

namespace blkcopy {

Result<uint16_t> parse_port(std::string_view text, std::string_view what) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v == 0 ||
      v > 65535) {
    return fail(EINVAL, fmt::format("{}: port '{}' must be a number from 1 to 65535", what, text));
  }
  return static_cast<uint16_t>(v);
}

Result<HostPort> parse_host_port(std::string_view text, std::string_view what,
                                 std::optional<uint16_t> default_port) {
  HostPort hp;
  std::string_view port;
  bool has_port = false;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == text.npos) return fail(EINVAL, fmt::format("{} '{}': missing ']'", what, text));
    hp.host = std::string(text.substr(1, close - 1));
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') {
        return fail(EINVAL, fmt::format("{} '{}': expected ':PORT' after ']'", what, text));
      }
      port = rest.substr(1);
      has_port = true;
    }
  } else {
    const size_t colon = text.find(':');
    if (colon != text.npos && text.find(':', colon + 1) != text.npos) {
      return fail(EINVAL, fmt::format("{} '{}': an IPv6 address needs brackets, as in "
                                      "[::1]:4420",
                                      what, text));
    }
    hp.host = std::string(text.substr(0, colon));
    if (colon != text.npos) {
      port = text.substr(colon + 1);
      has_port = true;
    }
  }
  if (hp.host.empty()) return fail(EINVAL, fmt::format("{} '{}': missing host", what, text));
  if (has_port) {
    auto p = parse_port(port, what);
    if (!p) return std::unexpected(p.error());
    hp.port = *p;
  } else if (default_port) {
    hp.port = *default_port;
  } else {
    return fail(EINVAL, fmt::format("{} '{}': expected HOST:PORT", what, text));
  }
  return hp;
}

std::string format_host_port(std::string_view host, uint16_t port) {
  if (host.find(':') != host.npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

Result<sockaddr_storage> numeric_address(const std::string& host, uint16_t port,
                                         socklen_t* len) {
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof *v6;
  } else {
    return fail(EINVAL, fmt::format("'{}' is not a numeric IPv4 or IPv6 address", host));
  }
  return ss;
}

HostPort address_of(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  HostPort hp;
  if (sa->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    hp.port = ntohs(v6->sin6_port);
  } else {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    hp.port = ntohs(v4->sin_port);
  }
  hp.host = buf;
  return hp;
}

Result<Listener> tcp_listen(const std::string& host, uint16_t port, int backlog) {
  socklen_t len = 0;
  auto sa = numeric_address(host, port, &len);
  if (!sa) return fail(EINVAL, fmt::format("listen address: {}", sa.error().message()));
  const int fd = ::socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(Status::from_errno(errno, "socket"));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&*sa), len) != 0 || ::listen(fd, backlog) != 0) {
    Status s = Status::from_errno(errno, fmt::format("cannot listen on {}", format_host_port(host, port)));
    ::close(fd);
    return std::unexpected(s);
  }
  getsockname(fd, reinterpret_cast<sockaddr*>(&*sa), &len);
  return Listener{fd, address_of(reinterpret_cast<sockaddr*>(&*sa)).port};
}

}  // namespace blkcopy
