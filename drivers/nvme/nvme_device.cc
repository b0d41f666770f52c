#include "drivers/nvme/nvme_device.h"

#include <blkcopy/log.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/nvme_ioctl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <vector>

#include "block/fanout.h"
#include "core/storage_lock.h"
#include "nvme/copy_ranges.h"
#include "nvme/spec.h"
#include "nvme/status.h"

namespace blkcopy {

using nvme::ControllerCaps;
using nvme::NamespaceGeometry;

namespace {

// "nvmeX" + "nY" with decimal X and Y, nothing after.
bool instance_and_ns(std::string_view s, unsigned& x, unsigned& y) {
  auto num = [](std::string_view& v, unsigned& out) {
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || end == v.data()) return false;
    v.remove_prefix(static_cast<size_t>(end - v.data()));
    return true;
  };
  if (!num(s, x) || !s.starts_with("n")) return false;
  s.remove_prefix(1);
  return num(s, y) && s.empty();
}

// An admin command through the ioctl (Identify, Get/Set Features): 0 or an error naming `what`.
Status admin(int fd, const std::string& label, const char* what, uint8_t opcode, uint32_t nsid,
             uint32_t cdw10, void* data, uint32_t len) {
  nvme_admin_cmd cmd{};
  cmd.opcode = opcode;
  cmd.nsid = nsid;
  cmd.addr = reinterpret_cast<uintptr_t>(data);
  cmd.data_len = len;
  cmd.cdw10 = cdw10;
  cmd.timeout_ms = 10000;
  const int rc = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &cmd);
  if (rc < 0) {
    if (errno == EACCES || errno == EPERM) {
      return Status::error(EACCES, fmt::format("{}: {}: permission denied (admin commands need "
                                               "root, or Linux 6.2+ for Identify)",
                                               label, what));
    }
    return Status::from_errno(errno, fmt::format("{}: {}", label, what));
  }
  if (rc > 0) {
    const uint16_t code = rc & 0x7FF;
    return Status::error(nvme::errno_for_status(code),
                         fmt::format("{}: {}: NVMe status {:#05x} ({})", label, what, code,
                                     nvme::status_text(code)));
  }
  return {};
}

uint32_t sysfs_max_hw_bytes(const std::string& block) {
  const std::string dev = block.substr(block.rfind('/') + 1);
  std::ifstream in("/sys/block/" + dev + "/queue/max_hw_sectors_kb");
  uint64_t kb = 0;
  if (in >> kb && kb >= 4) return static_cast<uint32_t>(std::min<uint64_t>(kb * 1024, 1u << 30));
  return 128 * 1024;  // what every NVMe driver allows
}

}  // namespace

Result<NvmeLocalConfig> parse_nvme_local_config(std::string_view spec) {
  return parse_path_config("nvme", spec, 30000);
}

std::optional<NvmeNodes> nvme_nodes(std::string_view path) {
  unsigned x = 0, y = 0;
  if (path.starts_with("/dev/nvme")) {
    if (!instance_and_ns(path.substr(9), x, y)) return std::nullopt;
  } else if (path.starts_with("/dev/ng")) {
    if (!instance_and_ns(path.substr(7), x, y)) return std::nullopt;
  } else {
    return std::nullopt;
  }
  return NvmeNodes{fmt::format("/dev/nvme{}n{}", x, y), fmt::format("/dev/ng{}n{}", x, y),
                   fmt::format("/dev/nvme{}", x)};
}

// What namespaces of one controller opened on one loop share: its capabilities and whether
// cross-namespace copies (format 2) are on.
struct NvmeLocalDevice::Controller {
  std::string path;  // /dev/nvmeX
  ControllerCaps caps;
  bool format2 = false;
};

