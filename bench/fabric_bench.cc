// blkcopy-fabric-bench: the 2023 fabric experiment. Copies `--total` bytes on a remote
// namespace as many copies of --copy bytes made of --ranges source ranges each, with
// --depth copies in flight, either emulated by this host (read over the network, write back)
// or offloaded to the target (NVMe Copy). Prints one line of JSON: MiB/s and bytes each way on
// the wire. bench/fabric.sh runs it across a shaped 1 Gb/s link and over loopback.
#include <blkcopy/copy.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>


using namespace blkcopy;

int main(int argc, char** argv) {
  CLI::App app{"blkcopy-fabric-bench"};
  std::string device, total_text = "1G", copy_text = "8k", mode = "offload";
  unsigned ranges = 1, depth = 16;
  app.add_option("DEVICE", device, "nvme-tcp://HOST:PORT/NQN?ns=N")->required();
  app.add_option("--total", total_text, "bytes to copy in all (default 1G)");
  app.add_option("--copy", copy_text, "bytes per copy (default 8k)");
  app.add_option("--ranges", ranges, "source ranges per copy (default 1)");
  app.add_option("--depth", depth, "copies in flight (default 16)");
  app.add_option("--mode", mode, "offload or emulate");
  CLI11_PARSE(app, argc, argv);
  const uint64_t total = parse_size(total_text).value(), each = parse_size(copy_text).value();
  const uint64_t range = each / ranges, copies = total / each;

  auto loop = EventLoop::create().value();
  auto dev_r = open_device(*loop, device);
  if (!dev_r) {
    fmt::print(stderr, "fabric-bench: {}\n", dev_r.error().message());
    return 1;
  }
  Device& dev = **dev_r;
  auto wire = [&dev] { return dev.wire_counters().value_or(Device::WireCounters{}); };
  // Sources are spread over the first half of the namespace, destinations in the second; the
  // ranges of one copy are scattered (every other range-sized slot), as garbage collection does.
  const uint64_t half = dev.limits().capacity / 2;
  CopyOptions opt;
  opt.emulation = mode == "emulate" ? Emulation::force : Emulation::never;
  opt.chunk_bytes = std::max<uint64_t>(range, 4096);
  opt.buffer_bytes = std::max<uint64_t>(each, 64 * 1024);
  const uint64_t sent0 = wire().sent, recv0 = wire().received;
  uint64_t next = 0, done = 0, failed = 0, offloaded = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::function<void()> start_one = [&] {
    const uint64_t i = next++;
    std::vector<CopySegment> srcs;
    for (unsigned r = 0; r < ranges; ++r) {
      srcs.push_back({&dev, ((i * ranges + r) * 2 * range) % half, range});
    }
    const uint64_t dst = half + (i * each) % half;
    Status s = copy_async(srcs, dev, dst, opt, [&](CopyResult res) {
      ++done;
      if (!res.status.ok() && failed++ == 0) fmt::print(stderr, "fabric-bench: {}\n", res.status.message());
      offloaded += res.offloaded_bytes;
      if (next < copies) start_one();
    });
    if (!s.ok()) {
      fmt::print(stderr, "fabric-bench: {}\n", s.message());
      std::exit(1);
    }
  };
  for (unsigned k = 0; k < depth && next < copies; ++k) start_one();
  if (Status s = loop->run_until([&] { return done == copies; }); !s.ok()) {
    fmt::print(stderr, "fabric-bench: {}\n", s.message());
    return 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(
      "{{\"mode\": \"{}\", \"copy\": {}, \"ranges\": {}, \"copies\": {}, \"bytes\": {}, "
      "\"seconds\": {:.4f}, \"mib_s\": {:.1f}, \"sent\": {}, \"received\": {}, \"failed\": {}, "
      "\"offloaded\": {}}}\n",
      mode, each, ranges, copies, copies * each, secs, double(copies * each) / (1 << 20) / secs,
      wire().sent - sent0, wire().received - recv0, failed, offloaded);
  return failed ? 1 : 0;
}
