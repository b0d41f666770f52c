// blkcopy discover HOST[:PORT]: what an NVMe/TCP discovery controller offers.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/host/controller.h"
#include "nvme/host/nvme_tcp_device.h"
#include "nvme/host/queue.h"
#include "nvme/tcp/tls_session.h"
#include "tools/commands.h"

namespace blkcopy::tools {
namespace {

// Most records read from a discovery log: the log comes from the network, so its count is
// bounded before it sizes a buffer.
constexpr uint64_t kMaxRecords = 1024;

// "required", "not required" or "" (TREQ bits 1:0) and TSAS's security type, as one word.
std::string secure_channel(std::span<const uint8_t> e) {
  const uint8_t treq = e[nvme::disc::kTreq] & 3, sectype = e[nvme::disc::kTsas];
  const char* kind = sectype == 2 ? "TLS 1.3" : sectype == 1 ? "TLS 1.2" : "a secure channel";
  if (treq == 1) return fmt::format(", {} required", kind);
  if (treq == 2 && sectype) return fmt::format(", {} offered", kind);
  return "";
}

std::string at_raw(const std::string& addr, const std::string& svc) {
  return addr.find(':') != std::string::npos ? "[" + addr + "]:" + svc : addr + ":" + svc;
}

// The namespaces a subsystem has (Identify, active namespace ID list), asked through a
// controller of its own: `spec` is a device string without "nvme-tcp:".
Result<std::vector<uint32_t>> active_namespaces(EventLoop& loop, const std::string& spec) {
  auto cfg = nvme::parse_nvme_tcp_config(spec);
  if (!cfg) return std::unexpected(cfg.error());
  auto ctrl = nvme::NvmeTcpController::open(loop, *cfg);
  if (!ctrl) return std::unexpected(ctrl.error());
  std::vector<uint8_t> list(4096);
  nvme::Sqe id{};
  id.opcode = nvme::admin::kIdentify;
  id.cdw10 = nvme::kCnsActiveNsList;
  auto r = (*ctrl)->admin_->run_sync(id, nullptr, list.data(), 4096);
  if (!r) return std::unexpected(r.error());
  if ((r->status >> 1) & 0x7FF) return fail(EIO, fmt::format("Identify: status {:#05x}", (r->status >> 1) & 0x7FF));
  std::vector<uint32_t> out;
  for (size_t off = 0; off + 4 <= list.size(); off += 4) {
    const uint32_t nsid = nvme::get<uint32_t>(std::span<const uint8_t>(list), off);
    if (nsid == 0) break;
    out.push_back(nsid);
  }
  if (out.empty()) return fail(ENOENT, "the subsystem has no namespace");
  return out;
}

int run_discover(const std::string& where, std::string hostnqn, uint32_t timeout_ms,
                 const std::string& tls_key, const std::string& tls_key_file, bool json_out) {
  auto hp = parse_host_port(where, "discover", 8009);
  if (!hp) return report_error(kBadInput, hp.error().message());
  const bool given_nqn = !hostnqn.empty();
  if (hostnqn.empty()) hostnqn = nvme::default_host_nqn();
  if (Status s = nvme::check_nqn(hostnqn, "--hostnqn"); !s.ok()) return report_error(kBadInput, s.message());
  const std::string host = hp->host;
  const uint16_t port = hp->port;
  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  nvme::QueueOptions qo;
  qo.connect_timeout_ms = qo.timeout_ms = timeout_ms;
  if (!tls_key.empty() || !tls_key_file.empty()) {
    auto text = tls_key_file.empty() ? Result<std::string>(tls_key) : read_secret_file(tls_key_file);
    if (!text) return report_error(kBadInput, fmt::format("--tls-key-file: {}", text.error().message()));
    auto key = nvme::auth::parse_tls_key(*text);
    if (!key) return report_error(kBadInput, key.error().message());
    auto psk = nvme::TlsSession::psk_for(*key, hostnqn, nvme::kDiscoveryNqn);
    if (!psk) return report_error(kBadInput, psk.error().message());
    qo.tls = std::move(*psk);
  }
  auto q = nvme::HostQueue::open(**loop, host, port, qo);
  if (!q) return report_error(kIoError, q.error().message());
  auto run = [&](nvme::Sqe sqe, const void* out, void* in, uint32_t len) -> Result<nvme::Cqe> {
    auto r = (*q)->run_sync(sqe, out, in, len);
    if (r && ((r->status >> 1) & 0x7FF)) {
      return fail(EIO, fmt::format("status {:#05x}", (r->status >> 1) & 0x7FF));
    }
    return r;
  };
  const auto data = nvme::connect_data(0xFFFF, nvme::kDiscoveryNqn, hostnqn);
  if (auto r = run(nvme::connect_command(0, 31, 0), data.data(), nullptr, nvme::kConnectDataSize);
      !r) {
    return report_error(kIoError, fmt::format("{}: discovery Connect: {}", where, r.error().message()));
  }
  // The log: header first for the number of records, then all of it.
  auto get_log = [&](uint32_t len, std::vector<uint8_t>& out) {
    out.assign(len, 0);
    nvme::Sqe sqe{};
    sqe.opcode = nvme::admin::kGetLogPage;
    const uint32_t numd = len / 4 - 1;
    sqe.cdw10 = nvme::kLogDiscovery | ((numd & 0xFFFF) << 16);
    sqe.cdw11 = numd >> 16;
    return run(sqe, nullptr, out.data(), len);
  };
  std::vector<uint8_t> log;
  if (auto r = get_log(nvme::kDiscHeaderSize, log); !r) {
    return report_error(kIoError, fmt::format("{}: discovery log: {}", where, r.error().message()));
  }
  const uint64_t records = nvme::get<uint64_t>(std::span<const uint8_t>(log), 8);
  if (records > kMaxRecords) {
    return report_error(kIoError, fmt::format("{}: the discovery log claims {} records; at most {} "
                                              "are read",
                                              where, records, kMaxRecords));
  }
  if (auto r = get_log(static_cast<uint32_t>(nvme::kDiscHeaderSize + records * nvme::kDiscEntrySize), log); !r) {
    return report_error(kIoError, fmt::format("{}: discovery log: {}", where, r.error().message()));
  }
  const uint64_t genctr = nvme::get<uint64_t>(std::span<const uint8_t>(log), 0);
  nlohmann::ordered_json out = {{"genctr", genctr}, {"records", nlohmann::ordered_json::array()}};
  if (!json_out) {
    fmt::print("{} record{} at {} (generation {})\n", records, records == 1 ? "" : "s",
               format_host_port(host, port), genctr);
  }
  for (uint64_t i = 0; i < records; ++i) {
    std::span<const uint8_t> e(log.data() + nvme::kDiscHeaderSize + i * nvme::kDiscEntrySize,
                               nvme::kDiscEntrySize);
    auto field = [&](size_t off, size_t len) {
      std::string s(reinterpret_cast<const char*>(e.data() + off), len);
      s.erase(s.find_last_not_of(std::string(" \0", 2)) + 1);
      return s;
    };
    const std::string raw_addr = field(nvme::disc::kTraddr, 256), raw_svc = field(nvme::disc::kTrsvcid, 32);
    const std::string raw_nqn = nvme::get_nqn(e, nvme::disc::kSubnqn);
    // The target's strings, printed escaped: a newline or terminal escape in them forges nothing.
    const std::string addr = printable(raw_addr), svc = printable(raw_svc), nqn = printable(raw_nqn);
    const std::string at = addr.find(':') != std::string::npos ? "[" + addr + "]:" + svc : addr + ":" + svc;
    // The host NQN given, and the key for a port that requires TLS, or that offers it to a host
    // that has a key (such a host may not come in clear text). FILE stands for a key given
    // inline, which is never printed.
    std::string key = given_nqn ? "&hostnqn=" + hostnqn : "";
    const bool has_key = !tls_key.empty() || !tls_key_file.empty();
    const uint8_t treq = e[nvme::disc::kTreq] & 3, subtype = e[nvme::disc::kSubtype];
    const bool keyed = treq == 1 || (has_key && treq == 2 && e[nvme::disc::kTsas] == 2);
    if (keyed) key += "&tls_key_file=" + (tls_key_file.empty() ? std::string("FILE") : tls_key_file);
    // One device string per namespace the subsystem has (Identify active NS list), where this
    // host may connect to ask; otherwise ns=1 and why it could not be asked.
    std::vector<uint32_t> nsids;
    std::string why_not;
    if (subtype == 2) {
      std::string spec = fmt::format("//{}/{}?hostnqn={}&connect_timeout={}", at_raw(raw_addr, raw_svc),
                                     raw_nqn, hostnqn, timeout_ms);
      if (keyed && has_key) spec += tls_key_file.empty() ? "&tls_key=" + tls_key : "&tls_key_file=" + tls_key_file;
      auto listed = active_namespaces(**loop, spec);
      if (listed) {
        nsids = std::move(*listed);
      } else {
        why_not = listed.error().message();
      }
    }
    const uint16_t portid = nvme::get<uint16_t>(e, nvme::disc::kPortid);
    std::vector<std::string> strings;
    for (uint32_t id : nsids.empty() ? std::vector<uint32_t>{1} : nsids) {
      strings.push_back(fmt::format("nvme-tcp://{}/{}?ns={}{}", at, nqn, id, key));
    }
    if (json_out) {
      nlohmann::ordered_json r = {{"trtype", e[nvme::disc::kTrtype] == 3 ? "tcp" : std::to_string(e[nvme::disc::kTrtype])},
                                  {"adrfam", e[nvme::disc::kAdrfam] == 2 ? "ipv6" : "ipv4"},
                                  {"subtype", subtype == 2 ? "nvme subsystem"
                                              : subtype == 3 ? "current discovery subsystem"
                                                             : "discovery subsystem"},
                                  {"treq", treq == 1 ? "required" : treq == 2 ? "not required" : "not specified"},
                                  {"portid", portid},
                                  {"trsvcid", svc},
                                  {"subnqn", nqn},
                                  {"traddr", addr},
                                  {"eflags", nvme::get<uint16_t>(e, nvme::disc::kEflags)},
                                  {"sectype", e[nvme::disc::kTsas] == 2 ? "tls13" : e[nvme::disc::kTsas] == 1 ? "tls12" : "none"}};
      if (subtype == 2) {
        r["device_strings"] = strings;
        if (!why_not.empty()) r["namespaces_not_listed"] = printable(why_not);
      }
      out["records"].push_back(std::move(r));
      continue;
    }
    fmt::print("  {} at {} (port id {}{})\n", nqn, at, portid, secure_channel(e));
    if (subtype != 2) continue;
    for (const std::string& d : strings) fmt::print("    device string: {}\n", d);
    if (!why_not.empty()) fmt::print("    (namespaces not listed: {})\n", printable(why_not));
  }
  if (json_out) fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  return kOk;
}

}  // namespace

void add_discover_command(CLI::App& app, int& exit_code) {
  struct Args {
    std::string where;
    std::string hostnqn;  // default: /etc/nvme/hostnqn, as nvme-cli
    uint32_t timeout_ms = 10000;
    std::string tls_key, tls_key_file;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("discover", "List what an NVMe/TCP discovery controller offers");
  cmd->add_option("HOST[:PORT]", a->where, "discovery controller (port 8009 by default)")->required();
  cmd->add_option("--hostnqn", a->hostnqn, "the host NQN to present (default: /etc/nvme/hostnqn)");
  cmd->add_option("--connect-timeout", a->timeout_ms,
                  "milliseconds for the TCP connect, the handshake and each command (default 10000)")
      ->check(CLI::Range(1u, 600000u));
  auto* key = cmd->add_option("--tls-key", a->tls_key,
                              "TLS 1.3 with this PSK (NVMeTLSkey-1:..:, 'nvme gen-tls-key')");
  cmd->add_option("--tls-key-file", a->tls_key_file, "TLS 1.3 with the PSK in this file")
      ->excludes(key);
  cmd->add_flag("--json", a->json, "print the log as JSON, with nvme-cli's field names and each "
                "subsystem's device strings");
  cmd->callback([a, &exit_code] {
    exit_code = run_discover(a->where, a->hostnqn, a->timeout_ms, a->tls_key, a->tls_key_file, a->json);
  });
}

}  // namespace blkcopy::tools
