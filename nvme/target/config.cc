// nvmetcli's JSON, read strictly: every key is either honoured, accepted because its value is
// what blkcopy does anyway, or an error naming its JSON path. A typo must not silently serve
// nothing, and a configuration that asks for security must not be served without it.
#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <tuple>

#include "core/net.h"
#include "nvme/codec.h"
#include "nvme/target/auth.h"
#include <blkcopy/target.h>
#include <blkcopy/units.h>

namespace blkcopy::nvme {
namespace {

using nlohmann::json;

struct ConfigError {
  std::string path, message;
};

// Where the walk is, what it has read, and what to do with keys it does not know.
class Walk {
 public:
  Walk(bool lenient, std::vector<std::string>* warnings) : lenient_(lenient), warnings_(warnings) {}

  // A value blkcopy takes but does not act on, where that is harmless: one line, never an error.
  void note(const std::string& path, const std::string& what) {
    if (warnings_) warnings_->push_back(fmt::format("nvmetcli JSON: {}: {}", path, what));
  }
  // A key blkcopy does not read: an error, or a warning when lenient.
  void unused(const std::string& path, const std::string& why) {
    if (!lenient_) throw ConfigError{path, why + " (--lenient skips it with a warning)"};
    if (warnings_) warnings_->push_back(fmt::format("nvmetcli JSON: {}: {}; skipped", path, why));
  }

