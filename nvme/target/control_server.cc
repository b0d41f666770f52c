#include "nvme/target/control_server.h"

#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace blkcopy::nvme {

using nlohmann::json;

namespace {

json error(const json& id, int code, const std::string& message, const json& data = nullptr) {
  json e = {{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = data;
  return {{"jsonrpc", "2.0"}, {"error", std::move(e)}, {"id", id}};
}

// The errno's name for "data" ("ENOENT"), so that scripts need not parse messages.
std::string errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    case EBUSY: return "EBUSY";
    case EIO: return "EIO";
    case EACCES: return "EACCES";
    default: return fmt::format("errno {}", e);
  }
}

// A socket path in sockaddr_un; false when it does not fit.
bool unix_address(const std::string& path, sockaddr_un& a) {
  a = {};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) return false;
  std::memcpy(a.sun_path, path.data(), path.size());
  return true;
}

}  // namespace

// One connected client: reads lines, answers each in order, ends on EOF, error, a line too
// long or kIdle without a request. It frees itself once the kernel has ended its operations.
class ControlServer::Client final : EventLoop::Orphan {
 public:
  Client(ControlServer* server, int fd) : server_(server), loop_(server->loop_), fd_(fd) {}
  void start() {
    arm_idle();
    receive();
  }
  // The server goes: end without touching it again.
  void orphan() {
    server_ = nullptr;
    end();
  }

 private:
  ~Client() override { ::close(fd_); }

  void arm_idle() {
    idle_ = loop_.after(kIdle, [this] { end(); });
  }
  void receive() {
    if (ended_) return;
    ++ops_;
    recv_op_ = loop_.recv(fd_, chunk_, sizeof chunk_, [this](int res) {
      --ops_;
      if (ended_) return maybe_free();
      if (res <= 0) return end();
      if (draining_) return receive();  // after the error: dropped until the client closes
      in_.append(chunk_, static_cast<size_t>(res));
      lines();
    });
  }
  // Answers every whole line received, then reads on (after the answers have left).
  void lines() {
    for (size_t nl; (nl = in_.find('\n')) != std::string::npos;) {
      std::string line = in_.substr(0, nl);
      in_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      arm_idle();
      out_ += server_->answer(line) + "\n";
    }
    if (in_.size() > kMostLine) {
      out_ += error(nullptr, -32600, fmt::format("request longer than {} bytes", kMostLine)).dump() + "\n";
      closing_after_send_ = true;
      in_.clear();
    }
    if (!out_.empty()) return send();
    receive();
  }
  void send() {
    iov_ = {out_.data(), out_.size()};
    msg_ = {};
    msg_.msg_iov = &iov_;
    msg_.msg_iovlen = 1;
    ++ops_;
    send_op_ = loop_.sendmsg(fd_, &msg_, [this](int res) {
      --ops_;
      if (ended_) return maybe_free();
      if (res <= 0) return end();
      out_.erase(0, static_cast<size_t>(res));
      if (!out_.empty()) return send();
      if (closing_after_send_) {
        // Closing now, with the rest of the line unread, would reset the connection and lose
        // the error on the client's side: no more answers, read and drop until it closes.
        ::shutdown(fd_, SHUT_WR);
        draining_ = true;
        idle_ = loop_.after(kDrain, [this] { end(); });
      }
      receive();
    });
  }
  void end() {
    if (ended_) return;
    ended_ = true;
    idle_.cancel();
    ::shutdown(fd_, SHUT_RDWR);
    loop_.cancel(recv_op_);
    loop_.cancel(send_op_);
    if (server_) server_->clients_.erase(this);
    server_ = nullptr;
    loop_.adopt(this);
    maybe_free();
  }
  void maybe_free() {
    if (ops_ != 0) return;
    // Callers return right after: the loop owns the callback that may be running.
    loop_.disown(this);
    delete this;
  }

  ControlServer* server_;
  EventLoop& loop_;
  int fd_;
  char chunk_[4096];
  std::string in_, out_;
  iovec iov_{};
  msghdr msg_{};
  OpId recv_op_{}, send_op_{};
  Timer idle_;
  unsigned ops_ = 0;
  bool ended_ = false, closing_after_send_ = false, draining_ = false;
  static constexpr std::chrono::seconds kDrain{5};
};

