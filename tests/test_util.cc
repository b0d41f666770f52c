#include "tests/test_util.h"

#include <blkcopy/log.h>

#include <csignal>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "drivers/mem/mem_device.h"

namespace blkcopy::test {

std::unique_ptr<EventLoop> make_loop() {
  auto loop = EventLoop::create();
  if (!loop) ADD_FAILURE() << loop.error().message();
  return loop ? std::move(*loop) : nullptr;
}

std::unique_ptr<Device> open_dev(EventLoop& loop, const std::string& spec) {
  auto dev = open_device(loop, spec);
  if (!dev) {
    ADD_FAILURE() << spec << ": " << dev.error().message();
    return nullptr;
  }
  return std::move(*dev);
}

Bytes pattern(uint64_t offset, uint64_t length, uint64_t seed) {
  Bytes b(length);
  fill_pattern(b.data(), offset, length, seed);
  return b;
}

Bytes read_bytes(Device& dev, uint64_t offset, uint64_t length) {
  Bytes b(length);
  Status s = read_sync(dev, offset, b);
  EXPECT_TRUE(s.ok()) << s.message();
  return b;
}

void write_bytes(Device& dev, uint64_t offset, const Bytes& data) {
  Status s = write_sync(dev, offset, data);
  EXPECT_TRUE(s.ok()) << s.message();
}

TempDir::TempDir(const std::filesystem::path& base) {
  std::string tmpl = (base / "blkcopy-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::file(const std::string& name, uint64_t size, uint64_t seed) const {
  const std::string p = (path_ / name).string();
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (seed) {
    Bytes b = pattern(0, size, seed);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(size));
  }
  f.close();
  std::filesystem::resize_file(p, size);
  return p;
}

Bytes read_file(const std::string& path, uint64_t offset, uint64_t length) {
  Bytes b(length);
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(length));
  EXPECT_EQ(static_cast<uint64_t>(f.gcount()), length) << path;
  return b;
}

namespace {
std::string slurp(int fd) {
  std::string s;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<size_t>(n));
  return s;
}
}  // namespace

Run run_cli(const std::vector<std::string>& args, int signal, int after_ms,
            const std::function<bool()>& ready) {
  TempDir dir;
  const std::string out = (dir.path() / "out").string(), err = (dir.path() / "err").string();
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out.c_str(), O_CREAT | O_WRONLY, 0600);
    int e = open(err.c_str(), O_CREAT | O_WRONLY, 0600);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> argv{const_cast<char*>(BLKCOPY_CLI)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(BLKCOPY_CLI, argv.data());
    _exit(127);
  }
  if (signal) {
    for (int i = 0; ready && i < 2000 && !ready(); ++i) usleep(10 * 1000);
    usleep(static_cast<useconds_t>(after_ms) * 1000);
    kill(pid, signal);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  int fo = open(out.c_str(), O_RDONLY), fe = open(err.c_str(), O_RDONLY);
  Run r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(fo), slurp(fe)};
  close(fo);
  close(fe);
  return r;
}

LogCapture::LogCapture() {
  set_log_sink([this](LogLevel, std::string_view m) {
    std::lock_guard lock(mu_);
    lines_.emplace_back(m);
  });
}

LogCapture::~LogCapture() { set_log_sink(nullptr); }

bool LogCapture::has(std::string_view text) const {
  std::lock_guard lock(mu_);
  for (const std::string& l : lines_) {
    if (l.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace blkcopy::test
