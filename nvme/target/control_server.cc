#include "nvme/target/control_server.h"

#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
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
  const char* name = strerrorname_np(e);
  return name ? name : fmt::format("errno {}", e);
}

const json kNull = nullptr;
const json kEmpty = json::object();

// How deep arrays and objects nest in `line` (outside strings).
size_t nesting(std::string_view line) {
  size_t depth = 0, most = 0;
  bool in_string = false, escaped = false;
  for (char c : line) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      most = std::max(most, ++depth);
    } else if ((c == ']' || c == '}') && depth) {
      --depth;
    }
  }
  return most;
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

std::string text_param(const json& p, const char* name, bool required) {
  if (!p.contains(name)) {
    if (!required) return {};
    throw json::type_error::create(302, fmt::format("missing \"{}\"", name), nullptr);
  }
  if (!p[name].is_string()) throw json::type_error::create(302, fmt::format("{} must be a string", name), nullptr);
  return p[name].get<std::string>();
}

uint64_t number_param(const json& p, const char* name, uint64_t most, std::optional<uint64_t> absent) {
  if (!p.contains(name)) {
    if (absent) return *absent;
    throw json::type_error::create(302, fmt::format("missing \"{}\"", name), nullptr);
  }
  const json& v = p[name];
  if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 || v.get<uint64_t>() > most) {
    throw json::type_error::create(302, fmt::format("{} must be a number from 1 to {}", name, most),
                                   nullptr);
  }
  return v.get<uint64_t>();
}

// One client's requests: a line each, answered in order.
class JsonRpcSession final : public SocketServer::Session {
 public:
  explicit JsonRpcSession(const ControlServer& server) : server_(server) {}
  bool on_input(std::string& in, std::string& out) override {
    for (size_t nl; (nl = in.find('\n')) != std::string::npos;) {
      std::string_view line(in.data(), nl);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) {
        std::string a = server_.answer(line);
        if (!a.empty()) out += a + "\n";  // none for a notification
      }
      in.erase(0, nl + 1);
    }
    if (in.size() > ControlServer::kMostLine) {
      out += error(nullptr, -32600, fmt::format("request longer than {} bytes", ControlServer::kMostLine))
                 .dump() +
             "\n";
      in.clear();
      return false;
    }
    return true;
  }

 private:
  const ControlServer& server_;
};

Result<std::unique_ptr<ControlServer>> ControlServer::listen(EventLoop& loop, const std::string& path,
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
  // 0600 before it listens: nobody else may connect in between (umask is the process's, and
  // other threads run).
  const int r = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r != 0 || ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
    const int e = errno;
    ::close(fd);
    return fail(e, fmt::format("control socket {}: {}", path, std::strerror(e)));
  }
  std::unique_ptr<ControlServer> s(new ControlServer(path, std::move(methods)));
  const ControlServer& self = *s;
  s->server_ = SocketServer::start(loop, fd, fmt::format("control socket {}", path),
                                   {kMostClients, kIdle},
                                   [&self] { return std::make_unique<JsonRpcSession>(self); });
  return s;
}

ControlServer::~ControlServer() {
  server_.reset();  // no session answers from here on
  ::unlink(path_.c_str());
}

std::string ControlServer::answer(std::string_view line) const { return json_rpc_answer(methods_, line); }

std::string json_rpc_answer(const std::map<std::string, ControlServer::Method>& methods_, std::string_view line) {
  // Bytes that are not UTF-8 (a host's NQN, a client's line) are replaced, not thrown on.
  auto text = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  constexpr size_t kMostNesting = ControlServer::kMostNesting;
  if (nesting(line) > kMostNesting) {  // copying a deeper value would recurse off the stack
    return text(error(nullptr, -32600, fmt::format("nested deeper than {} levels", kMostNesting)));
  }
  json req;
  try {
    req = json::parse(line);
  } catch (const json::exception& e) {
    return text(error(nullptr, -32700, fmt::format("not JSON: {}", e.what())));
  }
  if (!req.is_object()) return text(error(nullptr, -32600, "a request is a JSON object"));
  // A request without an id is a notification: carried out, never answered.
  const bool notification = !req.contains("id");
  const json& id = notification ? kNull : req["id"];
  if (!id.is_null() && !id.is_number_integer() && !id.is_string()) {
    return text(error(nullptr, -32600, "id must be a number or a string"));
  }
  auto reply = [&](const json& j) { return notification ? std::string() : text(j); };
  if (req.value("jsonrpc", json()) != "2.0") return reply(error(id, -32600, "jsonrpc must be \"2.0\""));
  if (!req.contains("method") || !req["method"].is_string()) {
    return reply(error(id, -32600, "method must be a string"));
  }
  const std::string& method = req["method"].get_ref<const std::string&>();
  auto m = methods_.find(method);
  if (m == methods_.end()) {
    std::string known;
    for (const auto& [name, fn] : methods_) known += (known.empty() ? "" : ", ") + name;
    return reply(error(id, -32601, fmt::format("no method '{}' (methods: {})", method, known)));
  }
  const json& params = req.contains("params") ? req["params"] : kEmpty;
  if (!params.is_object()) return reply(error(id, -32602, "params must be an object"));
  Result<json> r = [&]() -> Result<json> {
    try {
      return m->second(params);
    } catch (const json::exception& e) {  // a param of the wrong type, read with get<>()
      // Without nlohmann's "[json.exception.type_error.302] " in front.
      std::string what = e.what();
      if (what.starts_with("[json.exception.")) what.erase(0, what.find("] ") + 2);
      return fail(EINVAL, fmt::format("params: {}", what));
    } catch (const std::exception& e) {
      return fail(EIO, fmt::format("{}: {}", method, e.what()));
    }
  }();
  if (!r) {
    const int code = r.error().code() == EINVAL ? -32602 : -32000;
    return reply(error(id, code, r.error().message(), errno_name(r.error().code())));
  }
  return reply(json{{"jsonrpc", "2.0"}, {"result", std::move(*r)}, {"id", id}});
}

}  // namespace blkcopy::nvme
