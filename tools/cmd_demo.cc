// blkcopy demo: the main job on a built-in default. Creates a file-backed device, copies within
// it once by default (offloaded where the file system can) and once emulated, checks the data
// against the original and prints what each cost. Where the folder's file system cannot offload
// and the demo runs as root with xfsprogs, it makes an XFS image on a loop device to show a real
// offload (shared extents); otherwise it says that this file system cannot offload.
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "drivers/mem/mem_device.h"
#include "tools/commands.h"
#include "tools/report.h"

namespace blkcopy::tools {
namespace {

// Whether a file in `dir` would be offloaded by default (its file system shares extents or
// copies on a server), asked of the file driver itself.
bool folder_can_offload(const std::string& dir) {
  const std::string probe = (std::filesystem::path(dir) / ".blkcopy-demo-probe").string();
  int fd = ::open(probe.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return true;  // let the demo's own open report the problem
  const bool sized = ftruncate(fd, 1 << 20) == 0;
  close(fd);
  bool can = true;
  if (sized) {
    if (auto loop = EventLoop::create(8, 1)) {
      if (auto dev = open_device(**loop, probe)) can = (*dev)->limits().can_offload();
    }
  }
  std::filesystem::remove(probe);
  return can;
}

constexpr uint64_t kSeed = 2014;

// An XFS file system on a loop device, mounted in a fresh folder for the demo's file; removed
// again when it goes. Empty when this machine cannot make one (not root, no xfsprogs, no loop).
class XfsScratch {
 public:
  explicit XfsScratch(uint64_t bytes) {
    if (geteuid() != 0 || std::system("command -v mkfs.xfs >/dev/null 2>&1") != 0) return;
    char tmpl[] = "/tmp/blkcopy-demo-XXXXXX";
    if (!mkdtemp(tmpl)) return;
    dir_ = tmpl;
    img_ = dir_ + ".img";
    const std::string mk = fmt::format("truncate -s {} {} && mkfs.xfs -q -f -m reflink=1 {} && "
                                       "mount -o loop {} {} 2>/dev/null",
                                       bytes + (512u << 20), img_, img_, img_, dir_);
    mounted_ = std::system(mk.c_str()) == 0;
  }
  ~XfsScratch() {
    if (mounted_ && std::system(("umount " + dir_).c_str()) != 0) {
      fmt::print(stderr, "blkcopy demo: could not unmount {}\n", dir_);
    }
    if (!dir_.empty()) std::filesystem::remove(dir_);
    if (!img_.empty()) std::filesystem::remove(img_);
  }
  XfsScratch(const XfsScratch&) = delete;
  XfsScratch& operator=(const XfsScratch&) = delete;
  // The mounted folder, or "" when there is none.
  std::string dir() const { return mounted_ ? dir_ : std::string(); }

 private:
  std::string dir_, img_;
  bool mounted_ = false;
};

int run_demo(const std::string& dir, const std::string& size_text, bool keep) {
  auto size = parse_size(size_text);
  if (!size || *size == 0 || *size % (1u << 20)) {
    return report_error(kBadInput, fmt::format("--length '{}': expected a non-zero multiple of 1M",
                                               size_text));
  }
  const uint64_t n = *size;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return report_error(kBadInput, fmt::format("--dir {}: not a folder", dir));
  }
  std::string shown = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (shown.size() > 1 && shown.back() == '/') shown.pop_back();
  std::string where = dir;
  std::unique_ptr<XfsScratch> xfs;
  if (!folder_can_offload(dir)) {
    xfs = std::make_unique<XfsScratch>(3 * n);
    if (!xfs->dir().empty()) {
      fmt::print("blkcopy demo: {}'s file system cannot offload copies; using an XFS image on a "
                 "loop device, mounted at {}, to show one\n",
                 shown, xfs->dir());
      where = xfs->dir();
    } else {
      fmt::print("blkcopy demo: {}'s file system cannot offload copies (no shared extents), and "
                 "this machine cannot make an XFS image here (that needs root and xfsprogs): "
                 "both copies below are emulated\n",
                 shown);
    }
  }
  const std::string path = (std::filesystem::path(where) / "blkcopy-demo.img").string();
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
  const Run runs[] = {{d.limits().can_offload() ? "offloaded" : "default", Emulation::allow, n},
                      {"emulated", Emulation::force, 2 * n}};
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
  if (!keep || xfs) std::filesystem::remove(path);  // the XFS image goes in any case
  if (keep && xfs) {
    fmt::print("--keep: not kept, the demo file was in a temporary XFS image, which is gone\n");
  } else if (keep) {
    fmt::print("kept {}\n", path);
  }
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
  cmd->add_option("-l,--length", a->size, "bytes to copy, as copy's --length (default 256M); the "
                                          "file is 3x that");
  cmd->add_option("--size", a->size)->group("");  // its name before --length; kept for scripts
  cmd->add_flag("--keep", a->keep, "keep the demo file (not when it is in the demo's own XFS image)");
  cmd->callback([a, &exit_code] { exit_code = run_demo(a->dir, a->size, a->keep); });
}

}  // namespace blkcopy::tools
