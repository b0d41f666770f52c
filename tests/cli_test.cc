// The blkcopy binary: every bad input gives its message and exit code; real copies are checked
// against the original data.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::run_cli;

constexpr uint64_t K = 1024;

class CliTest : public ::testing::Test {
 protected:
  test::TempDir dir;
  std::string a = dir.file("a", 1 << 20, 41);
  std::string b = dir.file("b", 1 << 20, 42);
  // The same files with copy_file_range allowed where it only copies inside the kernel (ext4,
  // tmpfs: what /tmp is on the machines the tests run on).
  std::string ka = "file:" + a + ",kernelcopy", kb = "file:" + b + ",kernelcopy";
};

struct BadCase {
  std::vector<std::string> args;
  int code;
  std::string message;
};

// Like dd and cp: without a length, all of SRC from its offset; a destination file that does
// not exist is made of the size the copy needs; one that exists is never truncated.
TEST_F(CliTest, CopyWithoutALengthCopiesAllOfTheSourceAndMakesTheDestination) {
  const std::string made = (dir.path() / "made.img").string();
  auto r = run_cli({"copy", a, made});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("created    " + made), std::string::npos) << r.out;
  EXPECT_EQ(std::filesystem::file_size(made), 1u << 20);
  EXPECT_EQ(test::read_file(made, 0, 1 << 20), test::pattern(0, 1 << 20, 41));

  const std::string at = (dir.path() / "at.img").string();
  r = run_cli({"copy", a + "@768k", at + "@4k", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["created"], at);
  EXPECT_EQ(std::filesystem::file_size(at), 4 * K + 256 * K);
  EXPECT_EQ(test::read_file(at, 0, 4 * K), test::Bytes(4 * K));
  EXPECT_EQ(test::read_file(at, 4 * K, 256 * K), test::pattern(768 * K, 256 * K, 41));

  // An existing, larger destination keeps its size and the bytes after the copy.
  const std::string big = dir.file("big", 2 << 20, 43);
  ASSERT_EQ(run_cli({"copy", a, big}).exit_code, 0);
  EXPECT_EQ(std::filesystem::file_size(big), 2u << 20);
  EXPECT_EQ(test::read_file(big, 0, 1 << 20), test::pattern(0, 1 << 20, 41));
  EXPECT_EQ(test::read_file(big, 1 << 20, 1 << 20), test::pattern(1 << 20, 1 << 20, 43));

  // A refused copy leaves no file behind.
  const std::string none = (dir.path() / "none.img").string();
  EXPECT_EQ(run_cli({"copy", a + "@100", none}).exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(none));

  // A source that ends inside a block is not copied short without a word: refused, naming the
  // tail and the --length that copies the whole blocks.
  const std::string odd = dir.file("odd", 1000, 44);
  r = run_cli({"copy", odd, none});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("its 1000 bytes end 488 bytes into a 512-byte block"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--length 512"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(none));
  // Also a file smaller than a block (not "past its end"), and offsets that the hint cannot help.
  const std::string tiny = dir.file("tiny", 100, 45);
  for (const auto& [src, want] : std::vector<std::pair<std::string, std::string>>{
           {tiny, "its 100 bytes end 100 bytes into a 512-byte block, and copies go by whole blocks; "
                  "it holds no whole block"},
           {odd + "@512", "nothing whole is left from that offset"},
           {odd + "@100", "the offset must be a multiple of 512 too"}}) {
    r = run_cli({"copy", src, none});
    EXPECT_EQ(r.exit_code, 2) << src;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(none));
  // The hint fits the destination's block too.
  r = run_cli({"copy", dir.file("five", 5000, 46), "mem:64k,block=4096"});
  EXPECT_NE(r.err.find("give --length 4096"), std::string::npos) << r.err;
  ASSERT_EQ(run_cli({"copy", odd, none, "--length", "512"}).exit_code, 0);
  EXPECT_EQ(test::read_file(none, 0, 512), test::pattern(0, 512, 44));
}

// What a user who got something slightly wrong sees: a striped table naming one RAM device four
// times (one device: the stripes would overlap) is refused; a table given without dm: is said
// to be one; info words a device without offload plainly; JSON seconds are rounded.
TEST_F(CliTest, TablesAndInfoSayWhatTheyAre) {
  const std::string overlap = (dir.path() / "overlap.table").string();
  std::ofstream(overlap) << "0 8192 striped 4 128 mem:1M 0 mem:1M 0 mem:1M 0 mem:1M 0\n";
  auto r = run_cli({"info", "dm:" + overlap});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("of mem:1M are used by line 1 too"), std::string::npos) << r.err;
  const std::string apart = (dir.path() / "apart.table").string();
  std::ofstream(apart) << "0 8192 striped 4 128 mem:1M 0 mem:1M,seed=1 0 mem:1M,seed=2 0 mem:1M,seed=3 0\n";
  EXPECT_EQ(run_cli({"info", "dm:" + apart}).exit_code, 0) << "four strings, four devices";

  r = run_cli({"info", apart});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.err.find("looks like a device-mapper table"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("give dm:" + apart), std::string::npos) << r.err;

  r = run_cli({"info", "mem:1M,nocopy"});
  EXPECT_NE(r.out.find("copy offload             no (nocopy): copies are emulated"), std::string::npos) << r.out;

  r = run_cli({"copy", a, b, "--length", "64k", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double cpu = nlohmann::json::parse(r.out)["cpu_seconds"];
  EXPECT_EQ(std::round(cpu * 1e6) / 1e6, cpu) << "rounded to the microsecond";
}

TEST_F(CliTest, EachBadInputHasItsMessageAndExitCode) {
  const BadCase cases[] = {
      {{"copy", "foo:bar", b, "--length", "4k"}, 2, "unknown device type 'foo'"},
      {{"copy", dir.path().string() + "/missing", b, "--length", "4k"}, 2,
       "No such file or directory"},
      {{"copy", a + "@100", b, "--length", "4k"}, 2, "offset 100 is not a multiple"},
      {{"copy", a, b + "@4k", "--length", "1000"}, 2, "length 1000 is not a multiple"},
      {{"copy", a, b + "@1020k", "--length", "8k"}, 2, "destination range [1044480, 1052672) is "
                                                      "beyond the end"},
      {{"copy", a + "@1M", b, "--length", "4k"}, 2, "source range [1048576, 1052672) is beyond"},
      {{"copy", a, b, "--length", "0"}, 2, "zero length"},
      {{"copy", a, a + "@64k", "-r", "0:4k", "-r", "60k:8k"}, 2,
       "source range 2 [61440, 69632) overlaps the destination"},
      {{"copy", a, b, "-r", "0:4k", "-r", "2M:4k"}, 2, "source range 2 [2097152, 2101248) is "
                                                       "beyond the end"},
      {{"copy", a, "file:" + b + ",ro", "--length", "4k"}, 2, "is read-only"},
      {{"copy", a, "mem:1M,ro", "--length", "4k"}, 2, "is read-only"},
      {{"copy", a + "@2M", b}, 2, "is at or past its end (1048576 bytes): nothing to copy"},
      {{"copy", a, dir.path().string() + "/new", "--no-create"}, 2, "does not exist (--no-create"},
      {{"copy", a, b, "--length", "8k", "-r", "0:4k"}, 2, "--length 8192 is not the sum 4096"},
      {{"copy", a + "@4k", b, "-r", "0:4k"}, 2, "not as SRC@OFF"},
      {{"copy", a, b, "-r", "4k"}, 2, "expected OFF:LEN"},
      {{"copy", a, b, "--length", "12Q"}, 2, "--length: invalid size '12Q'"},
      {{"copy", a + "@xyz", b, "--length", "4k"}, 2, "invalid offset in"},
      {{"copy", ka, kb, "--length", "4k", "--copy-max-bytes", "1G"}, 2, "is above its "
                                                                     "copy_max_hw_bytes"},
      {{"copy", a, b, "--length", "4k", "--emulate", "--no-emulation"}, 2, "exclude each other"},
      {{"frob"}, 2, "known: info, copy, demo, clone, serve, discover, ctl, perf"},
      {{"serve", "--ns", "mem:1M", "--dhchap-secret", "DHHC-1:00:x:"}, 2, "(the host NQN is missing)"},
      {{"copy", a, b, "--length", "4k", "--buffer", "100"}, 2, "at least one block"},
      {{"copy", a, b, "--length", "4k", "--frobnicate"}, 2, "frobnicate"},
      {{"copy", "mem:1M,sparkles", b, "--length", "4k"}, 2, "unknown mem option 'sparkles'"},
      {{"info", "foo:bar"}, 2, "unknown device type 'foo'"},
      {{"frobnicate"}, 2, "frobnicate"},
      // Offload impossible (different devices) and emulation off.
      {{"copy", "mem:1M", kb, "--length", "4k", "--no-emulation"}, 3, "not supported"},
      // The second offloaded piece fails: the first 64 KiB are copied.
      {{"copy", "mem:1M,copy_max=64k,fail=copy:2", "mem:1M,copy_max=64k,fail=copy:2@512k",
        "--length", "256k"},
       4, "(copied 65536 bytes before the failure)"},
      {{"copy", "mem:1M,fail=read:1:ENOSPC", b, "--length", "4k"}, 4, "No space left on device"},
  };
  const test::Bytes a_before = test::read_file(a, 0, 1 << 20);
  const test::Bytes b_before = test::read_file(b, 0, 1 << 20);
  for (const BadCase& c : cases) {
    std::string cmd;
    for (auto& s : c.args) cmd += s + " ";
    const auto r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, c.code) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << cmd << "\nstderr: " << r.err;
  }
  EXPECT_EQ(test::read_file(a, 0, 1 << 20), a_before) << "a failed copy changed the source file";
  EXPECT_EQ(test::read_file(b, 0, 1 << 20), b_before) << "a failed copy changed the target file";
}

TEST_F(CliTest, CopiesBetweenFilesAndReportsJson) {
  const auto r = run_cli({"copy", ka + "@64k", kb + "@128k", "--length", "256k", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["bytes"], 256 * K);
  EXPECT_EQ(j["offloaded_bytes"], 256 * K) << "same file system: copy_file_range";
  EXPECT_NE(j["copy_method"].get<std::string>().find("copy_file_range"), std::string::npos);
  EXPECT_EQ(j["emulated_bytes"], 0);
  for (const char* key : {"host_read_bytes", "host_written_bytes", "commands", "seconds"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(test::read_file(b, 128 * K, 256 * K), test::pattern(64 * K, 256 * K, 41));
  EXPECT_EQ(test::read_file(b, 0, 128 * K), test::pattern(0, 128 * K, 42));
  EXPECT_EQ(test::read_file(b, 384 * K, 640 * K), test::pattern(384 * K, 640 * K, 42));
  // Offloaded to the kernel, which moved the data itself: said so, in JSON and in words.
  EXPECT_NE(j["offloaded_by"].get<std::string>().find("the kernel: copy_file_range moved the data "
                                                      "through the page cache"),
            std::string::npos)
      << j.dump();
  const auto text = run_cli({"copy", ka, kb + "@512k", "--length", "64k"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("offloaded  by the kernel: copy_file_range moved the data"), std::string::npos)
      << text.out;
  // Emulated copies offload nothing, name no one, and say why they were emulated.
  const auto emulated = run_cli({"copy", a, b + "@512k", "--length", "64k", "--json"});
  ASSERT_EQ(emulated.exit_code, 0) << emulated.err;
  const auto je = nlohmann::json::parse(emulated.out);
  EXPECT_FALSE(je.contains("offloaded_by")) << emulated.out;
  EXPECT_NE(je["emulated_because"].get<std::string>().find(b + " does not offload: none"), std::string::npos)
      << emulated.out;
  auto why = run_cli({"copy", "mem:1M", "mem:1M,nocopy", "--length", "64k"});
  EXPECT_NE(why.out.find("emulated   because mem:1M,nocopy does not offload: none (nocopy)"), std::string::npos)
      << why.out;
  why = run_cli({"copy", "mem:1M", "mem:1M@512k", "--length", "64k", "--emulate"});
  EXPECT_NE(why.out.find("emulated   because emulation was asked for"), std::string::npos) << why.out;
  why = run_cli({"copy", "mem:1M", "mem:1M@512k", "--length", "64k"});
  EXPECT_EQ(why.out.find("because"), std::string::npos) << "offloaded: " << why.out;
  why = run_cli({"copy", "mem:1M", "mem:1M@512k", "--length", "64k", "--copy-max-bytes", "0"});
  EXPECT_NE(why.out.find("emulated   because mem:1M: copy_max_bytes is 0 (offload turned off)"), std::string::npos)
      << why.out;
  // A vectored copy into a file that cannot offload: its reason, not the engine's on the way.
  why = run_cli({"copy", a, b, "-r", "0:4k", "-r", "8k:4k", "-r", "512k:64k", "--json"});
  EXPECT_NE(nlohmann::json::parse(why.out)["emulated_because"].get<std::string>().find(b + " does not offload"),
            std::string::npos) << why.out;
  // Through a stack whose legs land on two devices.
  const std::string table = (dir.path() / "two.table").string();
  std::ofstream(table) << "0 8192 linear mem:4M,seed=1 0\n8192 8192 linear mem:4M,seed=2 0\n";
  why = run_cli({"copy", "dm:" + table + "@3M", "dm:" + table + "@5M", "--length", "2M", "--json"});
  ASSERT_EQ(why.exit_code, 0) << why.err;
  const auto jd = nlohmann::json::parse(why.out);
  EXPECT_EQ(jd["emulated_bytes"], 1 << 20);
  EXPECT_NE(jd["emulated_because"].get<std::string>().find("(mem:4M,seed=1, line 1) and the destination "
                                                            "(mem:4M,seed=2, line 2) are not in one copy domain"),
            std::string::npos) << why.out;
}

TEST_F(CliTest, VectoredEmulatedCopyWithProgress) {
  const auto r = run_cli({"copy", a, b + "@512k", "-r", "0:8k", "-r", "256k:4k", "-r", "64k:4k",
                          "--length", "16k", "--emulate", "--progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("emulated      16.0 KiB"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("100%"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/s 0:00 done"), std::string::npos) << "rate, time so far, done: " << r.err;
  test::Bytes want = test::pattern(0, 8 * K, 41);
  for (uint64_t off : {256 * K, 64 * K}) {
    test::Bytes part = test::pattern(off, 4 * K, 41);
    want.insert(want.end(), part.begin(), part.end());
  }
  EXPECT_EQ(test::read_file(b, 512 * K, 16 * K), want);
  // -q: nothing on success, not even a forced bar.
  const auto q = run_cli({"-q", "copy", a, b + "@512k", "--length", "16k", "--progress"});
  EXPECT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(q.out, "");
  EXPECT_EQ(q.err, "");
}

TEST_F(CliTest, OverlappingCopyWithinAFileIsAMemmove) {
  const auto r = run_cli({"copy", a, a + "@4k", "--length", "512k", "--copy-max-bytes", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("walked from the end"), std::string::npos) << r.out;
  EXPECT_EQ(test::read_file(a, 4 * K, 512 * K), test::pattern(0, 512 * K, 41));
  EXPECT_EQ(test::read_file(a, 0, 4 * K), test::pattern(0, 4 * K, 41));
}

TEST_F(CliTest, InfoShowsLimitsAndCopySupport) {
  auto r = run_cli({"info", "mem:64M,block=4k,copy_max=1M,segment_max=128k,max_segments=16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want : {"logical_block_size       4096", "copy_max_hw_bytes        1048576",
                           "copy_segment_max_bytes   131072", "copy_max_src_segments    16",
                           "copy offload             yes: in-device memmove"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }
  r = run_cli({"info", ka, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "file");
  EXPECT_EQ(j["capacity"], 1 << 20);
  EXPECT_EQ(j["copy"]["offload"], true);
  EXPECT_NE(j["copy"]["method"].get<std::string>().find("copy_file_range"), std::string::npos);
  // Without kernelcopy a file system that cannot share extents does not offload, and says why.
  r = run_cli({"info", a, "--json"});
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["copy"]["offload"], false);
  EXPECT_NE(j["copy"]["method"].get<std::string>().find("cannot share extents"), std::string::npos)
      << j["copy"]["method"];
  r = run_cli({"info", "mem:1M,nocopy", "--json"});
  EXPECT_EQ(nlohmann::json::parse(r.out)["copy"]["offload"], false);
}

TEST_F(CliTest, DemoChecksItsCopies) {
  const auto r = run_cli({"demo", "--length", "8M", "--dir", dir.path().string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("both copies match the original data"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("offloaded"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "blkcopy-demo.img"));
  const auto bad = run_cli({"demo", "--size", "5"});  // --length's former name still works
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--length '5'"), std::string::npos) << bad.err;
  const auto nowhere = run_cli({"demo", "--dir", (dir.path() / "none").string()});
  EXPECT_EQ(nowhere.exit_code, 2) << "bad input, not an I/O error";
  EXPECT_NE(nowhere.err.find("not a folder"), std::string::npos) << nowhere.err;
}

}  // namespace
}  // namespace blkcopy

namespace blkcopy {
namespace {

// Like dd: SIGINT or SIGTERM mid-copy prints the exact progress (here as JSON) and exits with
// 128 + the signal; the destination holds the source's bytes up to the progress and nothing
// beyond the range changed.
TEST(CliInterrupt, ACopyStoppedBySignalReportsExactProgress) {
  for (int sig : {SIGINT, SIGTERM}) {
    test::TempDir dir;
    const std::string src = dir.file("src", 8 << 20, 77);
    const std::string dst = dir.file("dst", 9 << 20, 0);
    // Every write to the destination takes 20 ms, one in flight: about 2.5 s for the copy.
    const std::string table = (dir.path() / "slow.table").string();
    std::ofstream(table) << "0 18432 flakey " << dst << " 0 delay=write:1:20ms:every\n";
    auto r = test::run_cli({"copy", src, "dm:" + table + "@64k", "--length", "8M", "--emulate",
                            "--buffer", "64k", "--chunk", "64k", "--json"},
                           sig, 200, [&] {  // once the first bytes have landed
                             return test::read_file(dst, 64 * K, 4096) != test::Bytes(4096);
                           });
    EXPECT_EQ(r.exit_code, 128 + sig) << r.err;
    EXPECT_NE(r.err.find(std::string("interrupted by SIG") + (sig == SIGINT ? "INT" : "TERM")),
              std::string::npos)
        << r.err;
    auto j = nlohmann::json::parse(r.out);
    const uint64_t bytes = j["bytes"];
    EXPECT_GT(bytes, 0u);
    EXPECT_LT(bytes, 8u << 20);
    EXPECT_EQ(j["status"], "error");
    EXPECT_EQ(j["emulated_bytes"].get<uint64_t>(), bytes);
    const auto original = test::pattern(0, bytes, 77);
    EXPECT_EQ(test::read_file(dst, 64 * K, bytes), original) << "the progress is in place";
    EXPECT_EQ(test::read_file(dst, 0, 64 * K), test::Bytes(64 * K)) << "before the range";
    EXPECT_EQ(test::read_file(dst, (8 << 20) + 64 * K, 960 * K), test::Bytes(960 * K))
        << "after the range";
  }
}

}  // namespace
}  // namespace blkcopy

namespace blkcopy {
namespace {

// Each command's --help shows what that command takes: the device strings only where it takes
// a DEV; and bash completion offers every option --help names.
TEST(CliHelp, EachCommandShowsWhatItTakesAndCompletionKnowsIt) {
  std::ifstream in(std::string(BLKCOPY_SOURCE_DIR) + "/doc/blkcopy.bash-completion");
  ASSERT_TRUE(in) << "doc/blkcopy.bash-completion";
  std::map<std::string, std::set<std::string>> completion;  // command -> words
  const std::regex line(R"re(^\s*([a-z-]+)\) opts="([^"]*)")re");  // a command, or a ctl verb
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, line)) continue;
    std::istringstream words(m[2].str());
    for (std::string w; words >> w;) completion[m[1]].insert(w);
  }
  const std::regex option(R"([ ,](--?[a-z][a-z0-9_-]*))");
  for (const std::string cmd : {"info", "copy", "clone", "serve", "discover", "ctl", "perf", "demo"}) {
    SCOPED_TRACE(cmd);
    const auto r = run_cli({cmd, "--help"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const bool takes_devices = cmd != "discover" && cmd != "demo" && cmd != "ctl" && cmd != "clone";
    EXPECT_EQ(r.out.find("Devices (DEV):") != std::string::npos, takes_devices) << r.out;
    EXPECT_NE(r.out.find("Exit codes:"), std::string::npos);
    std::string options = r.out.substr(r.out.find("Options:"));
    options = options.substr(0, std::min({options.find("Subcommands:"), options.find("Devices (DEV):"),
                                          options.find("Exit codes:")}));
    ASSERT_TRUE(completion.contains(cmd)) << "no completion for " << cmd;
    for (auto it = std::sregex_iterator(options.begin(), options.end(), option); it != std::sregex_iterator(); ++it) {
      const std::string name = (*it)[1];
      if (name == "--help" || name == "-h") continue;
      EXPECT_TRUE(completion[cmd].contains(name)) << name << " is not completed";
    }
  }
  const auto sub = run_cli({"ctl", "--help"});
  const std::string verbs = sub.out.substr(sub.out.find("Subcommands:"));
  std::istringstream lines(verbs);
  std::string l;
  std::getline(lines, l);
  while (std::getline(lines, l) && !l.empty()) {
    std::istringstream words(l);
    std::string verb;
    words >> verb;
    EXPECT_TRUE(completion["ctl"].contains(verb)) << "ctl " << verb << " is not completed";
  }
  // Each ctl verb's options are completed after it.
  std::istringstream again(verbs);
  std::getline(again, l);
  while (std::getline(again, l) && !l.empty()) {
    std::istringstream words(l);
    std::string verb;
    words >> verb;
    SCOPED_TRACE("ctl " + verb);
    const auto help = run_cli({"ctl", verb, "--help"});
    std::string options = help.out.substr(help.out.find("Options:"));
    options = options.substr(0, std::min(options.find("Devices (DEV):"), options.find("Exit codes:")));
    for (auto it = std::sregex_iterator(options.begin(), options.end(), option); it != std::sregex_iterator(); ++it) {
      const std::string name = (*it)[1];
      if (name == "--help" || name == "-h") continue;
      EXPECT_TRUE(completion[verb].contains(name)) << name << " is not completed";
    }
  }
  // A ctl verb that takes a DEV shows the device strings; one that does not, only exit codes.
  EXPECT_NE(run_cli({"ctl", "add-ns", "--help"}).out.find("Devices (DEV):"), std::string::npos);
  EXPECT_EQ(run_cli({"ctl", "list", "--help"}).out.find("Devices (DEV):"), std::string::npos);
}

TEST(CliVersion, PrintsTheProjectVersion) {
  auto r = test::run_cli({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("blkcopy ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find('.'), std::string::npos) << r.out;
  auto h = test::run_cli({"copy", "--help"});
  EXPECT_NE(h.out.find("Usage: blkcopy copy"), std::string::npos) << h.out;
}

}  // namespace
}  // namespace blkcopy

namespace blkcopy {
namespace {

}  // namespace
}  // namespace blkcopy
