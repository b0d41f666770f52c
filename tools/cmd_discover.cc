// blkcopy discover HOST[:PORT]: what an NVMe/TCP discovery controller offers.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include <cstring>
#include <tuple>
#include <nlohmann/json.hpp>

#include "core/net.h"
#include "nvme/auth/dhchap.h"
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

// Error messages may quote a device string with an inline key: never shown.
std::string redact(const std::string& message) { return nvme::redact_secrets(message); }

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

// The keys discover was given, as device-string options: inline ones to connect with, files
// (or FILE for an inline key, which is never printed) for the device strings it prints.
struct Keys {
  std::string tls_key, tls_key_file, dhchap_secret, dhchap_secret_file, dhchap_ctrl_secret,
      dhchap_ctrl_secret_file;
  bool tls() const { return !tls_key.empty() || !tls_key_file.empty(); }
  std::string options(bool with_tls, bool printed) const {
    std::string o;
    auto add = [&](const char* name, const std::string& inline_value, const std::string& file) {
      if (!file.empty()) {
        o += fmt::format("&{}_file={}", name, file);
      } else if (!inline_value.empty()) {
        o += printed ? fmt::format("&{}_file=FILE", name) : fmt::format("&{}={}", name, inline_value);
      }
    };
    add("dhchap_secret", dhchap_secret, dhchap_secret_file);
    add("dhchap_ctrl_secret", dhchap_ctrl_secret, dhchap_ctrl_secret_file);
    if (with_tls) add("tls_key", tls_key, tls_key_file);
    return o;
  }
};

int run_discover(const std::string& where, std::string hostnqn, uint32_t timeout_ms,
                 const Keys& keys, bool json_out) {
  auto hp = parse_host_port(where, "discover", 8009);
  if (!hp) return report_error(kBadInput, hp.error().message());
  const bool given_nqn = !hostnqn.empty();
  if (hostnqn.empty()) hostnqn = nvme::default_host_nqn();
  if (Status s = nvme::check_nqn(hostnqn, "--hostnqn"); !s.ok()) return report_error(kBadInput, s.message());
  const std::string host = hp->host;
  const uint16_t port = hp->port;
  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  // Each key read and checked here first, so that an error names its flag.
  for (const auto& [flag, text, file, tls] :
       {std::tuple{"--tls-key", keys.tls_key, keys.tls_key_file, true},
        {"--dhchap-secret", keys.dhchap_secret, keys.dhchap_secret_file, false},
        {"--dhchap-ctrl-secret", keys.dhchap_ctrl_secret, keys.dhchap_ctrl_secret_file, false}}) {
    if (text.empty() && file.empty()) continue;
    auto value = file.empty() ? Result<std::string>(text) : read_secret_file(file);
    if (!value) return report_error(kBadInput, fmt::format("{}-file: {}", flag, value.error().message()));
    Status ok;
    if (tls) {
      if (auto k = nvme::auth::parse_tls_key(*value); !k) ok = k.error();
    } else if (auto k = nvme::auth::parse_secret(*value); !k) {
      ok = k.error();
    }
    if (!ok.ok()) return report_error(kBadInput, fmt::format("{}: {}", flag, ok.message()));
  }
  // The discovery controller, as any other: DH-HMAC-CHAP and TLS as device strings have them.
  const std::string spec = fmt::format("//{}/{}?hostnqn={}&connect_timeout={}&timeout={}{}",
                                       format_host_port(host, port), nvme::kDiscoveryNqn, hostnqn,
                                       timeout_ms, timeout_ms, keys.options(keys.tls(), false));
  auto dcfg = nvme::parse_nvme_tcp_config(spec);
  if (!dcfg) return report_error(kBadInput, redact(dcfg.error().message()));
  auto ctrl = nvme::NvmeTcpController::open(**loop, *dcfg);
  if (!ctrl) {
    return report_error(open_exit_code("nvme-tcp://", ctrl.error()),
                        fmt::format("{}: discovery: {}", where, redact(ctrl.error().message())));
  }
  auto run = [&](nvme::Sqe sqe, const void* out, void* in, uint32_t len) -> Result<nvme::Cqe> {
    auto r = (*ctrl)->admin_->run_sync(sqe, out, in, len);
    if (r && ((r->status >> 1) & 0x7FF)) {
      return fail(EIO, fmt::format("status {:#05x}", (r->status >> 1) & 0x7FF));
    }
    return r;
  };
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
    if (records == 0) {
      fmt::print("  (the log lists only the subsystems that admit host {}: another --hostnqn?)\n",
                 printable(hostnqn));
    }
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
    const uint8_t treq = e[nvme::disc::kTreq] & 3, subtype = e[nvme::disc::kSubtype];
    const bool keyed = treq == 1 || (keys.tls() && treq == 2 && e[nvme::disc::kTsas] == 2);
    std::string key = (given_nqn ? "&hostnqn=" + hostnqn : "") + keys.options(keyed, true);
    if (keyed && !keys.tls()) key += "&tls_key_file=FILE";
    // One device string per namespace the subsystem has (Identify active NS list), where this
    // host may connect to ask; otherwise ns=1 and why it could not be asked.
    std::vector<uint32_t> nsids;
    std::string why_not;
    if (subtype == 2) {
      const std::string sub = fmt::format("//{}/{}?hostnqn={}&connect_timeout={}{}", at_raw(raw_addr, raw_svc),
                                          raw_nqn, hostnqn, timeout_ms, keys.options(keyed, false));
      auto listed = active_namespaces(**loop, sub);
      if (listed) {
        nsids = std::move(*listed);
      } else {
        why_not = redact(listed.error().message());
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
    Keys keys;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("discover", "List what an NVMe/TCP discovery controller offers");
  cmd->add_option("HOST[:PORT]", a->where, "discovery controller (port 8009 by default)")->required();
  cmd->add_option("--hostnqn", a->hostnqn, "the host NQN to present (default: /etc/nvme/hostnqn)");
  cmd->add_option("--connect-timeout", a->timeout_ms,
                  "milliseconds for the TCP connect, the handshake and each command (default 10000)")
      ->check(CLI::Range(1u, 600000u));
  auto* key = cmd->add_option("--tls-key", a->keys.tls_key,
                              "TLS 1.3 with this PSK (NVMeTLSkey-1:..:, 'nvme gen-tls-key')");
  cmd->add_option("--tls-key-file", a->keys.tls_key_file, "TLS 1.3 with the PSK in this file")
      ->excludes(key);
  auto* dh = cmd->add_option("--dhchap-secret", a->keys.dhchap_secret,
                             "DH-HMAC-CHAP with this host secret (DHHC-1:..:), for the discovery "
                             "controller and the subsystems it lists");
  cmd->add_option("--dhchap-secret-file", a->keys.dhchap_secret_file, "the host secret from this file")
      ->excludes(dh);
  auto* dhc = cmd->add_option("--dhchap-ctrl-secret", a->keys.dhchap_ctrl_secret,
                              "check the controllers with this secret too (bidirectional)");
  cmd->add_option("--dhchap-ctrl-secret-file", a->keys.dhchap_ctrl_secret_file,
                  "the controller secret from this file")
      ->excludes(dhc);
  cmd->add_flag("--json", a->json, "print the log as JSON, with nvme-cli's field names and each "
                "subsystem's device strings");
  cmd->callback([a, &exit_code] {
    exit_code = run_discover(a->where, a->hostnqn, a->timeout_ms, a->keys, a->json);
  });
}

}  // namespace blkcopy::tools
