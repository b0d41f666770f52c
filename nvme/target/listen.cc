// Listeners, accepting, and the tick that closes connections whose peer stalls.
#include <blkcopy/log.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/net.h"
#include "nvme/target/internal.h"
#include "nvme/target/tcp_connection.h"

namespace blkcopy::nvme {

Port::~Port() {
  if (fd >= 0) ::close(fd);
}

Result<std::shared_ptr<Port>> TargetImpl::listen_on(const PortConfig& pc) {
  auto l = tcp_listen(pc.addr, pc.port, 1024);
  if (!l) return std::unexpected(l.error());
  auto port = std::make_shared<Port>();
  port->cfg = pc;
  port->fd = l->fd;
  port->bound = l->port;
  accept_on(port);
  return port;
}

void TargetImpl::accept_on(std::shared_ptr<Port> port) {
  const int fd = port->fd;
  home_.accept(fd, [this, port](int res) {
    if (stopping_ || port->removed) {
      if (res >= 0) ::close(res);
      return;  // a removed port's listener closes with the last holder
    }
    if (res < 0) {
      // Out of descriptors or memory: wait before trying again (never spin); other errors
      // concern only the connection that failed.
      if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        accept_backoff_ = std::clamp(accept_backoff_ * 2, std::chrono::milliseconds(10),
                                     std::chrono::milliseconds(1000));
        log_refusal(Refusal::connections, fmt::format("cannot accept connections: {}; retrying in {} ms",
                                std::strerror(-res), accept_backoff_.count()));
        std::erase_if(accept_timers_, [](const Timer& t) { return !t.armed(); });
        accept_timers_.push_back(home_.after(accept_backoff_, [this, port] {
          if (!port->removed) accept_on(port);
        }));
        return;
      }
      return accept_on(port);
    }
    accept_backoff_ = std::chrono::milliseconds(0);
    serve_socket(res, port->cfg.tls, port);
    accept_on(port);
  });
}

void TargetImpl::serve_socket(int fd, PortTls tls, const std::shared_ptr<Port>& port) {
  if (stopping_ || open_connections_ >= cfg_.limits.max_connections) {
    ++stats_.refused;
    log_refusal(Refusal::connections, fmt::format("refusing connections: {} open, the limit (--max-connections)",
                            cfg_.limits.max_connections));
    ::close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ++stats_.connections;
  ++open_connections_;
  const unsigned index = static_cast<unsigned>(next_worker_++ % workers_.size());
  Worker& w = *workers_[index];
  std::weak_ptr<Port> via = port;
  const bool from_port = port != nullptr;
  if (w.owned) {
    w.loop->post_remote([this, &w, index, fd, tls, via, from_port] { adopt(w, index, fd, tls, via, from_port); });
  } else {
    adopt(w, index, fd, tls, via, from_port);
  }
}

// At most one line a second about refused connections, however many there are.
void TargetImpl::log_refusal(Refusal kind, const std::string& what) {
  std::atomic<int64_t>& at = last_refusal_log_[static_cast<int>(kind)];
  const int64_t now = Clock::now().time_since_epoch().count();
  int64_t last = at.load();
  if (now - last < 1'000'000'000 || !at.compare_exchange_strong(last, now)) return;
  log_warning(what);
}

void TargetImpl::adopt(Worker& w, unsigned index, int fd, PortTls tls, std::weak_ptr<Port> port,
                       bool from_port) {
  if (stopping_) {
    ::close(fd);
    --open_connections_;
    return;
  }
  sockaddr_storage local{}, peer{};
  socklen_t len = sizeof local, peer_len = sizeof peer;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len);
  w.conns.push_back(std::make_unique<TcpConnection>(
      *this, index, *w.loop, fd, address_of(reinterpret_cast<sockaddr*>(&local)).host,
      address_of(reinterpret_cast<sockaddr*>(&peer)).host, tls));
  w.conns.back()->came_from(std::move(port), from_port);
  // A connection that has ended is freed soon after, on its loop, not only at the next tick.
  w.conns.back()->on_finished = [this, &w] { w.loop->post([this, &w] { reap(w); }); };
  w.conns.back()->start();
}

// Four times a second on every loop: close connections whose peer stalls, whose answers do not
// drain or whose keep-alive stopped, or whose port was removed; send the asynchronous events
// that wait; free closed ones (and, on the target's loop, namespaces no request holds).
void TargetImpl::tick(Worker& w) {
  const auto now = Clock::now();
  const int64_t ns = now.time_since_epoch().count();
  for (auto& c : w.conns) {
    if (c->closing()) {
      c->cut_if_stuck(now);
      continue;
    }
    bool undrained = false;
    if (std::string why = c->stalled(now, undrained); !why.empty()) {
      ++(undrained ? stats_.undrained : stats_.stalled);
      c->close(why);
      continue;
    }
    if (c->port_removed()) {
      c->close("its port was removed");
      continue;
    }
    Controller* ctrl = c->controller();
    if (!ctrl) continue;
    c->send_events();
    if (ctrl->gone) {
      c->close(ctrl->disconnected ? "disconnected by the operator (ctl disconnect)"
                                  : "its controller's admin queue has gone");
    } else if (ctrl->kato_ms && ns - ctrl->last_seen > int64_t(ctrl->kato_ms) * 2'000'000) {
      c->close("keep-alive timeout");
    }
  }
  reap(w);
  if (&w == workers_[0].get()) free_retired();
  if (!stopping_) w.tick = w.loop->after(std::chrono::milliseconds(250), [this, &w] { tick(w); });
}

void TargetImpl::reap(Worker& w) {
  const size_t before = w.conns.size();
  std::erase_if(w.conns, [](const auto& c) { return c->finished(); });
  open_connections_ -= static_cast<unsigned>(before - w.conns.size());
}

}  // namespace blkcopy::nvme
