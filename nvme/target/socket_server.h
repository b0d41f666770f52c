// A listening socket on an event loop and its clients, for the target's small side servers:
// the control socket (JSON-RPC, control_server.h) and the metrics endpoint (HTTP, metrics.h).
// Each client's bytes go to a Session of the server's protocol, which answers; the server
// bounds what a client may cost: at most `clients` at once (more are closed at once) and `idle`
// without a complete request. A session that ends the connection with input still unread gets
// a lingering close (its answer is not lost to a reset): the rest is read and dropped for at
// most kDrain. Clients free themselves once the kernel has ended their operations (they may
// outlive the server, which then only waits for them to end).
#pragma once

#include <blkcopy/event_loop.h>

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>

namespace blkcopy::nvme {

class SocketServer final : EventLoop::Orphan {
 public:
  class Session {
   public:
    virtual ~Session() = default;
    // The bytes received so far: consume what was handled, append answers to `out`. false:
    // end the connection once `out` has left.
    virtual bool on_input(std::string& in, std::string& out) = 0;
  };
  using NewSession = std::function<std::unique_ptr<Session>()>;
  struct Limits {
    size_t clients = 16;
    std::chrono::seconds idle{300};
  };
  static constexpr std::chrono::seconds kDrain{5};

  struct Closer {
    void operator()(SocketServer* s) const { s->close(); }
  };
  using Ptr = std::unique_ptr<SocketServer, Closer>;
  // Accepts on `fd` (listening; the server owns it). `name` is for the log.
  static Ptr start(EventLoop& loop, int fd, std::string name, Limits limits, NewSession sessions);

 private:
  class Client;
  SocketServer(EventLoop& loop, int fd, std::string name, Limits limits, NewSession sessions)
      : loop_(loop), fd_(fd), name_(std::move(name)), limits_(limits), sessions_(std::move(sessions)) {}
  ~SocketServer() override;
  void accept();
  void close();  // the handle went: stops accepting, ends every client, frees itself later
  void maybe_free();

  EventLoop& loop_;
  int fd_;
  std::string name_;
  Limits limits_;
  NewSession sessions_;
  OpId accept_op_{};
  Timer retry_;  // accepting again after a failed accept
  bool accepting_ = false, closed_ = false;
  std::set<Client*> clients_;  // each frees itself; it tells the server when it ends
};

}  // namespace blkcopy::nvme
