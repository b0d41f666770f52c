// Shared helpers for the tests: loops, devices, reference data, temporary files.
#pragma once

#include <blkcopy/copy.h>
#include <blkcopy/event_loop.h>
#include <blkcopy/open.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace blkcopy::test {

using Bytes = std::vector<std::byte>;

std::unique_ptr<EventLoop> make_loop();
std::unique_ptr<Device> open_dev(EventLoop& loop, const std::string& spec);

// The pseudo-random bytes a mem device with seed=SEED holds at [offset, offset + length).
Bytes pattern(uint64_t offset, uint64_t length, uint64_t seed);
Bytes read_bytes(Device& dev, uint64_t offset, uint64_t length);
void write_bytes(Device& dev, uint64_t offset, const Bytes& data);

// A fresh directory removed with everything in it at the end of the test.
// The library's log lines while it lives (its sink; none again afterwards), from any thread.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  bool has(std::string_view text) const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

class TempDir {
 public:
  explicit TempDir(const std::filesystem::path& base = std::filesystem::temp_directory_path());
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  // Creates a file of `size` bytes holding pattern(0, size, seed) (zeroes when seed is 0).
  std::string file(const std::string& name, uint64_t size, uint64_t seed = 0) const;

 private:
  std::filesystem::path path_;
};

Bytes read_file(const std::string& path, uint64_t offset, uint64_t length);

// Waits for `done` (polled every 20 ms) up to a generous limit: tests wait for the event, they
// never sleep and hope. True when it came.
template <typename F>
bool eventually(F done, std::chrono::seconds limit = std::chrono::seconds(30)) {
  for (auto until = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < until;) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

// Result of running the blkcopy binary.
struct Run {
  int exit_code;
  std::string out, err;
};
// With `signal` set, sends it to the process `after_ms` milliseconds after it started, or, with
// `ready`, after_ms milliseconds after ready() first returned true (polled every 10 ms, for up
// to 20 s): a slow build (sanitizers) must not get the signal before the work has begun.
Run run_cli(const std::vector<std::string>& args, int signal = 0, int after_ms = 0,
            const std::function<bool()>& ready = {});

}  // namespace blkcopy::test
