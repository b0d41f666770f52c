// blkcopy-bench: a 1 GiB copy done every way side by side in one run, on an XFS image (reflink),
// on the default file system and in memory, with the ratios the project aims for.
//
//   build/blkcopy-bench [--size 1G] [--dir DIR] [--reps 5] [--no-xfs]
//
// Every row copies --size bytes from a file (or mem region) holding data to a fresh destination.
// Page caches are dropped before each file run (when root) so no row reads cached data, and
// every file row ends with its data on disk (blkcopy flushes, cp is followed by sync, dd runs
// with conv=fsync, fio with end_fsync).
// Rows: blkcopy offloaded and emulated, cp --reflink=never (+ sync), dd bs=1M with O_DIRECT
// (blkcopy's emulation uses O_DIRECT too), fio reading the source while writing the destination
// (what the device can do, where fio is installed), and a memmove for the mem rows.
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>

#include "bench/bench_util.h"
#include "core/buffer.h"
#include "drivers/mem/mem_device.h"
#include "stack/dm_device.h"
#include "tools/report.h"

namespace fs = std::filesystem;
using namespace blkcopy;
using namespace blkcopy::bench;

namespace {

struct Row {
  std::string place, method;
  Sample s;  // median of the repetitions
  uint64_t host_bytes = 0;
  std::string note;
};

class Bench {
 public:
  Bench(uint64_t size, int reps) : size_(size), reps_(reps) {}

  // File rows on the file system holding `dir`. The methods take turns, once per repetition,
  // so a slow patch of a shared disk does not land on one method only.
  void files(const std::string& place, const fs::path& dir) {
    const std::string src = (dir / "bench-src").string(), dst = (dir / "bench-dst").string();
    make_source(src);
    std::vector<Method> methods;
    for (auto [name, mode] : {std::pair{"blkcopy offloaded", Emulation::allow},
                              std::pair{"blkcopy emulated", Emulation::force}}) {
      methods.push_back({name, [=, this](bool first) { return blkcopy_file(src, dst, mode, first); },
                         mode == Emulation::force ? 2 * size_ : 0});
    }
    methods.push_back(command("cp --reflink=never", dst,
                              fmt::format("cp --reflink=never {} {} && sync {}", src, dst, dst),
                              true));
    methods.push_back(command(
        "dd bs=1M O_DIRECT", dst,
        fmt::format("dd if={} of={} bs=1M count={} iflag=direct oflag=direct conv=notrunc,fsync", src,
                    dst, size_ >> 20),
        false));
    if (run_quiet("command -v fio")) {
      // Two jobs at once: read the source, write the destination (what the device can do).
      methods.push_back(command(
          "fio read+write", dst,
          fmt::format("fio --ioengine=io_uring --direct=1 --bs=1M --iodepth=32 --name=r "
                      "--rw=read --filename={} --size={} --name=w --rw=write --filename={} "
                      "--size={} --end_fsync=1",
                      src, size_, dst, size_),
          false));
    } else {
      rows_.push_back({place, "fio read+write", {}, 0, "fio not installed"});
    }
    run(place, methods);
    fs::remove(src);
    fs::remove(dst);
  }

  void mem() {
    auto dev = open_device(*loop_, fmt::format("mem:{},seed=7", 2 * size_)).value();
    std::vector<Method> methods;
    for (auto [name, mode] : {std::pair{"blkcopy offloaded", Emulation::allow},
                              std::pair{"blkcopy emulated", Emulation::force}}) {
      methods.push_back({name,
                         [this, &dev, mode](bool first) -> std::optional<Sample> {
                           CopyOptions o;
                           o.emulation = mode;
                           const double c0 = tools::process_cpu_seconds();
                           CopyResult r = copy(*dev, 0, *dev, size_, size_, o);
                           if (!r.status.ok()) throw std::runtime_error(r.status.message());
                           Sample s{r.seconds, tools::process_cpu_seconds() - c0};
                           if (first) check(*dev, size_, 7);
                           return s;
                         },
                         mode == Emulation::force ? 2 * size_ : 0});
    }
    // memmove of the same size between two prefaulted buffers.
    AlignedBuffer a(size_), b(size_);
    std::memset(a.data(), 1, size_);
    std::memset(b.data(), 2, size_);
    methods.push_back({"memmove",
                       [&](bool) -> std::optional<Sample> {
                         const double c0 = tools::process_cpu_seconds(), t0 = now();
                         std::memmove(b.data(), a.data(), size_);
                         return Sample{now() - t0, tools::process_cpu_seconds() - c0};
                       },
                       2 * size_});
    run("mem", methods);
  }

