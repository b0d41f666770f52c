// The control socket of a running target and `blkcopy ctl` on it: JSON-RPC errors for bad
// requests, list showing a connected host's controller, disconnect ending it, save writing
// nvmetcli JSON that reads back to the same configuration, and what a client may cost.
#include <gtest/gtest.h>

#include <blkcopy/open.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "nvme/target/control_server.h"
#include "tests/scripted_target.h"
#include "nvme/codec.h"
#include "tests/served_target.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using nlohmann::json;
using namespace nvme;

const std::string kSub = "nqn.2024-01.io.blkcopy:ctl";
const std::string kHost = "nqn.2024-01.io.blkcopy:ctl-host";

TargetConfig config() {
  TargetConfig cfg;
  cfg.discovery_port = 0;
  cfg.ports.push_back({1, "127.0.0.1", 0, {kSub}, PortTls::none});
  cfg.subsystems.push_back({kSub, true, {}, {{1, "mem:8M,seed=3", "", true}}});
  return cfg;
}

// A connected Unix socket to `path`, or -1.
int dial(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{20, 0};  // a generous limit for each answer
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends `text` and reads one answer line ("" when the server closed first).
std::string ask(int fd, const std::string& text) {
  // A send cut short (the server ended the connection) still leaves its answer to read.
  for (size_t off = 0; off < text.size();) {
    const ssize_t n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string in;
  char c;
  for (ssize_t r; (r = ::recv(fd, &c, 1, 0)) == 1 || (r < 0 && errno == EINTR);) {
    if (r < 0) continue;
    if (c == '\n') return in;
    in += c;
  }
  return "";
}

TEST(ControlServer, BadRequestsGetJsonRpcErrors) {
  auto loop = test::make_loop();
  test::TempDir dir;
  std::map<std::string, ControlServer::Method> m;
  m["echo"] = [](const json& p) -> Result<json> { return p; };
  m["missing"] = [](const json&) -> Result<json> { return fail(ENOENT, "no such thing"); };
  m["picky"] = [](const json& p) -> Result<json> { return json(p.at("n").get<int>()); };
  auto s = ControlServer::listen(*loop, (dir.path() / "c.sock").string(), m).value();
  auto code = [&](const std::string& line) { return json::parse(s->answer(line))["error"]["code"]; };
  EXPECT_EQ(code("{not json"), -32700);
  EXPECT_EQ(code("[1,2]"), -32600);
  EXPECT_EQ(code(R"({"jsonrpc":"1.0","method":"echo","id":1})"), -32600);
  EXPECT_EQ(code(R"({"jsonrpc":"2.0","id":1})"), -32600);
  EXPECT_EQ(code(R"({"jsonrpc":"2.0","method":"echo","id":[1]})"), -32600);
  EXPECT_EQ(code(R"({"jsonrpc":"2.0","method":"echo","params":[1],"id":1})"), -32602);
  EXPECT_EQ(code(R"({"jsonrpc":"2.0","method":"picky","params":{"n":"x"},"id":1})"), -32602);
  const json unknown = json::parse(s->answer(R"({"jsonrpc":"2.0","method":"nope","id":7})"));
  EXPECT_EQ(unknown["error"]["code"], -32601);
  EXPECT_EQ(unknown["id"], 7);
  EXPECT_NE(unknown["error"]["message"].get<std::string>().find("echo, missing, picky"), std::string::npos);
  const json missing = json::parse(s->answer(R"({"jsonrpc":"2.0","method":"missing","id":"a"})"));
  EXPECT_EQ(missing["error"]["code"], -32000);
  EXPECT_EQ(missing["error"]["data"], "ENOENT");
  EXPECT_EQ(missing["id"], "a");
  const json ok = json::parse(s->answer(R"({"jsonrpc":"2.0","method":"echo","params":{"x":5},"id":2})"));
  EXPECT_EQ(ok["result"]["x"], 5);
  EXPECT_EQ(ok["id"], 2);
  // From the attack review: bytes that are not UTF-8, and nesting deep enough to recurse off
  // the stack, get errors (not a crash); a notification (no id) gets no answer.
  EXPECT_EQ(code("\xff"), -32700);
  EXPECT_EQ(code(R"({"jsonrpc":"2.0","method":"echo","params":{"s":")" "\xff" R"("},"id":1})"), -32700);
  const std::string deep = R"({"jsonrpc":"2.0","method":"echo","id":)" + std::string(100000, '[') +
                           std::string(100000, ']') + "}";
  EXPECT_EQ(code(deep), -32600);
  EXPECT_EQ(s->answer(R"({"jsonrpc":"2.0","method":"echo","params":{}})"), "");
}

// The socket: mode 0600; one that answers is not taken over, a stale one is, a file is not; a
// line over the limit is answered with an error and the client closed; clients beyond the
// limit are closed at once.
TEST(ControlServer, TheSocketIsPrivateAndBoundsItsClients) {
  test::TempDir dir;
  const std::string path = (dir.path() / "sub" / "c.sock").string();
  test::Served t(config(), path);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loop = test::make_loop();
  auto again = ControlServer::listen(*loop, path, {});
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("another server answers"), std::string::npos);
  const std::string file = (dir.path() / "plain").string();
  std::ofstream(file) << "x";
  auto not_socket = ControlServer::listen(*loop, file, {});
  ASSERT_FALSE(not_socket);
  EXPECT_NE(not_socket.error().message().find("not a socket"), std::string::npos);

  const int fd = dial(path);
  ASSERT_GE(fd, 0);
  const json err = json::parse(ask(fd, std::string(ControlServer::kMostLine + 10, 'x')));
  EXPECT_EQ(err["error"]["code"], -32600);
  EXPECT_EQ(ask(fd, ""), "") << "closed after the error";
  ::close(fd);

  std::vector<int> fds;
  for (size_t i = 0; i < ControlServer::kMostClients; ++i) {
    fds.push_back(dial(path));
    ASSERT_GE(fds.back(), 0);
    // Each is served (so it counts before the next one comes).
    ASSERT_NE(ask(fds.back(), R"({"jsonrpc":"2.0","method":"stats","id":1})" "\n"), "");
  }
  const int extra = dial(path);
  ASSERT_GE(extra, 0);
  EXPECT_EQ(ask(extra, R"({"jsonrpc":"2.0","method":"stats","id":1})" "\n"), "")
      << "a client beyond the limit is closed";
  ::close(extra);
  for (int f : fds) ::close(f);
}

TEST(ControlServer, AStaleSocketIsReplaced) {
  test::TempDir dir;
  const std::string path = (dir.path() / "c.sock").string();
  {
    auto loop = test::make_loop();
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);  // a socket file nobody listens on: a server that died
    auto s = ControlServer::listen(*loop, path, {});
    ASSERT_TRUE(s) << s.error().message();
  }
}

