// blkcopy copy SRC[@OFF] DST[@OFF] [--length LEN | --range OFF:LEN ...]: without a length, all
// of SRC from its offset, as dd and cp copy; a destination file that does not exist is made,
// of the size the copy needs (an existing one is never truncated; --no-create refuses).
#include <blkcopy/copy.h>
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "tools/commands.h"
#include "tools/interrupt.h"
#include "tools/report.h"
#include "tools/target_report.h"

namespace blkcopy::tools {
namespace {

struct Args {
  std::string src, dst;
  std::string length;
  std::vector<std::string> ranges;
  bool no_emulation = false, emulate = false;
  std::string copy_max_bytes, buffer, chunk;
  bool progress = false, json = false, no_create = false;
  unsigned copies_in_flight = 8;
};

struct Endpoint {
  std::string device;
  uint64_t offset = 0;
};

// "DEV@OFF": the offset follows the last '@' when it parses as a size; otherwise it is all DEV.
Result<Endpoint> parse_endpoint(const std::string& text) {
  const size_t at = text.rfind('@');
  if (at == std::string::npos) return Endpoint{text, 0};
  auto off = parse_size(std::string_view(text).substr(at + 1));
  if (!off) {
    return fail(EINVAL, fmt::format("invalid offset in '{}': {}", text, off.error().message()));
  }
  return Endpoint{text.substr(0, at), *off};
}

Result<uint64_t> parse_named_size(const char* what, const std::string& text) {
  auto v = parse_size(text);
  if (!v) return fail(EINVAL, fmt::format("{}: {}", what, v.error().message()));
  return *v;
}

// The file a device string names, when it is a file that does not exist yet (a plain path or
// file:PATH[,options]); nullopt otherwise (it exists, or it is another kind of device).
std::optional<std::string> missing_file(const std::string& dev) {
  auto f = file_spec(dev);
  if (!f || f->scheme == "dm:") return std::nullopt;  // mem:, nvme-tcp://, a stack
  struct stat st {};
  if (f->path.empty() || ::stat(f->path.c_str(), &st) == 0 || errno != ENOENT) return std::nullopt;
  return f->path;
}

// Makes `path` a new regular file of `size` bytes (never over an existing one).
Status create_file(const std::string& path, uint64_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) return Status::error(errno, fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  const int rc = ::ftruncate(fd, static_cast<off_t>(size));
  const int e = errno;
  ::close(fd);
  if (rc != 0) {
    ::unlink(path.c_str());
    return Status::error(e, fmt::format("cannot make {} {} bytes long: {}", path, size, std::strerror(e)));
  }
  return {};
}

int exit_code_for(const CopyResult& r) {
  if (r.status.ok()) return kOk;
  if (r.invalid) return kBadInput;
  if (r.status.code() == EOPNOTSUPP) return kNotSupported;
  return kIoError;
}

int run_copy(const Args& a) {
  if (a.no_emulation && a.emulate) {
    return report_error(kBadInput, "--no-emulation and --emulate exclude each other");
  }
  auto src_ep = parse_endpoint(a.src);
  auto dst_ep = parse_endpoint(a.dst);
  if (!src_ep) return report_error(kBadInput, src_ep.error().message());
  if (!dst_ep) return report_error(kBadInput, dst_ep.error().message());

  // The source ranges, as (offset, length) on SRC.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  if (!a.ranges.empty()) {
    if (src_ep->offset != 0) {
      return report_error(kBadInput, "give the source offsets in --range OFF:LEN, not as "
                                     "SRC@OFF, for a vectored copy");
    }
    for (const std::string& r : a.ranges) {
      const size_t colon = r.find(':');
      if (colon == std::string::npos) {
        return report_error(kBadInput, fmt::format("--range '{}': expected OFF:LEN", r));
      }
      auto off = parse_named_size("--range offset", r.substr(0, colon));
      auto len = parse_named_size("--range length", r.substr(colon + 1));
      if (!off) return report_error(kBadInput, off.error().message());
      if (!len) return report_error(kBadInput, len.error().message());
      ranges.emplace_back(*off, *len);
    }
    if (!a.length.empty()) {  // optional with --range: then it must be the total
      auto len = parse_named_size("--length", a.length);
      if (!len) return report_error(kBadInput, len.error().message());
      uint64_t total = 0;
      for (auto [off, n] : ranges) total += n;
      if (*len != total) {
        return report_error(kBadInput, fmt::format("--length {} is not the sum {} of the --range "
                                                   "lengths",
                                                   *len, total));
      }
    }
  } else if (!a.length.empty()) {
    auto len = parse_named_size("--length", a.length);
    if (!len) return report_error(kBadInput, len.error().message());
    ranges.emplace_back(src_ep->offset, *len);
  }  // else: all of SRC from its offset, once it is open