  // A copy through a striped stack of 4 mem children (copy support, a bandwidth cap each) next
  // to the same copy on one mem device with their summed bandwidth, and forced to emulate.
  void stack(const fs::path& dir) {
    const uint64_t child = size_ / 2, bw = 1ull << 30;  // 1 GiB/s a child
    const std::string table = (dir / "bench-striped.table").string();
    std::string legs;
    for (int i = 0; i < 4; ++i) legs += fmt::format(" mem:{},seed={},bw={} 0", child, 20 + i, bw);
    std::ofstream(table) << fmt::format("0 {} striped 4 2048{}\n", 4 * child / 512, legs);
    auto striped = open_device(*loop_, "dm:" + table).value();
    auto single = open_device(*loop_, fmt::format("mem:{},seed=20,bw={}", 2 * size_, 4 * bw)).value();
    std::vector<Method> methods;
    auto one = [this](Device& d, Emulation mode) {
      return [this, &d, mode](bool) -> std::optional<Sample> {
        CopyOptions o;
        o.emulation = mode;
        // The shift is a multiple of 4 chunks, so every chunk stays on its stripe.
        const double c0 = tools::process_cpu_seconds();
        CopyResult r = copy(d, 0, d, size_, size_, o);
        if (!r.status.ok()) throw std::runtime_error(r.status.message());
        if (mode == Emulation::allow && r.offloaded_bytes != size_) {
          throw std::runtime_error(d.name() + ": the copy was not all offloaded");
        }
        return Sample{r.seconds, tools::process_cpu_seconds() - c0};
      };
    };
    methods.push_back({"striped4 offloaded", one(*striped, Emulation::allow), 0});
    methods.push_back({"striped4 emulated", one(*striped, Emulation::force), 2 * size_});
    methods.push_back({"single offloaded", one(*single, Emulation::allow), 0});
    run("mem, bw cap", methods);
    fs::remove(table);
  }

  // Hydration of a clone target of `size` bytes, offloaded and emulated (nocopy), on files.
  void clone(const std::string& place, const fs::path& dir) {
    const std::string src = (dir / "bench-src").string(), dst = (dir / "bench-clone").string();
    const std::string table = (dir / "bench-clone.table").string();
    make_source(src);
    // Offloaded hydration only where the file system offloads (ext4 and tmpfs do not: their
    // copy_file_range copies through the page cache, and blkcopy emulates there by default).
    const auto probe = open_device(*loop_, "file:" + src).value();
    const bool can_offload = probe->limits().can_offload();
    if (!can_offload) {
      fmt::print("{}: clone hydration offloaded row skipped: {}\n", place,
                 probe->describe().copy_method);
    }
    std::vector<Method> methods;
    for (bool offload : {true, false}) {
      if (offload && !can_offload) continue;
      methods.push_back(
          {offload ? "clone hydrate offl." : "clone hydrate emul.",
           [=, this](bool first) -> std::optional<Sample> {
             fresh_file(dst, size_ + (1 << 20));
             std::ofstream(table) << fmt::format("0 {} clone {} file:{}{} 8192 inflight=4\n",
                                                 size_ / 512, src, dst,
                                                 offload ? "" : ",nocopy");
             drop_caches();
             auto d = open_device(*loop_, "dm:" + table).value();
             auto& c = *static_cast<DmDevice&>(*d).clones()[0];
             const double c0 = tools::process_cpu_seconds(), t0 = now();
             if (Status s = c.hydrate_all(); !s.ok()) throw std::runtime_error(s.message());
             const double t1 = now();
             if (offload != (c.status().offloaded_bytes == size_)) {
               throw std::runtime_error("clone hydration: unexpected offload count");
             }
             Sample sample{t1 - t0, tools::process_cpu_seconds() - c0};
             if (first) check(*d, 0, 7);
             return sample;
           },
           offload ? 0 : 2 * size_});
    }
    run(place, methods);
    fs::remove(src);
    fs::remove(dst);
    fs::remove(table);
  }

