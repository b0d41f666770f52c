#include "nvme/target/socket_server.h"

#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace blkcopy::nvme {

// One connected client: reads, lets its session answer, sends the answers, and reads on. It
// frees itself once the kernel has ended its operations.
class SocketServer::Client final : EventLoop::Orphan {
 public:
  Client(SocketServer* server, int fd)
      : server_(server), loop_(server->loop_), fd_(fd), idle_limit_(server->limits_.idle),
        session_(server->sessions_()) {}
  void start() {
    arm(idle_limit_);
    receive();
  }
  // The server goes: end without touching it again.
  void orphan() {
    server_ = nullptr;
    end();
  }

 private:
  ~Client() override { ::close(fd_); }

  void arm(std::chrono::seconds limit) {
    idle_ = loop_.after(limit, [this] { end(); });
  }
  void receive() {
    if (ended_) return;
    ++ops_;
    recv_op_ = loop_.recv(fd_, chunk_, sizeof chunk_, [this](int res) {
      --ops_;
      if (ended_) return maybe_free();
      if (res <= 0) return end();
      if (draining_) return receive();  // after the last answer: dropped until the client closes
      in_.append(chunk_, static_cast<size_t>(res));
      const size_t before = in_.size();
      // Counted as an operation: a method may run the loop (opening a remote device), where
      // the idle timer or the server's end must not free this client under it.
      ++ops_;
      keep_ = session_->on_input(in_, out_);
      --ops_;
      if (ended_) return maybe_free();
      if (in_.size() < before) arm(idle_limit_);  // a request was taken
      if (!out_.empty()) return send();
      if (!keep_) return linger();
      receive();
    });
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
      if (!keep_) return linger();
      receive();
    });
  }
  // No more answers: closing now with input unread would reset the connection and lose the
  // last answer on the client's side, so the rest is read and dropped for a while.
  void linger() {
    ::shutdown(fd_, SHUT_WR);
    draining_ = true;
    arm(kDrain);
    receive();
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

  SocketServer* server_;
  EventLoop& loop_;
  int fd_;
  std::chrono::seconds idle_limit_;
  std::unique_ptr<Session> session_;
  char chunk_[4096];
  std::string in_, out_;
  iovec iov_{};
  msghdr msg_{};
  OpId recv_op_{}, send_op_{};
  Timer idle_;
  unsigned ops_ = 0;
  bool ended_ = false, keep_ = true, draining_ = false;
};

SocketServer::Ptr SocketServer::start(EventLoop& loop, int fd, std::string name, Limits limits,
                                      NewSession sessions) {
  Ptr s(new SocketServer(loop, fd, std::move(name), limits, std::move(sessions)));
  s->accept();
  return s;
}

SocketServer::~SocketServer() {
  if (fd_ >= 0) ::close(fd_);
}

void SocketServer::accept() {
  accepting_ = true;
  accept_op_ = loop_.accept(fd_, [this](int res) {
    accepting_ = false;
    if (closed_) {
      if (res >= 0) ::close(res);
      return maybe_free();
    }
    if (res >= 0) {
      if (clients_.size() >= limits_.clients) {
        log_warning(fmt::format("serve: {}: more than {} clients at once; one closed", name_,
                                limits_.clients));
        ::close(res);
      } else {
        auto* c = new Client(this, res);
        clients_.insert(c);
        c->start();
      }
    } else if (res != -EINTR && res != -ECONNABORTED) {
      log_warning(fmt::format("serve: {}: accept: {}", name_, std::strerror(-res)));
      // Out of descriptors, say: try again in a while rather than spin.
      retry_ = loop_.after(std::chrono::milliseconds(100), [this] { accept(); });
      return;
    }
    accept();
  });
}

void SocketServer::close() {
  closed_ = true;
  retry_.cancel();
  for (Client* c : std::set<Client*>(clients_)) c->orphan();
  clients_.clear();
  ::shutdown(fd_, SHUT_RDWR);
  if (accepting_) loop_.cancel(accept_op_);
  loop_.adopt(this);
  maybe_free();
}

void SocketServer::maybe_free() {
  if (accepting_) return;
  loop_.disown(this);  // callers return right after
  delete this;
}

}  // namespace blkcopy::nvme