// `blkcopy ctl` against a target with a connected host.
TEST(Ctl, ListShowsAHostsControllerAndDisconnectEndsIt) {
  test::TempDir dir;
  const std::string sock = (dir.path() / "c.sock").string();
  test::Served t(config(), sock);
  auto loop = test::make_loop();
  auto dev = open_device(*loop, fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1&hostnqn={}", t.port(), kSub, kHost));
  ASSERT_TRUE(dev) << dev.error().message();
  const auto list = test::run_cli({"ctl", "--socket", sock, "--json", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const json l = json::parse(list.out);
  ASSERT_EQ(l["subsystems"].size(), 1u);
  const json& s = l["subsystems"][0];
  EXPECT_EQ(s["nqn"], kSub);
  EXPECT_EQ(s["namespaces"][0]["bytes"], 8u << 20);
  ASSERT_EQ(s["controllers"].size(), 1u) << list.out;
  const json& c = s["controllers"][0];
  EXPECT_EQ(c["hostnqn"], kHost);
  EXPECT_EQ(c["address"], "127.0.0.1");
  EXPECT_EQ(c["io_queues"], json::array({1}));
  EXPECT_EQ(c["tls"], false);
  EXPECT_EQ(l["ports"][0]["port"], t.port());
  const auto text = test::run_cli({"ctl", "--socket", sock, "list"});
  EXPECT_NE(text.out.find("host " + kHost + " at 127.0.0.1"), std::string::npos) << text.out;

  const auto gone = test::run_cli({"ctl", "--socket", sock, "disconnect", kSub, "999"});
  EXPECT_EQ(gone.exit_code, 2);
  EXPECT_NE(gone.err.find("no controller 999 in " + kSub), std::string::npos) << gone.err;
  const auto d = test::run_cli({"ctl", "--socket", sock, "disconnect", kSub, std::to_string(c["cntlid"].get<int>())});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_NE(d.out.find("disconnected"), std::string::npos);
  // The host's I/O fails once its queues are closed (within a tick; waited for, not timed).
  EXPECT_TRUE(test::eventually([&] { return !copy(**dev, 0, **dev, 1 << 20, 4096).status.ok(); }))
      << "the host still reaches its controller";
  const json after = json::parse(test::run_cli({"ctl", "--socket", sock, "--json", "list"}).out);
  EXPECT_TRUE(after["subsystems"][0]["controllers"].empty()) << after.dump();
}

TEST(Ctl, SaveWritesNvmetcliJsonThatReadsBackAndStatsAreNumbers) {
  test::TempDir dir;
  const std::string sock = (dir.path() / "c.sock").string();
  TargetConfig cfg = config();
  cfg.subsystems[0].allow_any_host = false;
  cfg.subsystems[0].allowed_hosts = {kHost};
  HostConfig h;
  h.nqn = kHost;
  h.tls_key = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
  cfg.hosts.push_back(h);
  cfg.ports[0].tls = PortTls::optional;
  cfg.limits.data_budget = 64u << 20;  // not the default: kept in the "blkcopy" key
  test::Served t(cfg, sock);
  const std::string out = (dir.path() / "saved.json").string();
  const auto r = test::run_cli({"ctl", "--socket", sock, "save", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "it holds host keys";
  std::stringstream text;
  text << std::ifstream(out).rdbuf();
  auto back = parse_nvmetcli_json(text.str());
  ASSERT_TRUE(back) << back.error().message() << "\n" << text.str();
  cfg.ports[0].port = t.port();  // what the target listens on is what it saves
  EXPECT_EQ(to_nvmetcli_json(*back), to_nvmetcli_json(cfg)) << text.str();
  EXPECT_EQ(back->hosts.at(0).tls_key, h.tls_key);
  EXPECT_EQ(back->ports.at(0).tls, PortTls::optional);
  EXPECT_EQ(back->limits.data_budget, 64u << 20);
  // `save -`: the same configuration on stdout, as nvmetcli JSON.
  const auto printed = test::run_cli({"ctl", "--socket", sock, "save", "-"});
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  auto from_stdout = parse_nvmetcli_json(printed.out);
  ASSERT_TRUE(from_stdout) << from_stdout.error().message() << "\n" << printed.out;
  EXPECT_EQ(to_nvmetcli_json(*from_stdout), to_nvmetcli_json(cfg));
  EXPECT_FALSE(std::filesystem::exists("-")) << "no file named -";
  // Over a file that was readable by all: 0600 afterwards; never through a symbolic link.
  ::chmod(out.c_str(), 0644);
  ASSERT_EQ(test::run_cli({"ctl", "--socket", sock, "save", out}).exit_code, 0);
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string link = (dir.path() / "link.json").string();
  ASSERT_EQ(::symlink(out.c_str(), link.c_str()), 0);
  const auto via_link = test::run_cli({"ctl", "--socket", sock, "save", link});
  EXPECT_EQ(via_link.exit_code, 2);
  EXPECT_NE(via_link.err.find("not a regular file"), std::string::npos) << via_link.err;

  const auto stats = test::run_cli({"ctl", "--socket", sock, "--json", "stats"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_TRUE(json::parse(stats.out)["commands"].is_number());
  const auto none = test::run_cli({"ctl", "--socket", (dir.path() / "nobody.sock").string(), "list"});
  EXPECT_EQ(none.exit_code, 5) << "unreachable";
  EXPECT_NE(none.err.find("is `blkcopy serve --rpc"), std::string::npos) << none.err;
  const auto bad = test::run_cli({"ctl", "--socket", sock, "call", "nope"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(json::parse(bad.out)["error"]["code"], -32601) << bad.out;
}

// `info` on a remote namespace shows the Identify fields local NVMe shows, numbers as numbers.
TEST(Ctl, InfoOfARemoteNamespaceShowsItsIdentifyFields) {
  test::Served t(config());
  const auto r = test::run_cli({"info", "--json", fmt::format("nvme-tcp://127.0.0.1:{}/{}?ns=1", t.port(), kSub)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json d = json::parse(r.out)["details"];
  EXPECT_EQ(d["namespace"], 1);
  EXPECT_EQ(d["model"], "blkcopy");
  EXPECT_TRUE(d["serial"].is_string());
  EXPECT_EQ(d["oncs"].get<uint64_t>() & 0x100, 0x100u) << "Copy";
  EXPECT_EQ(d["msrc"], 255);
  EXPECT_EQ(d["mdts"], 8);
  EXPECT_EQ(d["nsze"], (8u << 20) / 512);
  EXPECT_TRUE(d["mssrl"].is_number() && d["mcl"].is_number() && d["ocfs"].is_number());
}

// `discover` lists one device string per namespace that exists, and --json speaks nvme-cli's
// field names with the generation counter.
TEST(Ctl, DiscoverListsEachNamespaceAndSpeaksNvmeClisJson) {
  TargetConfig cfg = config();
  cfg.subsystems[0].namespaces.push_back({3, "mem:4M", "", true});
  test::Served t(cfg);
  const std::string at = fmt::format("127.0.0.1:{}", t.port());
  const auto text = test::run_cli({"discover", at});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("(generation "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(fmt::format("nvme-tcp://{}/{}?ns=1\n", at, kSub)), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(fmt::format("nvme-tcp://{}/{}?ns=3\n", at, kSub)), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("?ns=2"), std::string::npos) << "no namespace 2: " << text.out;
  const auto j = test::run_cli({"discover", at, "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json d = json::parse(j.out);
  EXPECT_TRUE(d["genctr"].is_number());
  ASSERT_EQ(d["records"].size(), 1u);
  const json& r = d["records"][0];
  EXPECT_EQ(r["trtype"], "tcp");
  EXPECT_EQ(r["adrfam"], "ipv4");
  EXPECT_EQ(r["subtype"], "nvme subsystem");
  EXPECT_EQ(r["treq"], "not specified");
  EXPECT_EQ(r["sectype"], "none");
  EXPECT_EQ(r["subnqn"], kSub);
  EXPECT_EQ(r["trsvcid"], std::to_string(t.port()));
  EXPECT_EQ(r["portid"], 1);
  EXPECT_EQ(r["device_strings"].size(), 2u) << r.dump();

  // A target whose host must authenticate, discovery included: refused without the secret,
  // listed with it (the namespaces too), and the device strings say where the secret goes.
  cfg.subsystems[0].allow_any_host = false;
  cfg.subsystems[0].allowed_hosts = {kHost};
  HostConfig h;
  h.nqn = kHost;
  h.key = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
  cfg.hosts = {h};
  test::Served keyed(cfg);
  const std::string kat = fmt::format("127.0.0.1:{}", keyed.port());
  const auto stranger = test::run_cli({"discover", kat, "--hostnqn", "nqn.2024-01.io.blkcopy:stranger"});
  EXPECT_EQ(stranger.exit_code, 0) << stranger.err;
  EXPECT_NE(stranger.out.find("0 records"), std::string::npos) << stranger.out;
  EXPECT_NE(stranger.out.find("admit host nqn.2024-01.io.blkcopy:stranger"), std::string::npos) << stranger.out;
  const auto refused = test::run_cli({"discover", kat, "--hostnqn", kHost});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("authentication"), std::string::npos) << refused.err;
  test::TempDir dir;
  const std::string secret = (dir.path() / "host.key").string();
  std::ofstream(secret) << h.key << "\n";
  const auto listed = test::run_cli({"discover", kat, "--hostnqn", kHost, "--dhchap-secret-file", secret});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(fmt::format("?ns=3&hostnqn={}&dhchap_secret_file={}\n", kHost, secret)),
            std::string::npos)
      << listed.out;
  const auto inline_key = test::run_cli({"discover", kat, "--hostnqn", kHost, "--dhchap-secret", h.key});
  ASSERT_EQ(inline_key.exit_code, 0) << inline_key.err;
  EXPECT_EQ(inline_key.out.find(h.key.substr(10, 20)), std::string::npos) << "a secret printed";
  EXPECT_NE(inline_key.out.find("&dhchap_secret_file=FILE"), std::string::npos) << inline_key.out;
}

// systemd's readiness protocol: serve says READY=1 on $NOTIFY_SOCKET once it listens (the
// port answers then), and STOPPING=1 when it is told to stop.
TEST(Ctl, ServeTellsTheServiceManagerWhenItIsReadyAndWhenItStops) {
  test::TempDir dir;
  const std::string notify = (dir.path() / "notify").string();
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, notify.data(), notify.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  auto take = [&](int wait_ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return std::string();
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
  std::string ready;
  test::Run added;
  const std::string sock = (dir.path() / "c.sock").string(), nqn = "nqn.2024-01.io.blkcopy:said";
  const auto r = test::run_cli({"serve", "--listen", fmt::format("127.0.0.1:{}", test::free_port()),
                                "--discovery-port", "0", "--nqn", nqn, "--ns",
                                "mem:1M", "--rpc", sock},
                               SIGTERM, 0, [&] {
                                 if (ready.empty()) ready = take(10);
                                 if (ready.empty()) return false;
                                 // Once ready, a ctl change, which serve's log then shows.
                                 added = test::run_cli({"ctl", "--socket", sock, "add-ns", nqn, "mem:2M"});
                                 return true;
                               });
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ready.starts_with("READY=1\n")) << ready;
  EXPECT_NE(ready.find("STATUS=serving 1 subsystem"), std::string::npos) << ready;
  EXPECT_NE(r.err.find("control socket"), std::string::npos) << "ready after the control socket";
  EXPECT_EQ(added.exit_code, 0) << added.err;
  EXPECT_NE(r.err.find("blkcopy serve: ctl: " + nqn + " namespace 2 added: mem:2M"), std::string::npos)
      << "a ctl change is in serve's log without -v: " << r.err;
  EXPECT_EQ(take(20000), "STOPPING=1");
  ::close(fd);
}

// The command trace, switched on and off while the target runs: a two-range Copy with its
// ranges as the host sent them, its status and what was offloaded; a Copy past the end with its
// error status; nothing once it is off.
TEST(Ctl, TheTraceShowsEachCommandWithItsCopyRangesAndStatus) {
  test::TempDir dir;
  const std::string sock = (dir.path() / "c.sock").string();
  const std::string file = (dir.path() / "trace.jsonl").string();
  test::Served t(config(), sock);
  const auto no_file = test::run_cli({"ctl", "--socket", sock, "trace", "on"});
  EXPECT_EQ(no_file.exit_code, 2);
  EXPECT_NE(no_file.err.find("trace on needs a file"), std::string::npos) << no_file.err;
  const auto on = test::run_cli({"ctl", "--socket", sock, "trace", "on", "--file", file});
  ASSERT_EQ(on.exit_code, 0) << on.err;
  test::Host h;
  ASSERT_TRUE(h.connect(t.port(), kSub, kHost));
  EXPECT_EQ(h.io.copy(1, 4096, {{0, 8}, {100, 16}}).status, 0);
  const uint64_t blocks = (8u << 20) / 512;
  EXPECT_NE(h.io.copy(1, 0, {{blocks - 4, 8}}).status, 0) << "a range past the end";
  const auto off = test::run_cli({"ctl", "--socket", sock, "trace", "off"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_EQ(h.io.copy(1, 8192, {{0, 8}}).status, 0);  // not traced
  std::vector<json> lines;
  std::ifstream in(file);
  for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
  std::vector<json> copies;
  for (const json& l : lines) {
    if (l["opcode"] == "copy") copies.push_back(l);
  }
  ASSERT_EQ(copies.size(), 2u) << lines.size() << " lines";
  const json& c = copies[0];
  EXPECT_EQ(c["host"], kHost);
  EXPECT_EQ(c["qid"], 1);
  EXPECT_EQ(c["cntlid"], h.cntlid);
  EXPECT_EQ(c["nsid"], 1);
  EXPECT_EQ(c["sdlba"], 4096);
  EXPECT_EQ(c["ranges"], json::parse(R"([{"snsid":0,"slba":0,"blocks":8},{"snsid":0,"slba":100,"blocks":16}])"));
  EXPECT_EQ(c["status"], "0x0000");
  EXPECT_EQ(c["offloaded_bytes"].get<uint64_t>() + c["emulated_bytes"].get<uint64_t>(), 24u * 512);
  EXPECT_TRUE(c["latency_us"].is_number());
  EXPECT_TRUE(c["time"].get<std::string>().ends_with("Z"));
  EXPECT_NE(copies[1]["status"], "0x0000") << copies[1].dump();
  EXPECT_EQ(copies[1]["ranges"][0]["slba"], blocks - 4);

  // A host NQN that is not UTF-8 is traced with replacement characters, listed, and the target
  // goes on (the attack review crashed it so).
  ASSERT_EQ(test::run_cli({"ctl", "--socket", sock, "trace", "on"}).exit_code, 0);
  test::NvmeClient odd;
  ASSERT_TRUE(odd.open(t.port()));
  EXPECT_EQ(odd.connect(0, kSub, "nqn.2014-08.io.example:\xff\xfe").status, 0);
  const auto listed = test::run_cli({"ctl", "--socket", sock, "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("\\xef\\xbf\\xbd"), std::string::npos) << "escaped when printed: " << listed.out;
  ASSERT_EQ(test::run_cli({"ctl", "--socket", sock, "trace", "off"}).exit_code, 0);
  std::ifstream again(file);
  std::string last;
  for (std::string l; std::getline(again, l);) last = l;
  EXPECT_NE(last.find("nqn.2014-08.io.example:\xef\xbf\xbd"), std::string::npos) << last;
  EXPECT_EQ(test::run_cli({"ctl", "--socket", sock, "stats"}).exit_code, 0) << "the target is alive";
}

}  // namespace
}  // namespace blkcopy