  void print() const {
    fmt::print("\n{:<12} {:<20} {:>9} {:>11} {:>8} {:>12}  {}\n", "where", "method", "seconds",
               "MiB/s", "CPU s", "host bytes", "");
    for (const Row& r : rows_) {
      if (r.s.seconds == 0) {
        fmt::print("{:<12} {:<20} {:>9} {:>11} {:>8} {:>12}  {}\n", r.place, r.method, "-", "-",
                   "-", "-", r.note);
        continue;
      }
      fmt::print("{:<12} {:<20} {:>9.3f} {:>11.1f} {:>8.3f} {:>12}  {}\n", r.place, r.method,
                 r.s.seconds, rate(r), r.s.cpu, format_bytes(double(r.host_bytes)), r.note);
    }
    fmt::print("\nratios of throughput (goal in brackets):\n");
    for (const auto& place : places()) {
      if (place.starts_with("mem") || rate_of(place, "blkcopy emulated") == 0) continue;
      const double emu = rate_of(place, "blkcopy emulated");
      const double best = std::max(rate_of(place, "cp --reflink=never"),
                                   rate_of(place, "dd bs=1M O_DIRECT"));
      ratio(fmt::format("{}: emulated / best of dd and cp", place), emu, best, 1.0);
      ratio(fmt::format("{}: offloaded / emulated", place), rate_of(place, "blkcopy offloaded"),
            emu, place == "xfs" ? 20.0 : 0.0);
    }
    ratio("mem: offloaded / memmove", rate_of("mem", "blkcopy offloaded"),
          rate_of("mem", "memmove"), 0.8);
    ratio("striped4 offloaded / single of same bandwidth", rate_of("mem, bw cap", "striped4 offloaded"),
          rate_of("mem, bw cap", "single offloaded"), 0.8);
    ratio("striped4 offloaded / striped4 emulated", rate_of("mem, bw cap", "striped4 offloaded"),
          rate_of("mem, bw cap", "striped4 emulated"), 0);
    for (const auto& place : places()) {
      if (rate_of(place, "clone hydrate emul.") == 0) continue;
      ratio(fmt::format("{}: clone hydration offloaded / emulated", place),
            rate_of(place, "clone hydrate offl."), rate_of(place, "clone hydrate emul."), 0);
    }
  }

 private:
  struct Method {
    std::string name;
    std::function<std::optional<Sample>(bool first)> once;  // nullopt: the tool failed
    uint64_t host_bytes;
  };

  void run(const std::string& place, const std::vector<Method>& methods) {
    std::vector<std::vector<Sample>> samples(methods.size());
    std::vector<bool> failed(methods.size());
    for (int rep = 0; rep < reps_; ++rep) {
      for (size_t i = 0; i < methods.size(); ++i) {
        if (failed[i]) continue;
        auto s = methods[i].once(rep == 0);
        if (s) {
          samples[i].push_back(*s);
        } else {
          failed[i] = true;
        }
      }
    }
    for (size_t i = 0; i < methods.size(); ++i) {
      if (failed[i]) {
        rows_.push_back({place, methods[i].name, {}, 0, "failed"});
      } else {
        rows_.push_back({place, methods[i].name, median(samples[i]), methods[i].host_bytes, ""});
      }
    }
  }

  double rate(const Row& r) const { return double(size_) / (1 << 20) / r.s.seconds; }
  double rate_of(const std::string& place, const std::string& method) const {
    for (const Row& r : rows_) {
      if (r.place == place && r.method == method && r.s.seconds > 0) return rate(r);
    }
    return 0;
  }
  std::vector<std::string> places() const {
    std::vector<std::string> p;
    for (const Row& r : rows_) {
      if (std::find(p.begin(), p.end(), r.place) == p.end()) p.push_back(r.place);
    }
    return p;
  }
  static void ratio(const std::string& what, double a, double b, double goal) {
    if (a == 0 || b == 0) {
      fmt::print("  {:<50} n/a\n", what);
      return;
    }
    const double x = a / b;
    if (goal == 0) {
      fmt::print("  {:<50} {:8.2f}x\n", what, x);
    } else {
      fmt::print("  {:<50} {:8.2f}x  [>= {:.1f}x] {}\n", what, x, goal,
                 x >= goal ? "reached" : "NOT reached");
    }
  }

