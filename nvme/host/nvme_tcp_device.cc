#include "nvme/host/nvme_tcp_device.h"

#include <blkcopy/units.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cctype>
#include <charconv>
#include <fstream>
#include <cstring>
#include <map>
#include <type_traits>
#include <optional>

#include "block/fanout.h"
#include "core/checked.h"
#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/copy_ranges.h"
#include "nvme/host/controller.h"
#include "nvme/host/queue.h"
#include "nvme/namespace.h"

namespace blkcopy::nvme {

namespace {
// A whole decimal number within [lo, hi].
template <class T>
bool number(std::string_view v, T& out, std::type_identity_t<T> lo, std::type_identity_t<T> hi) {
  T n{};
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) return false;
  out = n;
  return true;
}
}  // namespace

Result<NvmeTcpConfig> parse_nvme_tcp_config(std::string_view spec) {
  NvmeTcpConfig c;
  auto bad = [&](const std::string& why) {
    return fail(EINVAL, fmt::format("nvme-tcp:{}: {} (expected nvme-tcp://HOST:PORT/NQN?ns=N)",
                                    redact_secrets(std::string(spec)), why));
  };
  if (!spec.starts_with("//")) return bad("missing //");
  std::string_view rest = spec.substr(2);
  const size_t slash = rest.find('/');
  if (slash == rest.npos) return bad("missing /SUBSYSTEM_NQN");
  std::string_view hostport = rest.substr(0, slash);
  rest = rest.substr(slash + 1);
  auto hp = parse_host_port(hostport, "nvme-tcp", 4420);
  if (!hp) return bad(hp.error().message());
  c.host = hp->host;
  c.port = hp->port;
  const size_t q = rest.find('?');
  c.subnqn = std::string(rest.substr(0, q));
  if (c.subnqn.empty()) return bad("missing subsystem NQN");
  if (q == rest.npos) {
    c.hostnqn = default_host_nqn();
    return c;
  }
  std::string_view opts = rest.substr(q + 1);
  bool libnvme1 = false;
  for (size_t at = 0; at <= opts.size();) {
    const size_t amp = std::min(opts.find('&', at), opts.size());
    std::string_view kv = opts.substr(at, amp - at);
    at = amp + 1;
    const size_t eq = kv.find('=');
    std::string_view k = kv.substr(0, eq), v = eq == kv.npos ? "" : kv.substr(eq + 1);
    if (k == "ns") {
      if (!number(v, c.nsid, 1u, 0xFFFFFFFEu)) return bad("ns must be a namespace ID >= 1");
    } else if (k == "hostnqn") {
      c.hostnqn = std::string(v);
      if (Status st = check_nqn(c.hostnqn, "hostnqn"); !st.ok()) return bad(st.message());
    } else if (k == "digest") {
      c.header_digest = v.find("header") != v.npos;
      c.data_digest = v.find("data") != v.npos;
    } else if (k == "kato") {
      if (!number(v, c.kato_ms, 0, 3'600'000)) return bad("kato must be 0 to 3600000 ms");
    } else if (k == "timeout") {
      if (!number(v, c.timeout_ms, 0, 3'600'000)) return bad("timeout must be 0 to 3600000 ms");
    } else if (k == "connect_timeout") {
      if (!number(v, c.connect_timeout_ms, 1, 600'000)) {
        return bad("connect_timeout must be 1 to 600000 ms");
      }
    } else if (k == "queues") {
      if (!number(v, c.queues, 1, 8)) return bad("queues must be 1 to 8");
    } else if (k == "reconnect") {
      if (!number(v, c.reconnect, 0, 1000)) return bad("reconnect must be 0 to 1000");
    } else if (k == "depth") {
      if (!number(v, c.depth, 2, 128)) return bad("depth must be 2 to 128");
    } else if (k == "dhchap_secret" || k == "dhchap_ctrl_secret" || k == "dhchap_secret_file" ||
               k == "dhchap_ctrl_secret_file" || k == "tls_key" || k == "tls_key_file") {
      std::string text(v);
      if (k.ends_with("_file")) {
        std::ifstream in{std::string(v)};
        if (!in || !std::getline(in, text)) return bad(fmt::format("{}: cannot read '{}'", k, v));
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
      }
      if (k.starts_with("tls_key")) {
        if (c.tls_key) return bad("give one of tls_key and tls_key_file");
        auto key = auth::parse_tls_key(text);
        if (!key) return fail(EINVAL, fmt::format("nvme-tcp: {}: {}", k, key.error().message()));
        c.tls_key = *key;
        continue;
      }
      auto secret = auth::parse_secret(text);
      if (!secret) return bad(fmt::format("{}: {}", k, secret.error().message()));
      (k.starts_with("dhchap_ctrl") ? c.dhchap_ctrl_secret : c.dhchap_secret) = *secret;
    } else if (k == "dhchap_dhgroup") {
      c.dhchap_dhgroups.clear();
      for (size_t from = 0; from <= v.size();) {
        const size_t comma = std::min(v.find(',', from), v.size());
        auto g = auth::parse_dhgroup(v.substr(from, comma - from));
        if (!g) return bad(fmt::format("dhchap_dhgroup: {}", g.error().message()));
        c.dhchap_dhgroups.push_back(*g);
        from = comma + 1;
      }
    } else if (k == "tls_libnvme1") {
      libnvme1 = true;
    } else if (k == "ktls") {
      if (v != "on" && v != "off") return bad("ktls must be on or off");
      c.kernel_tls = v == "on";
    } else if (k == "ro") {
      c.read_only = true;
    } else if (!k.empty()) {
      return bad(fmt::format("unknown option '{}' (ns, hostnqn, digest, kato, timeout, queues, "
                             "connect_timeout, depth, reconnect, ro, dhchap_secret, "
                             "dhchap_ctrl_secret, dhchap_secret_file, dhchap_ctrl_secret_file, "
                             "dhchap_dhgroup, tls_key, tls_key_file, tls_libnvme1, ktls)",
                             k));
    }
  }
  if (c.hostnqn.empty()) c.hostnqn = default_host_nqn();
  if (libnvme1 && !c.tls_key) return bad("tls_libnvme1 goes with tls_key or tls_key_file");
  if (c.tls_key) c.tls_key->libnvme1 = libnvme1;
  return c;
}


// The device string with inline secrets' values replaced by "***": the name appears in reports,
// JSON and logs, which are not the place for a DH-HMAC-CHAP key.
std::string redact_secrets(std::string name) {
  for (const char* key : {"dhchap_secret=", "dhchap_ctrl_secret=", "tls_key="}) {
    for (size_t at = name.find(key); at != std::string::npos; at = name.find(key, at)) {
      if (at > 0 && name[at - 1] != '?' && name[at - 1] != '&') {  // the end of another key
        at += std::strlen(key);
        continue;
      }
      const size_t from = at + std::strlen(key);
      const size_t end = std::min(name.find('&', from), name.size());
      name.replace(from, end - from, "***");
      at = from + 3;
    }
  }
  return name;
}

Result<std::unique_ptr<NvmeTcpDevice>> NvmeTcpDevice::create(EventLoop& loop, std::string name,
                                                             const NvmeTcpConfig& cfg) {
  auto ctrl = NvmeTcpController::open(loop, cfg);
  if (!ctrl) return std::unexpected(ctrl.error());
  std::unique_ptr<NvmeTcpDevice> dev(new NvmeTcpDevice(loop, redact_secrets(std::move(name))));
  dev->ctrl_ = *ctrl;
  dev->nsid_ = cfg.nsid;
  std::vector<uint8_t> id(4096);
  Sqe ident{};
  ident.opcode = admin::kIdentify;
  ident.nsid = cfg.nsid;
  ident.cdw10 = kCnsNamespace;
  auto r = dev->ctrl_->admin_->run_sync(ident, nullptr, id.data(), 4096);
  const std::string label = fmt::format("{}: namespace {}", dev->ctrl_->label(), cfg.nsid);
  if (!r || code_of(*r)) return fail(ENODEV, label + " not found");
  auto g = parse_identify_namespace(id, label);
  if (!g) return std::unexpected(g.error());
  dev->lbs_ = g->block_size;
  dev->geo_ = *g;
  fill_limits(dev->limits_, *g, dev->ctrl_->caps, dev->ctrl_->max_io);
  dev->limits_.read_only = cfg.read_only;
  return dev;
}

NvmeTcpDevice::~NvmeTcpDevice() = default;

bool NvmeTcpDevice::same_copy_domain(const Device& other) const {
  auto* o = dynamic_cast<const NvmeTcpDevice*>(&other);
  return o && o->ctrl_ == ctrl_ && ctrl_->copy && (o->nsid_ == nsid_ || ctrl_->format2);
}

bool NvmeTcpDevice::same_storage(const Device& other) const {
  auto* o = dynamic_cast<const NvmeTcpDevice*>(&other);
  return o && o->ctrl_ == ctrl_ && o->nsid_ == nsid_;
}

void NvmeTcpDevice::copy_report(std::function<void(Result<TargetCopyReport>)> done) {
  auto page = std::make_shared<std::vector<uint8_t>>(kCopyReportSize);
  Sqe sqe{};
  sqe.opcode = admin::kGetLogPage;
  sqe.nsid = nsid_;
  sqe.cdw10 = kLogCopyReport | (uint32_t(kCopyReportSize / 4 - 1) << 16);
  auto answered = [page, done, label = label_](Status s, const Cqe& cqe) {
    if (!s.ok()) return done(std::unexpected(std::move(s)));
    if (const uint16_t code = (cqe.status >> 1) & 0x7FF; code != 0) {
      return done(fail(ENOTSUP, fmt::format("{}: the target keeps no copy report (log page C0h: {})",
                                            *label, status_text(code))));
    }
    auto r = decode_copy_report(*page);
    if (!r) return done(fail(ENOTSUP, fmt::format("{}: log page C0h is not blkcopy's copy report", *label)));
    done(std::move(*r));
  };
  Status s = ctrl_->admin_ && !ctrl_->admin_->failed()
                 ? ctrl_->admin_->submit(sqe, nullptr, page->data(), kCopyReportSize, answered)
                 : Status::error(ECONNRESET, fmt::format("{}: the admin queue is not connected", name()));
  if (!s.ok()) loop().post([done, s] { done(std::unexpected(s)); });
}

std::optional<Device::WireCounters> NvmeTcpDevice::wire_counters() const {
  return WireCounters{ctrl_->bytes_sent(), ctrl_->bytes_received()};
}

namespace {

// Gives the command's context back before its completion runs (which may send the next).
Completion give_back(HostIo& io, std::shared_ptr<const std::string>& label) {
  Completion done = std::move(io.done);
  label = std::move(io.label);
  io.pool->put(io);
  return done;
}

void end_command(HostIo& io, Status s, const Cqe& c) {
  const char* op = io.op;
  std::shared_ptr<const std::string> label;
  Completion done = give_back(io, label);
  if (s.ok() && code_of(c) == 0) return done(Status());
  done(to_status(s, c, fmt::format("{} {}", *label, op)));  // the text only for an error
}

// A status saying the controller cannot take the Copy (nvme::copy_not_supported) leaves it to
// be emulated; any other failure, a malformed Copy included, is the copy's.
void end_copy(HostIo& io, Status st, const Cqe& c) {
  CopyReport* report = io.report;
  const uint64_t len = io.length;
  std::shared_ptr<const std::string> label;
  Completion done = give_back(io, label);
  if (st.ok() && copy_not_supported(code_of(c))) {
    report->none(len, fmt::format("{} copy: NVMe status {:#05x} ({})", *label, code_of(c),
                                  status_text(code_of(c))));
    return done(Status());
  }
  if (st.ok() && code_of(c) == 0) return done(Status());
  done(to_status(st, c, fmt::format("{} copy", *label)));
}

}  // namespace

HostIo& NvmeTcpDevice::start(Completion done, const char* op,
                             void (*end)(HostIo&, Status, const Cqe&)) {
  HostIo& io = ctrl_->ios.take();
  io.done = std::move(done);
  io.label = label_;
  io.op = op;
  io.end = end;
  return io;
}

void NvmeTcpDevice::command(uint8_t opcode, uint64_t lba, uint32_t blocks, void* buf, bool out,
                            Completion done) {
  Sqe sqe{};
  sqe.opcode = opcode;
  sqe.nsid = nsid_;
  sqe.cdw10 = static_cast<uint32_t>(lba);
  sqe.cdw11 = static_cast<uint32_t>(lba >> 32);
  sqe.cdw12 = blocks - 1;
  const uint32_t len = buf ? blocks * lbs_ : 0;
  const char* op = opcode == io::kRead ? "read" : opcode == io::kWrite ? "write" : "write zeroes";
  send(sqe, out ? buf : nullptr, out ? nullptr : buf, len, start(std::move(done), op, end_command));
}

void NvmeTcpDevice::send(const Sqe& sqe, const void* out, void* in, uint32_t len, HostIo& io) {
  Status s = ctrl_->submit_io(sqe, out, in, len, [&io](Status st, const Cqe& c) { io.end(io, st, c); });
  if (s.ok()) return;
  // A queue that has failed refuses at once: the command completes with why, later (from a
  // task that holds what it needs, should the controller go first).
  std::shared_ptr<const std::string> label;
  const char* op = io.op;
  Completion done = give_back(io, label);
  loop().post([done = std::move(done), s = to_status(s, Cqe{}, fmt::format("{} {}", *label, op))] {
    done(s);
  });
}

bool NvmeTcpDevice::supports(Op op) const {
  switch (op) {
    case Op::write_zeroes: return ctrl_->caps.oncs & idctrl::kOncsWriteZeroes;
    case Op::discard: return ctrl_->caps.oncs & idctrl::kOncsDsm;
    default: return Device::supports(op);
  }
}

void NvmeTcpDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
  if (!supports(req.op)) {
    return complete_later(std::move(done),
                          Status::error(EOPNOTSUPP, fmt::format("{}: the controller has no {}",
                                                                name(), op_name(req.op))));
  }
  const uint64_t lba = req.offset / lbs_;
  switch (req.op) {
    case Op::read:
      return command(io::kRead, lba, static_cast<uint32_t>(req.length / lbs_), req.buf, false,
                     std::move(done));
    case Op::write:
      return command(io::kWrite, lba, static_cast<uint32_t>(req.length / lbs_), req.buf, true,
                     std::move(done));
    case Op::flush: {
      Sqe sqe{};
      sqe.opcode = io::kFlush;
      sqe.nsid = nsid_;
      return send(sqe, nullptr, nullptr, 0, start(std::move(done), "flush", end_command));
    }
    case Op::write_zeroes: {
      // At most 65536 blocks a command: one command per stretch.
      Fanout* f = Fanout::start(loop(), std::move(done));
      for (uint64_t at = 0; at < req.length / lbs_;) {
        const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(65536, req.length / lbs_ - at));
        command(io::kWriteZeroes, lba + at, n, nullptr, false, f->part());
        at += n;
      }
      return f->submitted();
    }
    case Op::discard: {
      HostIo& io = start(std::move(done), "deallocate", end_command);
      io.payload.assign(16, 0);
      const uint32_t nlb = static_cast<uint32_t>(req.length / lbs_);
      std::memcpy(io.payload.data() + 4, &nlb, 4);
      std::memcpy(io.payload.data() + 8, &lba, 8);
      Sqe sqe{};
      sqe.opcode = io::kDsm;
      sqe.nsid = nsid_;
      sqe.cdw10 = 0;         // one range
      sqe.cdw11 = 1u << 2;   // deallocate
      return send(sqe, io.payload.data(), nullptr, 16, io);
    }
    case Op::copy: return copy(req, std::move(done));
  }
}