  CopyOptions opt;
  opt.emulation = a.no_emulation ? Emulation::never
                  : a.emulate    ? Emulation::force
                                 : Emulation::allow;
  if (!a.buffer.empty()) {
    auto v = parse_named_size("--buffer", a.buffer);
    if (!v) return report_error(kBadInput, v.error().message());
    opt.buffer_bytes = *v;
  }
  if (!a.chunk.empty()) {
    auto v = parse_named_size("--chunk", a.chunk);
    if (!v) return report_error(kBadInput, v.error().message());
    opt.chunk_bytes = *v;
  }
  opt.max_copies_in_flight = a.copies_in_flight;

  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  // The destination first, then the source (read-only unless it is the destination itself):
  // a local NVMe controller is set up by its first open (Host Behavior Support for copies
  // between its namespaces), which must be the writable one. A destination file that does not
  // exist is made after the source is open: without a length, the copy is all of the source
  // from its offset, and the file is made that long.
  const bool same = src_ep->device == dst_ep->device;
  const std::optional<std::string> missing = same ? std::nullopt : missing_file(dst_ep->device);
  if (missing && a.no_create) {
    return report_error(kBadInput, fmt::format("{} does not exist (--no-create: it is not made)", *missing));
  }
  Result<std::unique_ptr<Device>> dst = fail(ENOENT, "not opened");
  auto open_dst = [&]() {
    dst = open_device(**loop, dst_ep->device);
    return dst ? kOk : report_error(open_exit_code(dst_ep->device, dst.error()), dst.error().message());
  };
  if (!missing) {
    if (int code = open_dst(); code != kOk) return code;
  }
  std::unique_ptr<Device> src_owned;
  if (!same) {
    auto s = open_device(**loop, src_ep->device, {.read_only = true});
    if (!s) return report_error(open_exit_code(src_ep->device, s.error()), s.error().message());
    src_owned = std::move(*s);
  }
  Device* src = same ? dst->get() : src_owned.get();
  if (ranges.empty()) {  // all of SRC from its offset
    const uint64_t cap = src->limits().capacity, off = src_ep->offset;
    const uint32_t block = src->limits().logical_block_size;
    // The unit a length must be a multiple of: the larger of the two devices' blocks.
    const uint32_t unit = std::max(block, dst ? (*dst)->limits().logical_block_size : block);
    const auto file = regular_file(src_ep->device);
    const auto size = file ? std::optional<uint64_t>(uint64_t(file->st_size)) : std::nullopt;
    // A file that ends inside a block: its device ends at the last whole block, and copying
    // "all of it" would leave the tail behind without a word.
    if (size && *size > cap && off < *size) {
      const uint64_t whole = off < cap ? (cap - off) / unit * unit : 0;
      return report_error(kBadInput, fmt::format(
          "{}: its {} bytes end {} bytes into a {}-byte block, and copies go by whole blocks; {}",
          src_ep->device, *size, *size - cap, block,
          off % block ? fmt::format("the offset must be a multiple of {} too", block)
          : whole     ? fmt::format("give --length {} to copy the whole blocks (cp copies the rest)", whole)
          : off == 0  ? std::string("it holds no whole block (cp copies it)")
                      : std::string("nothing whole is left from that offset (cp copies it)")));
    }
    if (off >= cap) {
      return report_error(kBadInput, fmt::format("{}: offset {} is at or past its end ({} bytes): "
                                                 "nothing to copy", src_ep->device, off, size.value_or(cap)));
    }
    ranges.emplace_back(off, cap - off);
  }
  std::optional<std::string> created;
  if (missing) {
    uint64_t need = dst_ep->offset;
    for (auto [off, len] : ranges) need += len;
    if (Status st = create_file(*missing, need); !st.ok()) return report_error(kBadInput, st.message());
    created = missing;
    if (int code = open_dst(); code != kOk) {
      ::unlink(created->c_str());
      return code;
    }
  }
  if (!a.copy_max_bytes.empty()) {
    auto v = parse_named_size("--copy-max-bytes", a.copy_max_bytes);
    if (!v) return report_error(kBadInput, v.error().message());
    if (Status s = (*dst)->set_copy_max_bytes(*v); !s.ok()) {
      return report_error(kBadInput, s.message());
    }
  }

  std::vector<CopySegment> sources;
  for (auto [off, len] : ranges) sources.push_back({src, off, len});

  // Bytes on the wire of a remote (nvme-tcp) device: the saving of offloaded copies shows here.
  auto wire = [](Device* d) -> std::pair<uint64_t, uint64_t> {
    auto w = d ? d->wire_counters() : std::nullopt;
    return w ? std::pair{w->sent, w->received} : std::pair{0ul, 0ul};
  };
  Device* remote = (*dst)->wire_counters() ? dst->get() : src->wire_counters() ? src : nullptr;
  const auto wire_before = wire(remote);
  ProgressBar bar(!a.json && !quiet() && isatty(STDERR_FILENO), a.progress && !quiet());
  opt.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  opt.cancel = &catch_interrupts();
  const double cpu_before = process_cpu_seconds();
  CopyResult r = copy_ranges(sources, **dst, dst_ep->offset, opt);
  const double cpu = process_cpu_seconds() - cpu_before;  // the copy's, not start-up's
  bar.finish();

