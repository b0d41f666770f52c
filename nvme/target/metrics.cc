// The metrics endpoint (`serve --metrics ADDR:PORT`): Prometheus' text format over HTTP
// (GET /metrics), from the counters of counters.h, the target's statistics and its budgets.
// Names follow Prometheus' conventions: blkcopy_ prefix, _total for counters, seconds and bytes.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/net.h"
#include "nvme/spec.h"
#include "nvme/target/internal.h"
#include "nvme/target/queue.h"
#include "nvme/target/request.h"

namespace blkcopy::nvme {

const char* op_kind_name(OpKind k) {
  static constexpr const char* kNames[] = {"read", "write", "copy", "flush", "write_zeroes",
                                           "discard", "admin"};
  return kNames[static_cast<size_t>(k)];
}

void LatencyHistogram::add(uint64_t us) {
  size_t i = 0;
  while (i < kUpperUs.size() && us > kUpperUs[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(us, std::memory_order_relaxed);
}

void TargetCounters::error(uint16_t status) {
  std::lock_guard lock(mu_);
  ++errors_[status];
}

std::map<uint16_t, uint64_t> TargetCounters::errors() const {
  std::lock_guard lock(mu_);
  return errors_;
}

namespace {

// A label value, quoted and escaped as the text format wants (backslash, quote, newline).
std::string label(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

void histogram(std::string& out, const std::string& labels, const LatencyHistogram& h) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    cumulative += h.buckets[i].load(std::memory_order_relaxed);
    const std::string le = i < LatencyHistogram::kUpperUs.size()
                               ? fmt::format("{}", LatencyHistogram::kUpperUs[i] / 1e6)
                               : std::string("+Inf");
    out += fmt::format("blkcopy_command_latency_seconds_bucket{{{},le=\"{}\"}} {}\n", labels, le, cumulative);
  }
  out += fmt::format("blkcopy_command_latency_seconds_sum{{{}}} {}\n", labels, h.sum_us.load() / 1e6);
  out += fmt::format("blkcopy_command_latency_seconds_count{{{}}} {}\n", labels, cumulative);
}

void help(std::string& out, const char* name, const char* type, const char* text) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, text, name, type);
}

// GET /metrics, answered and closed; a request head over 8 KiB is refused.
class HttpSession final : public SocketServer::Session {
 public:
  explicit HttpSession(TargetImpl& t) : t_(t) {}
  bool on_input(std::string& in, std::string& out) override {
    const size_t end = in.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (in.size() <= 8192) return true;
      out = reply("431 Request Header Fields Too Large", "text/plain", "request head too large\n");
      return false;
    }
    const std::string line = in.substr(0, in.find("\r\n"));
    in.clear();
    if (!line.starts_with("GET ")) {
      out = reply("405 Method Not Allowed", "text/plain", "GET /metrics\n");
    } else if (line.starts_with("GET /metrics ") || line == "GET /metrics") {
      out = reply("200 OK", "text/plain; version=0.0.4; charset=utf-8", t_.prometheus());
    } else {
      out = reply("404 Not Found", "text/plain", "GET /metrics\n");
    }
    return false;
  }

 private:
  static std::string reply(const char* status, const char* type, const std::string& body) {
    return fmt::format("HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                       status, type, body.size(), body);
  }
  TargetImpl& t_;
};

}  // namespace

void TargetImpl::count(const TargetQueue& q, const TargetRequest& r, uint16_t status) {
  const bool admin = q.session.qid == 0 || r.sqe.opcode == admin::kFabrics;
  if (status) counters_.error(status);
  OpCounters* c = nullptr;
  uint64_t bytes = 0;
  if (admin) {
    c = &counters_.admin;
  } else if (r.ns) {
    OpKind k;
    switch (r.sqe.opcode) {
      case io::kRead: k = OpKind::read; bytes = r.data_len; break;
      case io::kWrite: k = OpKind::write; bytes = r.data_len; break;
      case io::kCopy: {
        k = OpKind::copy;
        bytes = r.copy_result.offloaded_bytes + r.copy_result.emulated_bytes;
        r.ns->counters->copy_offloaded_bytes += r.copy_result.offloaded_bytes;
        r.ns->counters->copy_emulated_bytes += r.copy_result.emulated_bytes;
        break;
      }
      case io::kFlush: k = OpKind::flush; break;
      case io::kWriteZeroes: k = OpKind::write_zeroes; bytes = uint64_t((r.sqe.cdw12 & 0xFFFF) + 1) * r.ns->lbs; break;
      case io::kDsm: k = OpKind::discard; break;
      default: return;
    }
    c = &r.ns->counters->ops[static_cast<size_t>(k)];
  }
  if (!c) return;
  c->commands.fetch_add(1, std::memory_order_relaxed);
  if (status) {
    c->errors.fetch_add(1, std::memory_order_relaxed);
  } else {
    c->bytes.fetch_add(bytes, std::memory_order_relaxed);
  }
  if (r.started != Clock::time_point{}) {
    c->latency.add(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - r.started).count()));
  }
}