// One Copy command: every source leg becomes a range entry (format 0 when all are in this
// namespace, format 2 otherwise); the data moves on the target, never over the wire.
void NvmeTcpDevice::copy(const Request& req, Completion done) {
  const CopyDesc& desc = *req.copy;
  bool local = true;
  for (const CopySegment& s : desc.sources) {
    if (!same_copy_domain(*s.dev)) {
      return not_offloaded(req, std::move(done), name() + ": copy from outside this subsystem");
    }
    local &= static_cast<const NvmeTcpDevice*>(s.dev)->nsid_ == nsid_;
  }
  HostIo& io = start(std::move(done), "copy", end_copy);
  io.report = req.report;
  io.length = desc.dst.length;
  io.sources.clear();
  for (const CopySegment& s : desc.sources) {
    const auto* src = static_cast<const NvmeTcpDevice*>(s.dev);
    io.sources.push_back({src->nsid_, s.offset / src->lbs_, static_cast<uint32_t>(s.length / src->lbs_)});
  }
  encode_copy_ranges(io.sources, local ? 0 : 2, io.payload);
  Sqe sqe{};
  sqe.opcode = io::kCopy;
  sqe.nsid = nsid_;
  const uint64_t sdlba = desc.dst.offset / lbs_;
  sqe.cdw10 = static_cast<uint32_t>(sdlba);
  sqe.cdw11 = static_cast<uint32_t>(sdlba >> 32);
  sqe.cdw12 = static_cast<uint32_t>(desc.sources.size() - 1) | ((local ? 0u : 2u) << 8);
  send(sqe, io.payload.data(), nullptr, static_cast<uint32_t>(io.payload.size()), io);
}

DeviceInfo NvmeTcpDevice::describe() const {
  DeviceInfo info{"nvme-tcp", name(), "", {}, {}};
  info.copy_method = ctrl_->copy ? fmt::format("NVMe Copy on the target (format 0{})",
                                               ctrl_->format2 ? "; format 2 across namespaces" : "")
                                 : "none: the controller has no Copy (copies are emulated)";
  if (ctrl_->copy) info.offloaded_by = "the controller, as Copy commands (the data never crossed the network)";
  info.details.emplace_back("controller", fmt::format("{} (cntlid {})", ctrl_->label(), ctrl_->cntlid));
  info.details.emplace_back("namespace", std::to_string(nsid_));
  describe_identify(info, geo_, ctrl_->caps);
  return info;
}

}  // namespace blkcopy::nvme