// One NVMe command in flight: the passthrough command and what its completion needs.
struct NvmeLocalDevice::Command {
  nvme_uring_cmd cmd{};
  std::string what;  // "read", "Copy", ...
  bool copy = false;
  unsigned attempts = 0;
  std::shared_ptr<std::vector<uint8_t>> data;  // range lists
  std::vector<uint64_t> range_bytes;            // Copy: destination bytes per range
  CopyReport* report = nullptr;
  uint64_t range_total() const {
    uint64_t n = 0;
    for (uint64_t b : range_bytes) n += b;
    return n;
  }
  Completion done;
};

Result<std::unique_ptr<NvmeLocalDevice>> NvmeLocalDevice::open(EventLoop& loop, std::string name,
                                                               const NvmeLocalConfig& cfg) {
  auto nodes = nvme_nodes(cfg.path);
  if (!nodes) {
    return fail(EINVAL, fmt::format("{}: not an NVMe namespace (expected /dev/nvmeXnY or "
                                    "/dev/ngXnY)", cfg.path));
  }
  if (!loop.supports_uring_cmd()) {
    return fail(ENOSYS, fmt::format("{}: this kernel's io_uring cannot pass NVMe commands "
                                    "through (needs Linux 5.19)", cfg.path));
  }
  const std::string& ng = nodes->generic;
  const int fd = ::open(ng.c_str(), (cfg.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) {
    if (errno == EACCES || errno == EPERM) {
      return fail(EACCES, fmt::format("permission denied on {}: needs {} access (root or the "
                                      "disk group)", ng, cfg.read_only ? "read" : "read/write"));
    }
    if (errno == ENOENT) {
      return fail(ENOENT, fmt::format("{}: no such device (the kernel makes NVMe generic devices "
                                      "from Linux 5.13)", ng));
    }
    return fail(errno, fmt::format("{}: {}", ng, std::strerror(errno)));
  }
  std::unique_ptr<NvmeLocalDevice> dev(new NvmeLocalDevice(loop, std::move(name)));
  dev->fd_ = fd;
  dev->nodes_ = *nodes;
  dev->timeout_ms_ = cfg.timeout_ms;
  const int nsid = ioctl(fd, NVME_IOCTL_ID);
  if (nsid <= 0) return fail(errno ? errno : EIO, fmt::format("{}: NVME_IOCTL_ID failed", ng));
  dev->nsid_ = static_cast<uint32_t>(nsid);

  // The controller: shared by the namespaces of /dev/nvmeX opened on this loop.
  thread_local std::map<std::pair<EventLoop*, std::string>, std::weak_ptr<Controller>> shared;
  auto& slot = shared[{&loop, nodes->controller}];
  dev->ctrl_ = slot.lock();
  if (!dev->ctrl_) {
    auto c = std::make_shared<Controller>();
    c->path = nodes->controller;
    std::vector<uint8_t> id(4096);
    if (Status s = admin(fd, ng, "Identify Controller", nvme::admin::kIdentify, 0,
                         nvme::kCnsController, id.data(), 4096);
        !s.ok()) {
      return std::unexpected(s);
    }
    c->caps = nvme::parse_identify_controller(id);
    if (c->caps.copy() && (c->caps.ocfs & 0x4) && !cfg.read_only) {
      // Format 2 offered: turn it on with Host Behavior Support CDFE, keeping the other fields
      // (the kernel sets ACRE there). Optional: without it copies stay within a namespace.
      std::vector<uint8_t> hbs(512, 0);
      Status s = admin(fd, ng, "Get Features Host Behavior Support", nvme::admin::kGetFeatures, 0,
                       nvme::kFeatHostBehavior, hbs.data(), 512);
      if (s.ok()) {
        hbs[nvme::kHostBehaviorCdfe] |= 0x04;
        s = admin(fd, ng, "Set Features Host Behavior Support", nvme::admin::kSetFeatures, 0,
                  nvme::kFeatHostBehavior, hbs.data(), 512);
      }
      c->format2 = s.ok();
      if (!s.ok()) log_info(s.message() + ": copies between namespaces are emulated");
    }
    slot = c;
    dev->ctrl_ = std::move(c);
  }

  std::vector<uint8_t> id(4096);
  if (Status s = admin(fd, ng, "Identify Namespace", nvme::admin::kIdentify, dev->nsid_,
                       nvme::kCnsNamespace, id.data(), 4096);
      !s.ok()) {
    return std::unexpected(s);
  }
  auto g = nvme::parse_identify_namespace(id, ng);
  if (!g) return std::unexpected(g.error());
  if (g->metadata_size || (g->dps & 7)) {
    return fail(EOPNOTSUPP,
                fmt::format("{}: formatted with {} bytes of metadata per block{}: blkcopy does not "
                            "carry metadata or protection information, and copying such blocks "
                            "without it would break their checks (format the namespace without "
                            "metadata, e.g. nvme format --lbaf=N, to use it)",
                            ng, g->metadata_size,
                            (g->dps & 7) ? fmt::format(" (protection information type {})", g->dps & 7)
                                         : std::string()));
  }
  dev->geo_ = *g;
  const uint32_t max_transfer = dev->ctrl_->caps.max_transfer(sysfs_max_hw_bytes(nodes->block));
  nvme::fill_limits(dev->limits_, *g, dev->ctrl_->caps, max_transfer);
  dev->limits_.read_only = cfg.read_only;
  return dev;
}

NvmeLocalDevice::~NvmeLocalDevice() {
  if (inflight_) {
    log_error(fmt::format("{}: destroyed with {} commands in flight (a caller's bug)", name(),
                          inflight_));
  }
  if (fd_ >= 0) close(fd_);
}

Result<std::unique_ptr<Device>> NvmeLocalDevice::channel(EventLoop& other) {
  const int fd = fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(Status::from_errno(errno, fmt::format("{}: dup", name())));
  std::unique_ptr<NvmeLocalDevice> c(new NvmeLocalDevice(other, name()));
  c->limits_ = limits_;
  c->ctrl_ = ctrl_;
  c->nodes_ = nodes_;
  c->fd_ = fd;
  c->nsid_ = nsid_;
  c->timeout_ms_ = timeout_ms_;
  c->geo_ = geo_;
  return std::unique_ptr<Device>(std::move(c));
}

bool NvmeLocalDevice::supports(Op op) const {
  switch (op) {
    case Op::write_zeroes: return ctrl_->caps.oncs & nvme::idctrl::kOncsWriteZeroes;
    case Op::discard: return ctrl_->caps.oncs & nvme::idctrl::kOncsDsm;
    default: return Device::supports(op);
  }
}

bool NvmeLocalDevice::same_copy_domain(const Device& other) const {
  auto* o = dynamic_cast<const NvmeLocalDevice*>(&other);
  if (!o || o->ctrl_ != ctrl_ || !ctrl_->caps.copy()) return false;
  return o->nsid_ == nsid_ ||
         (ctrl_->format2 && o->geo_.block_size == geo_.block_size);
}

Status NvmeLocalDevice::lock_storage() { return lock_storage_exclusive(fd_, name()); }

bool NvmeLocalDevice::same_storage(const Device& other) const {
  auto* o = dynamic_cast<const NvmeLocalDevice*>(&other);
  return o && o->ctrl_ == ctrl_ && o->nsid_ == nsid_;
}

void NvmeLocalDevice::issue(std::shared_ptr<Command> c) {
  ++counters_.commands;
  ++inflight_;
  loop().uring_cmd(fd_, NVME_URING_CMD_IO, &c->cmd, sizeof c->cmd, [this, c](int res, uint64_t result) {
    --inflight_;
    if (res == 0) return c->done({});
    if (res < 0) {
      return c->done(Status::from_errno(-res, fmt::format("{}: {} (passthrough on {})", name(),
                                                          c->what, nodes_.generic)));
    }
    // The completion's status field: SC 7:0, SCT 10:8, CRD 12:11, More 13, DNR 14.
    const uint16_t code = res & 0x7FF;
    const bool dnr = res & 0x4000;
    // The controller says trying again may work. Not for Copy: after a partial Copy whose
    // source and destination overlap, running it again from the start would copy changed data.
    if (!dnr && !c->copy && c->attempts < 2) {
      ++c->attempts;
      ++counters_.retries;
      return issue(c);
    }
    if (c->copy && nvme::copy_not_supported(code)) {
      c->report->none(c->range_total(), fmt::format("{}: the controller did not take the Copy: "
                                                    "NVMe status {:#05x} ({})",
                                                    name(), code, nvme::status_text(code)));
      return c->done({});
    }
    if (c->copy) {
      // DW0: the first range not copied; the ones before it are on the destination.
      const uint32_t first = static_cast<uint32_t>(result);
      uint64_t done = 0;
      for (uint32_t i = 0; i < first && i < c->range_bytes.size(); ++i) done += c->range_bytes[i];
      c->report->done_before_error = done;
    }
    c->done(Status::error(nvme::errno_for_status(code),
                          fmt::format("{}: {}: NVMe status {:#05x} ({}){}", name(), c->what, code,
                                      nvme::status_text(code), dnr ? "" : " after retries")));
  });
}

void NvmeLocalDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
  const uint32_t lbs = geo_.block_size;
  auto make = [&](uint8_t opcode, const char* what, uint64_t lba, uint32_t blocks) {
    auto c = std::make_shared<Command>();
    c->what = what;
    c->cmd.opcode = opcode;
    c->cmd.nsid = nsid_;
    c->cmd.cdw10 = static_cast<uint32_t>(lba);
    c->cmd.cdw11 = static_cast<uint32_t>(lba >> 32);
    c->cmd.cdw12 = blocks ? blocks - 1 : 0;
    c->cmd.timeout_ms = timeout_ms_;
    return c;
  };
  const uint64_t lba = req.offset / lbs;
  const uint64_t blocks = req.length / lbs;
  switch (req.op) {
    case Op::read:
    case Op::write: {  // max_io_bytes keeps a request within one transfer
      const bool rd = req.op == Op::read;
      auto c = make(rd ? nvme::io::kRead : nvme::io::kWrite, rd ? "read" : "write", lba,
                    static_cast<uint32_t>(blocks));
      c->cmd.addr = reinterpret_cast<uintptr_t>(req.buf);
      c->cmd.data_len = static_cast<uint32_t>(req.length);
      c->done = std::move(done);
      return issue(std::move(c));
    }
    case Op::flush: {
      auto c = make(nvme::io::kFlush, "flush", 0, 0);
      c->cmd.cdw10 = c->cmd.cdw11 = c->cmd.cdw12 = 0;
      c->done = std::move(done);
      return issue(std::move(c));
    }
    case Op::write_zeroes:
    case Op::discard: {
      const bool zeroes = req.op == Op::write_zeroes;
      const uint16_t bit = zeroes ? nvme::idctrl::kOncsWriteZeroes : nvme::idctrl::kOncsDsm;
      if (!(ctrl_->caps.oncs & bit)) {
        return complete_later(std::move(done),
                              Status::error(EOPNOTSUPP, fmt::format("{}: the controller has no {}",
                                                                    name(), zeroes ? "Write Zeroes"
                                                                                   : "Deallocate")));
      }
      // Write Zeroes: at most 65536 blocks a command; Deallocate: one range of at most 2^32 - 1.
      const uint64_t step = zeroes ? 65536 : 0xFFFFFFFFu;
      Fanout* f = Fanout::start(loop(), std::move(done));
      for (uint64_t at = 0; at < blocks;) {
        const uint32_t n = static_cast<uint32_t>(std::min(step, blocks - at));
        std::shared_ptr<Command> c;
        if (zeroes) {
          c = make(nvme::io::kWriteZeroes, "write zeroes", lba + at, n);
        } else {
          c = make(nvme::io::kDsm, "deallocate", 0, 0);
          c->data = std::make_shared<std::vector<uint8_t>>(16, 0);
          const uint64_t slba = lba + at;
          std::memcpy(c->data->data() + 4, &n, 4);
          std::memcpy(c->data->data() + 8, &slba, 8);
          c->cmd.addr = reinterpret_cast<uintptr_t>(c->data->data());
          c->cmd.data_len = 16;
          c->cmd.cdw10 = 0;       // one range
          c->cmd.cdw11 = 1u << 2;  // deallocate
          c->cmd.cdw12 = 0;
        }
        c->done = f->part();
        issue(std::move(c));
        at += n;
      }
      f->submitted();
      return;
    }
    case Op::copy: return copy(req, std::move(done));
  }
}