std::string TargetImpl::prometheus() {
  std::string out;
  help(out, "blkcopy_commands_total", "counter", "Commands completed, by subsystem, namespace and kind.");
  std::string bytes, errors, lat, copy;
  for (const auto& s : subsystems_.all()) {
    const std::string& nqn = s->cfg.nqn;
    for (const auto& n : s->namespaces()) {
      const uint32_t nsid = n->nsid;
      for (size_t k = 0; k < kIoKinds; ++k) {
        const OpCounters& c = n->counters->ops[k];
        const std::string l = fmt::format("subsystem={},nsid=\"{}\",op=\"{}\"", label(nqn), nsid,
                                          op_kind_name(static_cast<OpKind>(k)));
        out += fmt::format("blkcopy_commands_total{{{}}} {}\n", l, c.commands.load());
        bytes += fmt::format("blkcopy_bytes_total{{{}}} {}\n", l, c.bytes.load());
        errors += fmt::format("blkcopy_command_errors_total{{{}}} {}\n", l, c.errors.load());
        histogram(lat, l, c.latency);
      }
      const std::string l = fmt::format("subsystem={},nsid=\"{}\"", label(nqn), nsid);
      copy += fmt::format("blkcopy_copy_bytes_total{{{},how=\"offloaded\"}} {}\n", l,
                          n->counters->copy_offloaded_bytes.load());
      copy += fmt::format("blkcopy_copy_bytes_total{{{},how=\"emulated\"}} {}\n", l,
                          n->counters->copy_emulated_bytes.load());
    }
  }
  const OpCounters& a = counters_.admin;
  out += fmt::format("blkcopy_commands_total{{op=\"admin\"}} {}\n", a.commands.load());
  help(out, "blkcopy_bytes_total", "counter", "Bytes read, written or copied, by namespace and kind.");
  out += bytes;
  help(out, "blkcopy_command_errors_total", "counter", "Commands that ended with an error status.");
  out += errors;
  out += fmt::format("blkcopy_command_errors_total{{op=\"admin\"}} {}\n", a.errors.load());
  help(out, "blkcopy_copy_bytes_total", "counter",
       "Bytes of Copy commands by how the target did them: offloaded to the device or emulated.");
  out += copy;
  help(out, "blkcopy_command_latency_seconds", "histogram", "Command latency inside the target.");
  out += lat;
  histogram(out, "op=\"admin\"", a.latency);
  help(out, "blkcopy_errors_by_status_total", "counter", "Error completions by status field (SCT, SC, DNR).");
  for (const auto& [st, n] : counters_.errors()) {
    out += fmt::format("blkcopy_errors_by_status_total{{status=\"{:#06x}\"}} {}\n", st, n);
  }
  const TargetStats t = stats();
  size_t controllers = 0;
  for (const auto& s : subsystems_.all()) controllers += subsystems_.controllers(s.get()).size();
  struct Value {
    const char* name;
    const char* type;
    const char* text;
    uint64_t v;
  };
  const Value values[] = {
      {"blkcopy_connections_open", "gauge", "NVMe/TCP connections open now.", t.open_connections},
      {"blkcopy_controllers", "gauge", "Controllers of the subsystems now.", controllers},
      {"blkcopy_data_budget_used_bytes", "gauge", "Data buffers of all connections now.", t.data_budget_used},
      {"blkcopy_data_budget_limit_bytes", "gauge", "The data budget (--data-budget).", cfg_.limits.data_budget},
      {"blkcopy_copy_budget_used_bytes", "gauge", "Buffers of emulated Copies now.", t.copy_budget_used},
      {"blkcopy_copy_budget_limit_bytes", "gauge", "The copy budget (--copy-budget).", cfg_.limits.copy_budget},
      {"blkcopy_connections_total", "counter", "Connections accepted.", t.connections},
      {"blkcopy_connections_refused_total", "counter", "Connections closed at once: over --max-connections.",
       t.refused_connections},
      {"blkcopy_connections_stalled_total", "counter", "Connections closed for stalling.", t.stalled_connections},
      {"blkcopy_connections_undrained_total", "counter", "Connections closed: answers not taken within drain_ms.",
       t.undrained_connections},
      {"blkcopy_auth_failures_total", "counter", "Failed DH-HMAC-CHAP authentications.",
       counters_.auth_failures.load()},
      {"blkcopy_budget_waits_total", "counter", "Commands that waited for room in a budget.", t.budget_waits}};
  for (const Value& v : values) {
    help(out, v.name, v.type, v.text);
    out += fmt::format("{} {}\n", v.name, v.v);
  }
  return out;
}

Result<uint16_t> TargetImpl::serve_metrics(const std::string& addr, uint16_t port) {
  auto l = tcp_listen(addr, port, 16);
  if (!l) return std::unexpected(l.error());
  metrics_on_ = true;
  metrics_ = SocketServer::start(home_, l->fd, fmt::format("metrics {}", format_host_port(addr, l->port)),
                                 {16, std::chrono::seconds(10)},
                                 [this] { return std::make_unique<HttpSession>(*this); });
  return l->port;
}

}  // namespace blkcopy::nvme