 private:
  bool lenient_;
  std::vector<std::string>* warnings_;
};

// One JSON object: keys are taken one by one, and finish() reports the ones nobody took.
class Obj {
 public:
  Obj(Walk& w, const json& j, std::string path) : w_(w), j_(j), path_(std::move(path)) {
    if (!j.is_object()) throw ConfigError{path_, fmt::format("expected an object, got {}", j.type_name())};
  }
  std::string at(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const json* get(const std::string& key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  const json& need(const std::string& key) {
    const json* v = get(key);
    if (!v) throw ConfigError{at(key), "missing"};
    return *v;
  }
  std::string str(const std::string& key, std::string def = {}) {
    const json* v = get(key);
    if (!v) return def;
    if (!v->is_string()) throw ConfigError{at(key), fmt::format("expected a string, got {}", v->type_name())};
    return v->get<std::string>();
  }
  // A number, written as a number or as a string of digits (nvmetcli writes attrs as strings).
  uint64_t num(const std::string& key, uint64_t def, uint64_t lo, uint64_t hi) {
    const json* v = get(key);
    if (!v) return def;
    uint64_t n = 0;
    bool ok = false;
    if (v->is_number_unsigned()) {
      n = v->get<uint64_t>();
      ok = true;
    } else if (v->is_string()) {
      const std::string s = v->get<std::string>();
      const int base = s.starts_with("0x") ? 16 : 10;
      const char* b = s.data() + (base == 16 ? 2 : 0);
      auto [end, ec] = std::from_chars(b, s.data() + s.size(), n, base);
      ok = ec == std::errc() && end == s.data() + s.size() && end != b;
    }
    if (!ok || n < lo || n > hi) {
      throw ConfigError{at(key), fmt::format("expected a number from {} to {}, got {}", lo, hi, v->dump())};
    }
    return n;
  }
  bool flag(const std::string& key, bool def) { return num(key, def ? 1 : 0, 0, 1) != 0; }
  // A byte count: a number, or a string with a size suffix ("512M").
  uint64_t bytes(const std::string& key, uint64_t def) {
    const json* v = get(key);
    if (!v) return def;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_string()) {
      if (auto n = parse_size(v->get<std::string>())) return *n;
    }
    throw ConfigError{at(key), fmt::format("expected a size such as 512M, got {}", v->dump())};
  }
  const json& array(const std::string& key) {
    static const json empty = json::array();
    const json* v = get(key);
    if (!v) return empty;
    if (!v->is_array()) throw ConfigError{at(key), fmt::format("expected an array, got {}", v->type_name())};
    return *v;
  }
  // A key blkcopy accepts only at the value it behaves as anyway.
  void only(const std::string& key, std::initializer_list<std::string_view> values,
            const std::string& why) {
    const json* v = get(key);
    if (!v) return;
    const std::string s = v->is_string() ? v->get<std::string>() : v->dump();
    for (auto ok : values) {
      if (s == ok) return;
    }
    w_.unused(at(key), fmt::format("{} is not supported: {}", s, why));
  }
  // A value taken with a note when present (nvmetcli saves every attribute configfs has).
  void noted(const std::string& key, const std::string& what) {
    if (const json* v = get(key)) {
      w_.note(at(key), fmt::format("'{}' noted only ({})", v->is_string() ? v->get<std::string>() : v->dump(), what));
    }
  }
  void finish() {
    for (auto& [k, v] : j_.items()) {
      if (!seen_.count(k)) w_.unused(at(k), "unknown key");
    }
  }
  Walk& walk() { return w_; }

 private:
  Walk& w_;
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

std::string item(const std::string& path, size_t i) { return fmt::format("{}[{}]", path, i); }

std::vector<std::string> strings(Obj& o, const std::string& key) {
  std::vector<std::string> out;
  const json& a = o.array(key);
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_string()) throw ConfigError{item(o.at(key), i), "expected a string"};
    out.push_back(a[i].get<std::string>());
  }
  return out;
}

HostConfig read_host(Obj& h) {
  HostConfig hc;
  hc.nqn = h.str("nqn");
  if (Status st = check_nqn(hc.nqn, h.at("nqn")); !st.ok()) throw ConfigError{h.at("nqn"), st.message()};
  for (const char* flat : {"dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup"}) {
    if (h.get(flat)) {
      throw ConfigError{h.at(flat), fmt::format("write it as {} (the configfs attribute group "
                                                "'dhchap' as an object: key, ctrl_key, hash, "
                                                "dhgroup)",
                                                h.at(std::string("dhchap.") + (flat + 7)))};
    }
  }
  if (const json* d = h.get("dhchap")) {
    // nvmetcli saves every dhchap attribute, empty ones too: a host without a key has
    // {} (Linux 6.1) or "key": "" (6.12), and then no authentication.
    Obj a(h.walk(), *d, h.at("dhchap"));
    hc.key = a.str("key");
    hc.ctrl_key = a.str("ctrl_key");
    if (hc.key.empty() && !hc.ctrl_key.empty()) {
      throw ConfigError{a.at("key"), "missing (a ctrl_key needs the host's DHHC-1 secret too)"};
    }
    if (hc.key.empty() && (a.str("hash", "hmac(sha256)") != "hmac(sha256)" ||
                           a.str("dhgroup", "null") != "null")) {
      h.walk().note(a.at("key"), "empty: this host does not authenticate (its hash and dhgroup "
                                 "are unused)");
    }
    hc.hash = a.str("hash", hc.hash);
    hc.dhgroup = a.str("dhgroup", hc.dhgroup);
    a.finish();
  }
  hc.tls_key = h.str("tls_key");
  h.finish();
  return hc;
}

NamespaceConfig read_namespace(Obj& n) {
  NamespaceConfig nc;
  nc.nsid = static_cast<uint32_t>(n.num("nsid", 0, 1, 0xFFFFFFFE));
  if (!n.get("nsid")) throw ConfigError{n.at("nsid"), "missing"};
  nc.enable = n.flag("enable", true);
  Obj d(n.walk(), n.need("device"), n.at("device"));
  nc.device = d.str("path");
  if (nc.device.empty()) throw ConfigError{d.at("path"), "missing"};
  nc.nguid = d.str("nguid");
  nc.uuid = d.str("uuid");
  d.finish();
  n.only("ana_grpid", {"1"}, "blkcopy has one ANA group, 1");
  if (const json* a = n.get("ana")) {  // newer nvmetcli: the ana attribute group
    Obj ana(n.walk(), *a, n.at("ana"));
    ana.only("grpid", {"1"}, "blkcopy has one ANA group, 1");
    ana.finish();
  }
  if (const json* r = n.get("resv")) {
    Obj resv(n.walk(), *r, n.at("resv"));
    resv.only("enable", {"0"}, "reservations are not served");
    resv.finish();
  }
  n.finish();
  return nc;
}

SubsystemConfig read_subsystem(Obj& s) {
  SubsystemConfig sc;
  sc.nqn = s.str("nqn");
  if (sc.nqn.empty()) throw ConfigError{s.at("nqn"), "missing"};
  sc.allowed_hosts = strings(s, "allowed_hosts");
  // Linux nvmet's default: a subsystem admits only its allowed_hosts unless allow_any_host is 1.
  sc.allow_any_host = false;
  if (const json* a = s.get("attr")) {
    Obj attr(s.walk(), *a, s.at("attr"));
    sc.allow_any_host = attr.flag("allow_any_host", false);
    sc.serial = attr.str("serial");
    sc.model = attr.str("model", sc.model);
    sc.cntlid_min = static_cast<uint16_t>(attr.num("cntlid_min", sc.cntlid_min, 1, 0xFFEF));
    sc.cntlid_max = static_cast<uint16_t>(attr.num("cntlid_max", sc.cntlid_max, 1, 0xFFEF));
    if (sc.cntlid_min > sc.cntlid_max) {
      throw ConfigError{attr.at("cntlid_min"), fmt::format("{} is above cntlid_max {}",
                                                           sc.cntlid_min, sc.cntlid_max)};
    }
    // Linux's default is 128; blkcopy grants at most 8 I/O queues (a host asks, then uses what
    // Set Features Number of Queues grants).
    const uint64_t qid_max = attr.num("qid_max", sc.qid_max, 1, 65535);
    if (qid_max > 8) {
      attr.walk().note(attr.at("qid_max"), fmt::format("'{}' taken as 8 (blkcopy grants at most 8 I/O "
                                                       "queues per controller)",
                                                       qid_max));
    }
    sc.qid_max = static_cast<uint16_t>(std::min<uint64_t>(qid_max, 8));
    attr.only("pi_enable", {"0"}, "protection information is not served");
    attr.noted("firmware", "Identify reports blkcopy's own firmware revision");
    attr.noted("ieee_oui", "Identify reports blkcopy's own IEEE OUI");
    attr.noted("version", "the controller reports the NVMe version blkcopy implements");
    attr.finish();
  }
  // Passthrough, as Linux 6.12's nvmetcli saves it when unused: no device. A configured one
  // would hand a whole controller to hosts, which blkcopy does not do.
  const json& pt = s.array("passthru");
  for (size_t i = 0; i < pt.size(); ++i) {
    Obj p(s.walk(), pt[i], item(s.at("passthru"), i));
    if (const json* d = p.get("device")) {
      Obj dev(p.walk(), *d, p.at("device"));
      dev.only("path", {"(null)", ""}, "NVMe passthrough is not served");
      dev.finish();
    }
    p.only("enable", {"0"}, "NVMe passthrough is not served");
    for (const char* k : {"admin_timeout", "io_timeout", "clear_ids"}) p.get(k);  // of no use unused
    p.finish();
  }
  const json& ns = s.array("namespaces");
  for (size_t i = 0; i < ns.size(); ++i) {
    Obj n(s.walk(), ns[i], item(s.at("namespaces"), i));
    sc.namespaces.push_back(read_namespace(n));
  }
  s.finish();
  return sc;
}

// `index`: its place in the file; a port without a portid gets index + 1.
PortConfig read_port(Obj& p, size_t index) {
  PortConfig pc;
  pc.id = static_cast<uint16_t>(p.num("portid", std::min<size_t>(index + 1, 0xFFFF), 1, 0xFFFF));
  Obj addr(p.walk(), p.need("addr"), p.at("addr"));
  const std::string trtype = addr.str("trtype", "tcp");
  if (trtype != "tcp") {
    throw ConfigError{addr.at("trtype"), fmt::format("'{}': only tcp is served", trtype)};
  }
  pc.addr = addr.str("traddr", pc.addr);
  const std::string adrfam = addr.str("adrfam", pc.addr.find(':') != std::string::npos ? "ipv6" : "ipv4");
  if (adrfam != "ipv4" && adrfam != "ipv6") {
    throw ConfigError{addr.at("adrfam"), fmt::format("'{}': expected ipv4 or ipv6", adrfam)};
  }
  if ((adrfam == "ipv6") != (pc.addr.find(':') != std::string::npos)) {
    throw ConfigError{addr.at("traddr"), fmt::format("'{}' is not an {} address", pc.addr, adrfam)};
  }
  const std::string svc = addr.str("trsvcid", "4420");
  auto port = parse_port(svc, addr.at("trsvcid"));
  if (!port) throw ConfigError{addr.at("trsvcid"), fmt::format("'{}' is not a port from 1 to 65535", svc)};
  pc.port = *port;
  // TLS: tsas "tls1.3" offers it; treq "not required" lets clear-text hosts in too (as in
  // Linux nvmet, tls1.3 alone means required).
  const std::string tsas = addr.str("tsas", "none"), treq = addr.str("treq", "not specified");
  if (tsas != "none" && tsas != "tls1.3") {
    throw ConfigError{addr.at("tsas"), fmt::format("'{}': expected none or tls1.3", tsas)};
  }
  if (treq != "not specified" && treq != "required" && treq != "not required") {
    throw ConfigError{addr.at("treq"), fmt::format("'{}': expected not specified, required or not "
                                                   "required", treq)};
  }
  if (tsas == "none" && treq == "required") {
    throw ConfigError{addr.at("treq"), "'required' needs addr.tsas \"tls1.3\" (the only secure "
                                       "channel served)"};
  }
  if (tsas == "tls1.3") pc.tls = treq == "not required" ? PortTls::optional : PortTls::required;
  addr.finish();
  pc.subsystems = strings(p, "subsystems");
  if (const json* par = p.get("param")) {
    Obj param(p.walk(), *par, p.at("param"));
    param.only("pi_enable", {"0"}, "protection information is not served");
    param.noted("inline_data_size", "blkcopy takes 8192 bytes in a command capsule; hosts "
                                    "learn it from Identify");
    param.noted("max_queue_size", "blkcopy's queues hold 128 commands; hosts learn it from "
                                  "CAP.MQES");
    param.finish();
  }
  if (!p.array("referrals").empty()) {
    p.walk().unused(p.at("referrals"), "discovery referrals are not supported");
  }
  const json& ana = p.array("ana_groups");
  for (size_t i = 0; i < ana.size(); ++i) {
    Obj g(p.walk(), ana[i], item(p.at("ana_groups"), i));
    g.only("grpid", {"1"}, "blkcopy has one ANA group, 1");
    if (const json* st = g.get("ana")) {
      Obj a(p.walk(), *st, g.at("ana"));
      a.only("state", {"optimized"}, "the one ANA group is optimized");
      a.finish();
    }
    g.finish();
  }
  p.finish();
  return pc;
}

}  // namespace

Result<TargetConfig> parse_nvmetcli_json(std::string_view text, bool lenient,
                                         std::vector<std::string>* warnings) {
  TargetConfig cfg;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return fail(EINVAL, fmt::format("nvmetcli JSON: {}", e.what()));
  }
  try {
    Walk w(lenient, warnings);
    Obj root(w, j, "");
    const json& hosts = root.array("hosts");
    for (size_t i = 0; i < hosts.size(); ++i) {
      Obj h(w, hosts[i], item("hosts", i));
      HostConfig hc = read_host(h);
      if (!hc.key.empty() || !hc.tls_key.empty()) cfg.hosts.push_back(hc);
    }
    const json& subs = root.array("subsystems");
    for (size_t i = 0; i < subs.size(); ++i) {
      Obj s(w, subs[i], item("subsystems", i));
      cfg.subsystems.push_back(read_subsystem(s));
      const SubsystemConfig& sc = cfg.subsystems.back();
      if (warnings && !sc.allow_any_host && sc.allowed_hosts.empty()) {
        warnings->push_back(fmt::format("{}: no host may connect (allowed_hosts is empty and "
                                        "attr.allow_any_host is not 1, as in Linux nvmet)",
                                        item("subsystems", i)));
      }
    }
    const json& ports = root.array("ports");
    for (size_t i = 0; i < ports.size(); ++i) {
      Obj p(w, ports[i], item("ports", i));
      cfg.ports.push_back(read_port(p, i));
    }
    // The discovery subsystem's NQN (Linux 6.x's discovery_nqn): only the standard one.
    if (const json* d = root.get("discovery")) {
      Obj disc(w, *d, "discovery");
      disc.only("nqn", {std::string(kDiscoveryNqn)}, "blkcopy's discovery subsystem is the "
                                                     "standard one");
      disc.finish();
    }
    // What nvmetcli has no word for: what peers may cost (TargetLimits).
    if (const json* b = root.get("blkcopy")) {
      Obj o(w, *b, "blkcopy");
      TargetLimits& l = cfg.limits;
      l.data_budget = o.bytes("data_budget", l.data_budget);
      l.copy_budget = o.bytes("copy_budget", l.copy_budget);
      l.drain_ms = static_cast<unsigned>(o.num("drain_ms", l.drain_ms, 100, 3'600'000));
      l.max_connections =
          static_cast<unsigned>(o.num("max_connections", l.max_connections, 1, 1'000'000));
      cfg.discovery_port = static_cast<uint16_t>(o.num("discovery_port", cfg.discovery_port, 0, 65535));
      o.finish();
    }
    root.finish();
  } catch (const ConfigError& e) {
    return fail(EINVAL, fmt::format("nvmetcli JSON: {}: {}", e.path, e.message));
  }
  if (Status s = validate(cfg); !s.ok()) {
    return fail(EINVAL, fmt::format("nvmetcli JSON: {}", s.message()));
  }
  return cfg;
}

}  // namespace blkcopy::nvme