// One Copy command: every source leg becomes a range (format 0 when all lie in this namespace,
// format 2 with each range's namespace otherwise). The engine has split the copy within the
// limits, so the list fits MSRC, MSSRL and MCL.
void NvmeLocalDevice::copy(const Request& req, Completion done) {
  const CopyDesc& desc = *req.copy;
  bool local = true;
  for (const CopySegment& s : desc.sources) {
    if (!same_copy_domain(*s.dev)) {
      return not_offloaded(req, std::move(done), name() + ": copy from outside this controller");
    }
    local &= static_cast<const NvmeLocalDevice*>(s.dev)->nsid_ == nsid_;
  }
  const uint8_t format = local ? 0 : 2;
  std::vector<nvme::CopySource> sources;
  auto c = std::make_shared<Command>();
  for (const CopySegment& s : desc.sources) {
    const auto* src = static_cast<const NvmeLocalDevice*>(s.dev);
    sources.push_back({local ? 0 : src->nsid_, s.offset / src->geo_.block_size,
                       static_cast<uint32_t>(s.length / src->geo_.block_size)});
    c->range_bytes.push_back(s.length);
  }
  c->data = std::make_shared<std::vector<uint8_t>>(nvme::encode_copy_ranges(sources, format));
  const uint64_t sdlba = desc.dst.offset / geo_.block_size;
  c->what = "Copy";
  c->copy = true;
  c->report = req.report;
  c->cmd.opcode = nvme::io::kCopy;
  c->cmd.nsid = nsid_;
  c->cmd.addr = reinterpret_cast<uintptr_t>(c->data->data());
  c->cmd.data_len = static_cast<uint32_t>(c->data->size());
  c->cmd.cdw10 = static_cast<uint32_t>(sdlba);
  c->cmd.cdw11 = static_cast<uint32_t>(sdlba >> 32);
  c->cmd.cdw12 = static_cast<uint32_t>(desc.sources.size() - 1) | (uint32_t{format} << 8);
  c->cmd.timeout_ms = timeout_ms_;
  c->done = std::move(done);
  ++counters_.copies;
  issue(std::move(c));
}

DeviceInfo NvmeLocalDevice::describe() const {
  DeviceInfo info{"nvme", name(), "", {}, {}};
  const ControllerCaps& caps = ctrl_->caps;
  info.copy_method =
      caps.copy() ? fmt::format("NVMe Copy on the controller (format 0{})",
                                ctrl_->format2 ? "; format 2 between its namespaces" : "")
                  : "none: the controller has no Copy (ONCS bit 8 clear); copies are emulated";
  if (caps.copy()) info.offloaded_by = "the controller, as NVMe Copy commands (the data did not cross PCIe)";
  info.details.emplace_back("controller", ctrl_->path);
  info.details.emplace_back("generic device", nodes_.generic);
  info.details.emplace_back("namespace", std::to_string(nsid_));
  info.details.emplace_back("commands", "io_uring passthrough (uring_cmd)");
  info.details.emplace_back("timeout", fmt::format("{} ms", timeout_ms_));
  nvme::describe_identify(info, geo_, caps);
  return info;
}

}  // namespace blkcopy
