#include "bench/bench_util.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>

namespace blkcopy::bench {

namespace fs = std::filesystem;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool run_quiet(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

void drop_caches() {
  sync();
  if (geteuid() == 0) run_quiet("echo 3 > /proc/sys/vm/drop_caches");
}

// Runs `sh -c cmd`, timing it and counting its CPU time (it and its children).
std::optional<Sample> time_command(const std::string& cmd) {
  const double t0 = now();
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  const double t1 = now();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fmt::print(stderr, "bench: command failed: {}\n", cmd);
    return std::nullopt;
  }
  auto sec = [](const timeval& tv) { return double(tv.tv_sec) + double(tv.tv_usec) / 1e6; };
  return Sample{t1 - t0, sec(ru.ru_utime) + sec(ru.ru_stime)};
}

Sample median(std::vector<Sample> v) {
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.seconds < b.seconds; });
  return v[v.size() / 2];
}

void fresh_file(const std::string& path, uint64_t size) {
  fs::remove(path);
  int fd = open(path.c_str(), O_CREAT | O_WRONLY, 0644);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
    throw std::runtime_error("cannot create " + path);
  }
  close(fd);
}

XfsMount::XfsMount(const fs::path& base) : img_(base / "bench-xfs.img"), mnt_(base / "bench-xfs") {
  fs::create_directories(mnt_);
  ok_ = run_quiet(fmt::format("truncate -s 8G {} && mkfs.xfs -q -f -m reflink=1 {} && mount -o "
                              "loop {} {}",
                              img_.string(), img_.string(), img_.string(), mnt_.string()));
}

XfsMount::~XfsMount() {
  if (ok_) run_quiet("umount " + mnt_.string());
  fs::remove(img_);
  fs::remove(mnt_);
}

}  // namespace blkcopy::bench