  if (created && r.invalid) {  // refused before anything was written: the made file goes
    ::unlink(created->c_str());
    created.reset();
  }
  const auto wire_after = wire(remote);
  // How the target did the Copies it was sent, from its report (blkcopy's target keeps one;
  // another says it does not), read after the wire was counted.
  std::optional<Result<nvme::TargetCopyReport>> on_target;
  if (r.offloaded_bytes) on_target = read_target_report(**dst, std::chrono::seconds(5), opt.cancel, r.offloaded_bytes);
  const uint64_t sent = wire_after.first - wire_before.first;
  const uint64_t received = wire_after.second - wire_before.second;
  if (a.json) {
    auto j = result_json(r);
    j["cpu_seconds"] = microseconds(cpu);
    if (created) j["created"] = *created;
    // How the destination offloads a copy, and why (or why it cannot): offload or emulation
    // was chosen from this.
    const DeviceInfo info = (*dst)->describe();
    j["copy_method"] = info.copy_method;
    // Who did the offloaded bytes' copying, and whether data moved (the kernel's page-cache
    // copy moves it; a reflink or a controller does not).
    if (r.offloaded_bytes) j["offloaded_by"] = info.offloaded_by;
    if (on_target) j["target"] = target_report_json(*on_target);
    if (remote) {
      j["wire_bytes_sent"] = sent;
      j["wire_bytes_received"] = received;
    }
    fmt::print("{}\n", j.dump(2));
  } else if (!r.invalid && !(quiet() && r.status.ok())) {  // -q: nothing on success
    if (created) fmt::print("created    {} ({} bytes)\n", *created, (*dst)->limits().capacity);
    fmt::print("{}", result_text(r));
    if (r.offloaded_bytes) fmt::print("offloaded  by {}\n", (*dst)->describe().offloaded_by);
    if (on_target) fmt::print("{}", target_report_text(*on_target));
    if (on_target && !*on_target) log_info((*on_target).error().message());
    if (remote) {
      fmt::print("wire       sent {}, received {} ({})\n", format_bytes(double(sent)),
                 format_bytes(double(received)), remote->name());
    }
  }
  const int code = exit_code_for(r);
  if (r.status.code() == ECANCELED && interrupt_signal()) {
    report_error(kIoError, fmt::format("interrupted by SIG{} after copying {} bytes{} (the "
                                       "destination holds them; the rest is as before or torn)",
                                       sigabbrev_np(interrupt_signal()), r.bytes,
                                       r.backward ? ", from the end" : ""));
    return interrupted_exit_code();
  }
  if (code == kIoError || code == kNotSupported) {
    report_error(code, fmt::format("{} (copied {} bytes{} before the failure)",
                                   r.status.message(), r.bytes,
                                   r.backward ? ", from the end" : ""));
  } else if (code != kOk) {
    report_error(code, r.status.message());
  }
  return code;
}

}  // namespace

void add_copy_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "copy", "Copy a range (or several source ranges) within or between devices, offloaded "
              "where the device can and emulated otherwise");
  cmd->add_option("SRC", a->src, "source device[@OFFSET]")->required();
  cmd->add_option("DST", a->dst, "destination device[@OFFSET]")->required();
  cmd->add_option("-l,--length", a->length, "bytes to copy (512, 4k, 1M, 2G; default: all of SRC from its offset)");
  cmd->add_option("-r,--range", a->ranges,
                  "a source range OFF:LEN of SRC; repeat for a vectored copy into one "
                  "contiguous destination");
  cmd->add_flag("--no-emulation", a->no_emulation,
                "fail (exit 3) instead of emulating what cannot be offloaded");
  cmd->add_flag("--emulate", a->emulate, "emulate everything: read into host memory, write back");
  cmd->add_option("--copy-max-bytes,--copy-max", a->copy_max_bytes,
                  "set the destination's copy_max_bytes limit first (0 turns offload off)");
  cmd->add_option("--buffer", a->buffer, "host memory for emulation (default 64M)");
  cmd->add_option("--chunk", a->chunk, "bytes per emulated read/write (default 4M)");
  cmd->add_option("--copies-in-flight", a->copies_in_flight,
                  "offloaded copy commands at once (default 8)")
      ->check(CLI::Range(1u, 1024u));
  cmd->add_flag("--no-create", a->no_create, "refuse a destination file that does not exist "
                                            "(by default it is made, of the size the copy needs)");
  cmd->add_flag("--progress", a->progress, "show a progress bar even when not on a terminal");
  cmd->add_flag("--json", a->json, "print the result as one JSON object");
  cmd->callback([a, &exit_code] { exit_code = run_copy(*a); });
}

}  // namespace blkcopy::tools