  void make_source(const std::string& path) {
    fresh_file(path, size_);
    auto dev = open_device(*loop_, path).value();
    AlignedBuffer buf(8 << 20);
    for (uint64_t off = 0; off < size_; off += buf.size()) {
      fill_pattern(buf.data(), off, buf.size(), 7);
      if (Status s = submit_and_wait(*dev, Request{Op::write, off, buf.size(), buf.data()});
          !s.ok()) {
        throw std::runtime_error(s.message());
      }
    }
  }

  // Reads the copy back and compares it with the pattern: a bench of a wrong copy is worthless.
  void check(Device& dev, uint64_t at, uint64_t seed) {
    AlignedBuffer got(8 << 20), want(8 << 20);
    for (uint64_t off = 0; off < size_; off += got.size()) {
      if (!read_sync(dev, at + off, got.span()).ok()) throw std::runtime_error("read back failed");
      fill_pattern(want.data(), off, want.size(), seed);
      if (std::memcmp(got.data(), want.data(), got.size()) != 0) {
        throw std::runtime_error(fmt::format("{}: copied data differs at {}", dev.name(), off));
      }
    }
  }

  // One blkcopy file copy into a fresh destination, flushed, timed from the copy's start.
  std::optional<Sample> blkcopy_file(const std::string& src, const std::string& dst,
                                     Emulation mode, bool first) {
    fresh_file(dst, size_);
    drop_caches();
    auto s = open_device(*loop_, src, {.read_only = true}).value();
    auto d = open_device(*loop_, dst).value();
    CopyOptions o;
    o.emulation = mode;
    const double c0 = tools::process_cpu_seconds(), t0 = now();
    CopyResult r = copy(*s, 0, *d, 0, size_, o);
    if (r.status.ok()) r.status = submit_and_wait(*d, Request{Op::flush});
    const double t1 = now();
    if (!r.status.ok()) throw std::runtime_error(r.status.message());
    Sample sample{t1 - t0, tools::process_cpu_seconds() - c0};
    if (first) check(*d, 0, 7);
    return sample;
  }

  Method command(const std::string& name, const std::string& dst, const std::string& cmd,
                 bool dst_removed) {
    return {name,
            [=, this](bool) {
              if (dst_removed) {
                fs::remove(dst);
              } else {
                fresh_file(dst, size_);
              }
              drop_caches();
              return time_command(cmd);
            },
            2 * size_};
  }

  uint64_t size_;
  int reps_;
  std::unique_ptr<EventLoop> loop_ = EventLoop::create().value();
  std::vector<Row> rows_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blkcopy-bench: a copy done every way, side by side"};
  std::string size_text = "1G", dir = ".";
  int reps = 5;
  bool no_xfs = false;
  app.add_option("--size", size_text, "bytes per copy (default 1G)");
  app.add_option("--dir", dir, "a directory on the default file system (default .)");
  app.add_option("--reps", reps, "repetitions per row; the median is shown (default 5)");
  app.add_flag("--no-xfs", no_xfs, "skip the XFS rows");
  CLI11_PARSE(app, argc, argv);
  auto size = parse_size(size_text);
  if (!size || *size < (1 << 20) || *size % (8 << 20)) {
    fmt::print(stderr, "bench: --size must be a multiple of 8M\n");
    return 2;
  }
  try {
    Bench bench(*size, std::max(1, reps));
    fmt::print("blkcopy-bench: {} per copy, median of {} runs\n", format_bytes(double(*size)), reps);
    if (!no_xfs) {
      if (geteuid() != 0) {
        fmt::print("xfs rows skipped: mounting an XFS image needs root\n");
      } else {
        XfsMount xfs(fs::absolute(dir));
        if (xfs.ok()) {
          bench.files("xfs", xfs.dir());
          bench.clone("xfs", xfs.dir());
        } else {
          fmt::print("xfs rows skipped: could not make and mount an XFS image\n");
        }
      }
    }
    std::string fstype = "default";
    bench.files(fstype, fs::absolute(dir));
    bench.clone(fstype, fs::absolute(dir));
    bench.mem();
    bench.stack(fs::absolute(dir));
    bench.print();
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
