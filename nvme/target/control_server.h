// The control socket of a running target (`serve --rpc PATH`, `blkcopy ctl`): JSON-RPC 2.0 over
// a Unix stream socket, one request per line and one answer per line, as SPDK's rpc.py speaks
// to its target. It runs on the target's own loop, so a method sees the target between two of
// its callbacks, never in the middle of one.
//
// What a client may cost: at most kMostClients at once (more are closed at once), a request
// line of at most kMostLine bytes (a longer one is answered with an error and the client
// closed), and kIdle without a request ends it (socket_server.h). The socket is made mode 0600 (only its owner,
// root for /run/blkcopy, may change the target); a stale socket of a server that has gone is
// replaced, a live one is not.
//
// Errors are JSON-RPC errors: -32700 the line is not JSON, -32600 not a request (or nested deeper
// than kMostNesting), -32601 no such
// method, -32602 bad params (EINVAL from the method), -32000 the method failed (its message;
// "data" holds the errno's name).
#pragma once

#include <blkcopy/event_loop.h>
#include <blkcopy/status.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "nvme/target/socket_server.h"

namespace blkcopy::nvme {

// The answer to one JSON-RPC request line with these methods (ControlServer::answer; the
// fuzzer's entry).
std::string json_rpc_answer(const std::map<std::string, std::function<Result<nlohmann::json>(const nlohmann::json&)>>& methods,
                            std::string_view line);

// A method's parameter, checked: a string ("" when absent and not `required`), a number in
// [1, most] (`absent` when missing and not required). A missing or wrong one throws a
// json::type_error naming it, which the caller answers as -32602.
std::string text_param(const nlohmann::json& p, const char* name, bool required = false);
uint64_t number_param(const nlohmann::json& p, const char* name, uint64_t most,
                      std::optional<uint64_t> absent = std::nullopt);

class ControlServer {
 public:
  using Method = std::function<Result<nlohmann::json>(const nlohmann::json& params)>;
  static constexpr size_t kMostClients = 16;
  static constexpr size_t kMostLine = 1 << 20;
  static constexpr std::chrono::seconds kIdle{300};
  static constexpr size_t kMostNesting = 64;  // arrays and objects inside each other

  // Listens on `path` (its directory is made, mode 0700, when missing).
  static Result<std::unique_ptr<ControlServer>> listen(EventLoop& loop, const std::string& path,
                                                       std::map<std::string, Method> methods);
  ~ControlServer();  // stops listening and removes the socket file
  const std::string& path() const { return path_; }

  // The answer to one request line (a JSON-RPC response, or an error response; empty for a
  // notification, a request without an id): what the socket's clients get, exposed for tests.
  std::string answer(std::string_view line) const;

 private:
  ControlServer(std::string path, std::map<std::string, Method> methods)
      : path_(std::move(path)), methods_(std::move(methods)) {}

  std::string path_;
  std::map<std::string, Method> methods_;
  SocketServer::Ptr server_;  // its sessions use methods_ only while it is open
};

}  // namespace blkcopy::nvme
