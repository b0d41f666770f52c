// blkcopy perf: its counters add up for each kind of load, it reports per kind as fio does,
// takes fio's names, refuses to write into data, and stops on a signal with what it measured.
// (A smoke test of the figures: speed is for bench/, not tests.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <fstream>

#include <unistd.h>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::run_cli;

class CliPerfFiles : public ::testing::Test {
 protected:
  test::TempDir dir;
  std::string a = dir.file("a", 1 << 20, 41);
  std::string b = dir.file("b", 1 << 20, 42);
};

// fio's option names are perf's too: --iodepth, --numjobs, --runtime.
TEST(CliPerf, TakesFiosOptionNames) {
  auto r = run_cli({"perf", "mem:16M", "--rw", "randread", "--bs", "4k", "--iodepth", "4",
                    "--numjobs", "2", "--runtime", "0.2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["qd"], 4);
  EXPECT_EQ(j["numjobs"], 2);
  EXPECT_GT(j["reads"].get<uint64_t>(), 0u);
  // fio's randrw: random reads and writes, half and half, no copies; named as given.
  r = run_cli({"perf", "mem:16M", "--rw=randrw", "--io_size", "4M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["rw"], "randrw");
  EXPECT_GT(j["reads"].get<uint64_t>(), 0u);
  EXPECT_GT(j["writes"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["copies"], 0);
  EXPECT_EQ(j["bytes"], 4 << 20);
  // Options that do nothing with the load chosen are refused, each range by its option's name.
  for (const auto& [args, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--rw", "randrw", "--mix-copies", "50"}, "--mix-copies is for --rw mix"},
           {{"--rw", "randread", "--dst", "mem:1M"}, "--dst is where copies go"},
           {{"--qd", "0"}, "--qd"},
           {{"--jobs", "65"}, "--jobs"},
           {{"--ranges", "0"}, "--ranges"},
           {{"--time", "0"}, "--time"},
           {{"--mix-copies", "101"}, "--mix-copies"}}) {
    std::vector<std::string> argv = {"perf", "mem:16M"};
    argv.insert(argv.end(), args.begin(), args.end());
    r = run_cli(argv);
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  }
}

// --size is the bytes of all jobs together, in whole operations.
TEST(CliPerf, SizeIsTheBytesOfAllJobsTogether) {
  auto r = run_cli({"perf", "mem:64M", "--rw", "randread", "--size", "4k", "--jobs", "8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ops"], 1) << "one 4 KiB read for --size 4k, whatever the jobs";
  r = run_cli({"perf", "mem:64M", "--rw", "randread", "--size", "6k", "--jobs", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["bytes"], 8192) << "rounded up to whole operations";
  // With --time too, whichever comes first (as fio): 1 TiB of reads is not waited for.
  r = run_cli({"perf", "mem:64M", "--rw", "randread", "--size", "1T", "--time", "0.2", "--qd", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(nlohmann::json::parse(r.out)["bytes"].get<uint64_t>(), uint64_t(1) << 40);
  r = run_cli({"perf", "mem:64M", "--time", "nan"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--time nan"), std::string::npos) << r.err;
}

// perf does not write into a device that holds data (a VM image, a file system) unless told to:
// the image stays as it was; --force goes on; reading needs no --force.
TEST_F(CliPerfFiles, RefusesToWriteIntoDataWithoutForce) {
  for (const char* rw : {"randwrite", "randcopy", "mix"}) {
    auto r = run_cli({"perf", a, "--rw", rw, "--runtime", "0.2"});
    EXPECT_EQ(r.exit_code, 2) << rw;
    EXPECT_NE(r.err.find("holds data"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  }
  EXPECT_EQ(test::read_file(a, 0, 1 << 20), test::pattern(0, 1 << 20, 41)) << "nothing was written";
  EXPECT_EQ(run_cli({"perf", a, "--rw", "randread", "--runtime", "0.2"}).exit_code, 0);
  const auto copy_in = run_cli({"perf", a, "--rw", "copy", "--dst", b, "--runtime", "0.2"});
  EXPECT_EQ(copy_in.exit_code, 2) << "copies write into --dst";
  const auto forced = run_cli({"perf", a, "--rw", "randwrite", "--runtime", "0.2", "--force", "--json"});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_GT(nlohmann::json::parse(forced.out)["writes"].get<uint64_t>(), 0u);
  EXPECT_EQ(forced.err.find("sparse"), std::string::npos) << "a file of data is not sparse: " << forced.err;
}

// A load on a file that is mostly holes says so: the figures would be of holes.
TEST_F(CliPerfFiles, WarnsOfASparseFile) {
  const std::string holes = (dir.path() / "holes.img").string();
  ASSERT_TRUE(std::ofstream(holes)) << holes;
  ASSERT_EQ(::truncate(holes.c_str(), 8 << 20), 0) << holes;
  auto r = run_cli({"perf", holes, "--rw", "randread", "--size", "1M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find(holes + " is sparse (0 B of 8.00 MiB allocated)"), std::string::npos) << r.err;
  r = run_cli({"perf", holes, "--rw", "randread", "--size", "1M", "-q"});
  EXPECT_EQ(r.err, "") << "-q: errors only";
}


// blkcopy perf's counters add up (a smoke test: speed is for bench/, not tests).
TEST(CliPerf, CountersAddUpForEachKindOfLoad) {
  auto perf = [](std::vector<std::string> args) {
    args.insert(args.begin(), "perf");
    auto r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json{};
  };
  // 4 MiB of 4 KiB offloaded copies, 8 in flight: exactly 1024 copies, no host bytes.
  auto j = perf({"mem:64M", "--rw", "randcopy", "--size", "4M", "--qd", "8", "--json"});
  EXPECT_EQ(j["copies"], 1024);
  EXPECT_EQ(j["ops"], 1024);
  EXPECT_EQ(j["bytes"], 4 << 20);
  EXPECT_EQ(j["offloaded_bytes"], 4 << 20);
  EXPECT_EQ(j["host_read_bytes"], 0);
  // The same emulated: every byte read into host memory and written back.
  j = perf({"mem:64M", "--rw", "copy", "--length", "64k", "--ranges", "4", "--size", "4M",
            "--emulate", "--json"});
  EXPECT_EQ(j["copies"], 64);
  EXPECT_EQ(j["emulated_bytes"], 4 << 20);
  EXPECT_EQ(j["host_read_bytes"], 4 << 20);
  EXPECT_EQ(j["host_written_bytes"], 4 << 20);
  EXPECT_EQ(j["offloaded_bytes"], 0);
  // Reads over two jobs; a mix whose kinds add up to its operations.
  j = perf({"mem:64M", "--rw", "read", "--bs", "8k", "--size", "2M", "--jobs", "2", "--json"});
  EXPECT_EQ(j["reads"], 256);
  EXPECT_EQ(j["host_read_bytes"], 2 << 20);
  j = perf({"mem:64M", "--rw", "mix", "--mix-copies", "30", "--time", "0.3", "--json"});
  EXPECT_EQ(j["reads"].get<uint64_t>() + j["writes"].get<uint64_t>() + j["copies"].get<uint64_t>(),
            j["ops"].get<uint64_t>());
  EXPECT_EQ(j["bytes"].get<uint64_t>(), j["ops"].get<uint64_t>() * 4096);
  EXPECT_GT(j["copies"].get<uint64_t>(), 0u);
  EXPECT_LE(j["latency_us"]["p50"].get<double>(), j["latency_us"]["p99"].get<double>());
  EXPECT_LE(j["latency_us"]["p99"].get<double>(), j["latency_us"]["max"].get<double>());
  // Busy polling changes how the loop waits, not what it counts.
  j = perf({"mem:64M", "--rw", "randread", "--size", "1M", "--poll-us", "500", "--json"});
  EXPECT_EQ(j["reads"], 256);
  EXPECT_EQ(j["host_read_bytes"], 1 << 20);
  // Bad input names what is wrong, also when one job of several cannot open its device.
  auto bad = test::run_cli({"perf", "mem:64M", "--rw", "copy", "--jobs", "2", "--dst", "mem:bad",
                            "--time", "0.1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("invalid size 'bad'"), std::string::npos) << bad.err;
  bad = test::run_cli({"perf", "mem:64M", "--poll-us", "2000000"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--poll-us"), std::string::npos) << bad.err;
  bad = test::run_cli({"perf", "mem:64M", "--rw", "sideways"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--rw 'sideways'"), std::string::npos) << bad.err;
  bad = test::run_cli({"perf", "mem:64M", "--bs", "1000", "--time", "0.1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("multiples of the 512-byte block"), std::string::npos) << bad.err;
}

// perf stops at the first SIGINT or SIGTERM, prints what it measured until then (here as JSON)
// and exits with 128 + the signal, long before its --time.
TEST(CliPerf, StoppedBySignalReportsWhatItMeasured) {
  for (int sig : {SIGINT, SIGTERM}) {
    test::TempDir dir;
    const std::string file = dir.file("load", 8 << 20, 0);
    const auto start = std::chrono::steady_clock::now();
    auto r = test::run_cli({"perf", "file:" + file, "--rw", "write", "--bs", "4k", "--time", "120", "--json"},
                           sig, 100, [&] {  // once writes land
                             return test::read_file(file, 0, 4096) != test::Bytes(4096) ||
                                    test::read_file(file, 4096, 4096) != test::Bytes(4096);
                           });
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(r.exit_code, 128 + sig) << r.err;
    EXPECT_LT(took, 60) << "it ran to its --time";
    EXPECT_NE(r.err.find(std::string("interrupted by SIG") + (sig == SIGINT ? "INT" : "TERM")),
              std::string::npos)
        << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["interrupted"], sig == SIGINT ? "SIGINT" : "SIGTERM");
    EXPECT_GT(j["writes"].get<uint64_t>(), 0u);
    EXPECT_LT(j["seconds"].get<double>(), 60);
  }
}


// A mix is reported per kind, as fio reports reads and writes: each kind's operations, bytes and
// latencies (slat + clat = lat), with the percentiles asked for, in fio's JSON names.
TEST(CliPerf, ReportsEachKindOfOperationWithItsLatencies) {
  auto r = run_cli({"perf", "mem:64M", "--rw", "mix", "--mix-copies", "30", "--size", "8M",
                    "--percentiles", "50:90:99.5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  uint64_t ops = 0, bytes = 0;
  for (const char* kind : {"read", "write", "copy"}) {
    SCOPED_TRACE(kind);
    const auto& k = j["jobs"][0][kind];
    const uint64_t n = k["total_ios"];
    EXPECT_GT(n, 0u);
    EXPECT_EQ(k["io_bytes"], n * 4096);
    EXPECT_EQ(k["io_kbytes"], n * 4);
    EXPECT_EQ(k["clat_ns"]["N"], n);
    EXPECT_EQ(k["lat_ns"]["N"], n);
    EXPECT_EQ(k["slat_ns"]["N"], n);
    EXPECT_GT(k["iops"].get<double>(), 0);
    // Every latency is the sum of its two parts.
    EXPECT_NEAR(k["lat_ns"]["mean"].get<double>(),
                k["slat_ns"]["mean"].get<double>() + k["clat_ns"]["mean"].get<double>(), 1);
    EXPECT_LE(k["lat_ns"]["min"].get<uint64_t>(), k["lat_ns"]["max"].get<uint64_t>());
    const auto& p = k["clat_ns"]["percentile"];
    ASSERT_EQ(p.size(), 3u) << p.dump();
    EXPECT_LE(p["50.000000"].get<uint64_t>(), p["90.000000"].get<uint64_t>());
    EXPECT_LE(p["90.000000"].get<uint64_t>(), p["99.500000"].get<uint64_t>());
    EXPECT_LE(p["99.500000"].get<uint64_t>(), k["clat_ns"]["max"].get<uint64_t>());
    ops += n, bytes += k["io_bytes"].get<uint64_t>();
  }
  EXPECT_EQ(ops, j["ops"]);
  EXPECT_EQ(j["reads"], j["jobs"][0]["read"]["total_ios"]);
  EXPECT_EQ(j["copies"], j["jobs"][0]["copy"]["total_ios"]);
  EXPECT_EQ(j["jobs"].size(), 1u) << "the jobs together, as fio's group_reporting";
  EXPECT_EQ(bytes, j["bytes"]);
  EXPECT_TRUE(j["latency_us"].contains("p99.5")) << j["latency_us"].dump();

  // The text names each kind, then all of them.
  r = run_cli({"perf", "mem:64M", "--rw", "mix", "--size", "4M", "--percentiles", "50,99.99"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want : {"  read:  ", "  write: ", "  copy:  ", "  all:   ", "p99.99", "slat us", "clat us"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << " in\n" << r.out;
  }
  // A load of one kind has no "all" line.
  r = run_cli({"perf", "mem:64M", "--rw", "randread", "--size", "1M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("  all:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("  write:"), std::string::npos) << r.out;

  for (const char* bad : {"", "0", "101", "50,,99", "fifty", "1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19:20:21",
                          "0.0000001:0.0000002", "99:99"}) {
    r = run_cli({"perf", "mem:64M", "--percentiles", bad, "--time", "0.1"});
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_NE(r.err.find("--percentiles"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace blkcopy