Result<ControlServer::Ptr> ControlServer::listen(EventLoop& loop, const std::string& path,
                                                 std::map<std::string, Method> methods) {
  sockaddr_un a;
  if (!unix_address(path, a)) {
    return fail(EINVAL, fmt::format("control socket {}: not a path of 1 to {} bytes", path,
                                    sizeof a.sun_path - 1));
  }
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir)) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(ec.value(), fmt::format("control socket {}: {}: {}", path, dir.string(), ec.message()));
    ::chmod(dir.c_str(), 0700);
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(errno, fmt::format("control socket: {}", std::strerror(errno)));
  // A socket file left by a server that has gone is replaced; one that answers is not.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      ::close(fd);
      return fail(EEXIST, fmt::format("control socket {}: exists and is not a socket", path));
    }
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    if (probe >= 0) ::close(probe);
    if (live) {
      ::close(fd);
      return fail(EADDRINUSE, fmt::format("control socket {}: another server answers on it", path));
    }
    ::unlink(path.c_str());
  }
  const mode_t old = ::umask(0177);  // the socket is born 0600
  const int r = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  const int err = errno;
  ::umask(old);
  if (r != 0 || ::listen(fd, 16) != 0) {
    const int e = r != 0 ? err : errno;
    ::close(fd);
    return fail(e, fmt::format("control socket {}: {}", path, std::strerror(e)));
  }
  Ptr s(new ControlServer(loop, path, std::move(methods)));
  s->fd_ = fd;
  s->accept();
  return s;
}

ControlServer::~ControlServer() {
  if (fd_ >= 0) ::close(fd_);
}

void ControlServer::accept() {
  accepting_ = true;
  accept_op_ = loop_.accept(fd_, [this](int res) {
    accepting_ = false;
    if (closed_) {
      if (res >= 0) ::close(res);
      return maybe_free();
    }
    if (res >= 0) {
      if (clients_.size() >= kMostClients) {
        log_warning(fmt::format("serve: control socket {}: more than {} clients at once; one "
                                "closed",
                                path_, kMostClients));
        ::close(res);
      } else {
        auto* c = new Client(this, res);
        clients_.insert(c);
        c->start();
      }
    } else if (res != -EINTR && res != -ECONNABORTED) {
      log_warning(fmt::format("serve: control socket {}: accept: {}", path_, std::strerror(-res)));
      // Out of descriptors, say: try again in a while rather than spin.
      retry_ = loop_.after(std::chrono::milliseconds(100), [this] { accept(); });
      return;
    }
    accept();
  });
}

void ControlServer::close() {
  closed_ = true;
  retry_.cancel();
  for (Client* c : std::set<Client*>(clients_)) c->orphan();
  clients_.clear();
  ::unlink(path_.c_str());
  ::shutdown(fd_, SHUT_RDWR);
  if (accepting_) loop_.cancel(accept_op_);
  loop_.adopt(this);
  maybe_free();
}

void ControlServer::maybe_free() {
  if (accepting_) return;
  loop_.disown(this);  // callers return right after
  delete this;
}

std::string ControlServer::answer(std::string_view line) const {
  json req;
  try {
    req = json::parse(line);
  } catch (const json::exception& e) {
    return error(nullptr, -32700, fmt::format("not JSON: {}", e.what())).dump();
  }
  if (!req.is_object()) return error(nullptr, -32600, "a request is a JSON object").dump();
  const json id = req.contains("id") ? req["id"] : json(nullptr);
  if (!id.is_null() && !id.is_number_integer() && !id.is_string()) {
    return error(nullptr, -32600, "id must be a number or a string").dump();
  }
  if (req.value("jsonrpc", json()) != "2.0") return error(id, -32600, "jsonrpc must be \"2.0\"").dump();
  if (!req.contains("method") || !req["method"].is_string()) {
    return error(id, -32600, "method must be a string").dump();
  }
  const std::string method = req["method"];
  auto m = methods_.find(method);
  if (m == methods_.end()) {
    std::string known;
    for (const auto& [name, fn] : methods_) known += (known.empty() ? "" : ", ") + name;
    return error(id, -32601, fmt::format("no method '{}' (methods: {})", method, known)).dump();
  }
  const json params = req.contains("params") ? req["params"] : json::object();
  if (!params.is_object()) return error(id, -32602, "params must be an object").dump();
  Result<json> r = [&]() -> Result<json> {
    try {
      return m->second(params);
    } catch (const json::exception& e) {  // a param of the wrong type, read with get<>()
      return fail(EINVAL, fmt::format("params: {}", e.what()));
    }
  }();
  if (!r) {
    const int code = r.error().code() == EINVAL ? -32602 : -32000;
    return error(id, code, r.error().message(), errno_name(r.error().code())).dump();
  }
  return json{{"jsonrpc", "2.0"}, {"result", std::move(*r)}, {"id", id}}.dump();
}

}  // namespace blkcopy::nvme
