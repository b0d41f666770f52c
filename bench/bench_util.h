// What the copy benchmarks share: timing a command with its CPU time, medians, dropping the
// page cache, scratch files and an XFS image to copy on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace blkcopy::bench {

struct Sample {
  double seconds = 0, cpu = 0;
};

// Wall-clock seconds (steady clock).
double now();
// Runs `sh -c cmd` with its output thrown away; true when it exits 0.
bool run_quiet(const std::string& cmd);
// Syncs and, as root, drops the page cache, so that a run reads from the disk.
void drop_caches();
// Runs `sh -c cmd`, timing it and counting its CPU time (it and its children); nullopt (and a
// message) when it fails.
std::optional<Sample> time_command(const std::string& cmd);
// The sample of median time.
Sample median(std::vector<Sample> v);
// An empty file of `size` bytes at `path` (an old one is removed first).
void fresh_file(const std::string& path, uint64_t size);

// An XFS file system in a sparse image on a loop device, mounted for the run.
class XfsMount {
 public:
  explicit XfsMount(const std::filesystem::path& base);
  ~XfsMount();
  bool ok() const { return ok_; }
  const std::filesystem::path& dir() const { return mnt_; }

 private:
  std::filesystem::path img_, mnt_;
  bool ok_ = false;
};

}  // namespace blkcopy::bench
