// blkcopy demo: the main job on a built-in default. Creates a file-backed device, copies within
// it once offloaded and once emulated, checks the data against the original and prints what
// each cost.
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "drivers/mem/mem_device.h"
#include "tools/commands.h"
#include "tools/report.h"

namespace blkcopy::tools {
namespace {

constexpr uint64_t kSeed = 2014;

int run_demo(const std::string& dir, const std::string& size_text, bool keep) {
  auto size = parse_size(size_text);
  if (!size || *size == 0 || *size % (1u << 20)) {
    return report_error(kBadInput, fmt::format("--size '{}': expected a non-zero multiple of 1M",
                                               size_text));
  }
  const uint64_t n = *size;
  const std::string path = (std::filesystem::path(dir) / "blkcopy-demo.img").string();
  {
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(3 * n)) != 0) {
      return report_error(kIoError, fmt::format("cannot create {}: {}", path,
                                                std::strerror(errno)));
    }
    close(fd);
  }
  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  auto dev = open_device(**loop, "file:" + path);
  if (!dev) return report_error(kIoError, dev.error().message());
  Device& d = **dev;

  fmt::print("blkcopy demo: a {} file device at {}\n", format_bytes(double(3 * n)), path);
  fmt::print("copy offload: {}\n\n", d.describe().copy_method);

  // The original source contents, kept aside to check every copy against.
  std::vector<std::byte> original(n);
  fill_pattern(original.data(), 0, n, kSeed);
  if (Status s = write_sync(d, 0, original); !s.ok()) return report_error(kIoError, s.message());
  if (Status s = submit_and_wait(d, Request{Op::flush}); !s.ok()) {
    return report_error(kIoError, s.message());
  }

  struct Run {
    const char* name;
    Emulation mode;
    uint64_t dst;
  };
  const Run runs[] = {{"offloaded", Emulation::allow, n}, {"emulated", Emulation::force, 2 * n}};
  fmt::print("{:<10} {:>10} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {}\n", "copy",
             "bytes", "seconds", "rate", "offloaded", "emulated", "host read", "host wrote",
             "commands", "CPU s", "check");
  int code = kOk;
  std::vector<std::byte> back(n);
  for (const Run& run : runs) {
    CopyOptions opt;
    opt.emulation = run.mode;
    const double cpu0 = process_cpu_seconds();
    CopyResult r = copy(d, 0, d, run.dst, n, opt);
    const double cpu = process_cpu_seconds() - cpu0;
    if (!r.status.ok()) return report_error(kIoError, r.status.message());
    if (Status s = read_sync(d, run.dst, back); !s.ok()) {
      return report_error(kIoError, s.message());
    }
    const bool same = std::memcmp(back.data(), original.data(), n) == 0;
    if (!same) code = kFailed;
    fmt::print("{:<10} {:>10} {:>9.3f} {:>9}/s {:>10} {:>10} {:>10} {:>10} {:>8} {:>8.3f} {}\n",
               run.name, format_bytes(double(r.bytes)), r.seconds,
               format_bytes(double(r.bytes) / r.seconds), format_bytes(double(r.offloaded_bytes)),
               format_bytes(double(r.emulated_bytes)), format_bytes(double(r.host_read_bytes)),
               format_bytes(double(r.host_written_bytes)), r.commands, cpu,
               same ? "data ok" : "DATA MISMATCH");
  }
  if (!keep) std::filesystem::remove(path);
  fmt::print("\n{}\n", code == kOk ? "both copies match the original data"
                                   : "a copy does not match the original data");
  return code;
}

}  // namespace

void add_demo_command(CLI::App& app, int& exit_code) {
  struct Args {
    std::string dir = ".";
    std::string size = "256M";
    bool keep = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Copy within a file device offloaded and emulated, check the data, show the cost");
  cmd->add_option("--dir", a->dir, "where to create the demo file (default: .)");
  cmd->add_option("--size", a->size, "bytes to copy (default 256M); the file is 3x that");
  cmd->add_flag("--keep", a->keep, "keep the demo file");
  cmd->callback([a, &exit_code] { exit_code = run_demo(a->dir, a->size, a->keep); });
}

}  // namespace blkcopy::tools
