#include "drivers/scsi/scsi_device.h"

#include <blkcopy/log.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <scsi/sg.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/storage_lock.h"
#include "drivers/file/file_device.h"

namespace blkcopy {

using scsi::Sense;

namespace {

namespace fs = std::filesystem;

// "H:C:T:L" with decimal fields: the name of a SCSI device in sysfs.
bool is_hctl(const std::string& s) {
  int colons = 0;
  for (char c : s) {
    if (c == ':') {
      ++colons;
    } else if (!std::isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return colons == 3 && s.front() != ':' && s.back() != ':';
}

// The only entry of a sysfs folder ("" when absent).
std::string only_entry(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) return e.path().filename().string();
  return {};
}

// One SG_IO command, run synchronously (callers run it on a helper thread when it may take
// long). `err` is the ioctl's errno (0 when the command reached the device).
struct SgOutcome {
  int err = 0;
  uint8_t status = 0;  // SCSI status: 0 GOOD, 2 CHECK CONDITION, 8 BUSY, 0x18 RESERVATION CONFLICT
  uint16_t host_status = 0, driver_status = 0;
  std::array<uint8_t, 96> sense{};
  uint8_t sense_len = 0;
  int resid = 0;
  Sense decoded() const { return scsi::parse_sense({sense.data(), sense_len}); }
};

enum class Dir { none, to_device, from_device };

SgOutcome sg_io(int fd, std::span<const uint8_t> cdb, Dir dir, void* buf, uint32_t len,
                uint32_t timeout_ms) {
  SgOutcome o;
  sg_io_hdr_t h{};
  h.interface_id = 'S';
  h.dxfer_direction = dir == Dir::none        ? SG_DXFER_NONE
                      : dir == Dir::to_device ? SG_DXFER_TO_DEV
                                              : SG_DXFER_FROM_DEV;
  h.cmd_len = static_cast<unsigned char>(cdb.size());
  h.cmdp = const_cast<uint8_t*>(cdb.data());
  h.dxferp = len ? buf : nullptr;
  h.dxfer_len = len;
  h.mx_sb_len = static_cast<unsigned char>(o.sense.size());
  h.sbp = o.sense.data();
  h.timeout = timeout_ms;
  if (ioctl(fd, SG_IO, &h) < 0) {
    o.err = errno;
    return o;
  }
  o.status = h.status;
  o.host_status = h.host_status;
  o.driver_status = h.driver_status;
  o.sense_len = std::min<uint8_t>(h.sb_len_wr, static_cast<uint8_t>(o.sense.size()));
  o.resid = h.resid;
  return o;
}

// What went wrong with a command, or ok. `what` names the command in the message.
Status sg_status(const SgOutcome& o, const std::string& label, const char* what,
                 uint32_t timeout_ms) {
  if (o.err == EPERM || o.err == EACCES) {
    return Status::error(EPERM, fmt::format("{}: {}: not permitted (needs CAP_SYS_RAWIO: run as "
                                            "root)", label, what));
  }
  if (o.err) return Status::from_errno(o.err, fmt::format("{}: {} (SG_IO)", label, what));
  if (o.host_status == 0x03 || (o.driver_status & 0x0F) == 0x06) {
    return Status::error(ETIMEDOUT, fmt::format("{}: {}: no answer within {} ms", label, what,
                                                timeout_ms));
  }
  if (o.host_status != 0) {
    return Status::error(EIO, fmt::format("{}: {}: transport error (host status {:#x})", label,
                                          what, o.host_status));
  }
  if (o.status == 0 && (o.sense_len == 0 || o.decoded().key <= 0x1)) return {};
  if (o.status == 0x02 || o.sense_len) {
    const Sense s = o.decoded();
    return Status::error(scsi::errno_for_sense(s),
                         fmt::format("{}: {}: {}", label, what, scsi::sense_text(s)));
  }
  return Status::error(o.status == 0x18 ? EBUSY : EAGAIN,
                       fmt::format("{}: {}: SCSI status {:#04x}{}", label, what, o.status,
                                   o.status == 0x18 ? " (reservation conflict)" : " (busy)"));
}

// A data-in command at open: the answer's bytes, or an error.
Result<std::vector<uint8_t>> query(int fd, const std::string& label, const char* what,
                                   std::span<const uint8_t> cdb, uint32_t alloc) {
  std::vector<uint8_t> buf(alloc);
  SgOutcome o = sg_io(fd, cdb, Dir::from_device, buf.data(), alloc, 10000);
  if (o.status == 0x02 && scsi::retry_once(o.decoded())) {  // a reset or LUN change before us
    o = sg_io(fd, cdb, Dir::from_device, buf.data(), alloc, 10000);
  }
  if (Status s = sg_status(o, label, what, 10000); !s.ok()) return std::unexpected(s);
  buf.resize(alloc - std::min<uint32_t>(alloc, static_cast<uint32_t>(std::max(o.resid, 0))));
  return buf;
}

Result<std::vector<uint8_t>> vpd(int fd, const std::string& label, uint8_t page) {
  const auto cdb = scsi::cdb_inquiry(true, page, 1024);
  return query(fd, label, fmt::format("INQUIRY VPD page {:#04x}", page).c_str(), cdb, 1024);
}

}  // namespace

Result<ScsiConfig> parse_scsi_config(std::string_view spec) {
  return parse_path_config("scsi", spec, 60000);
}

std::optional<ScsiNodes> scsi_nodes(std::string_view path) {
  std::error_code ec;
  const std::string name = fs::path(path).filename().string();
  if (!path.starts_with("/dev/") || name.empty()) return std::nullopt;
  ScsiNodes n;
  fs::path device;
  if (name.starts_with("sg")) {
    device = fs::path("/sys/class/scsi_generic") / name / "device";
    const std::string block = only_entry(device / "block");
    if (block.empty()) return std::nullopt;  // a LUN without a block device (tape, enclosure)
    n.block = "/dev/" + block;
    n.generic = std::string(path);
  } else {
    device = fs::path("/sys/block") / name / "device";  // whole disks only: partitions lack it
    const std::string sg = only_entry(device / "scsi_generic");
    n.block = std::string(path);
    if (!sg.empty()) n.generic = "/dev/" + sg;
  }
  const fs::path real = fs::canonical(device, ec);
  if (ec) return std::nullopt;
  n.hctl = real.filename().string();
  if (!is_hctl(n.hctl)) return std::nullopt;  // virtio-blk, NVMe, ...: not SCSI
  return n;
}

// One EXTENDED COPY in flight: the parameter list and what its completion needs.
struct ScsiDevice::Xcopy {
  std::vector<uint8_t> list;
  std::array<uint8_t, 16> cdb{};
  uint32_t timeout_ms = 0;
  std::vector<uint64_t> segment_bytes;
  std::vector<std::string> sources;  // designators of the source LUNs other than this one
  bool retried = false;
  SgOutcome outcome;
  CopyReport* report = nullptr;
  Completion done;
  uint64_t total() const {
    uint64_t n = 0;
    for (uint64_t b : segment_bytes) n += b;
    return n;
  }
};

Result<std::unique_ptr<ScsiDevice>> ScsiDevice::open(EventLoop& loop, std::string name,
                                                     const ScsiConfig& cfg) {
  auto nodes = scsi_nodes(cfg.path);
  if (!nodes) {
    return fail(EINVAL, fmt::format("{}: not a SCSI disk (expected /dev/sdX, a whole disk, or "
                                    "/dev/sgN)", cfg.path));
  }
  const std::string& node = cfg.path.starts_with("/dev/sg") ? nodes->generic : nodes->block;
  const int fd = ::open(node.c_str(), (cfg.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == EACCES || errno == EPERM) {
      return fail(EACCES, fmt::format("permission denied on {}: needs {} access (root or the "
                                      "disk group)", node, cfg.read_only ? "read" : "read/write"));
    }
    return fail(errno, fmt::format("{}: {}", node, std::strerror(errno)));
  }
  std::unique_ptr<ScsiDevice> dev(new ScsiDevice(loop, std::move(name)));
  dev->fd_ = fd;
  dev->nodes_ = *nodes;
  dev->timeout_ms_ = cfg.timeout_ms;

  const auto inq_cdb = scsi::cdb_inquiry(false, 0, 96);
  auto inq = query(fd, node, "INQUIRY", inq_cdb, 96);
  if (!inq) {
    if (inq.error().code() == ENOTTY || inq.error().code() == EINVAL) {
      return fail(ENOSYS, fmt::format("{}: does not answer SCSI commands (SG_IO)", node));
    }
    return std::unexpected(inq.error());
  }
  auto q = scsi::parse_inquiry(*inq);
  if (!q) return fail(EIO, fmt::format("{}: INQUIRY answer too short ({} bytes)", node, inq->size()));
  if (q->device_type != 0) {
    return fail(EINVAL, fmt::format("{}: not a block device LUN (peripheral device type {:#04x})",
                                    node, q->device_type));
  }
  dev->inquiry_ = *q;
  if (auto pages = vpd(fd, node, 0x00)) {
    if (scsi::vpd_lists(*pages, 0x83)) {
      if (auto id = vpd(fd, node, 0x83)) dev->naa_ = scsi::parse_naa_designator(*id);
    }
    if (scsi::vpd_lists(*pages, 0xB0)) {
      if (auto bl = vpd(fd, node, 0xB0)) dev->block_limits_ = scsi::parse_block_limits(*bl);
    }
    dev->rod_tokens_ = scsi::vpd_lists(*pages, 0x8F);
  }
  const auto cap_cdb = scsi::cdb_read_capacity16(32);
  auto cap_bytes = query(fd, node, "READ CAPACITY(16)", cap_cdb, 32);
  if (!cap_bytes) return std::unexpected(cap_bytes.error());
  auto cap = scsi::parse_read_capacity16(*cap_bytes);
  if (!cap || cap->block_size < 512 || cap->block_size > 65536) {
    return fail(EIO, fmt::format("{}: READ CAPACITY(16) answer is not usable", node));
  }
  dev->block_size_ = cap->block_size;

  // The data path: the block device through io_uring (never copy_file_range: it has none).
  auto data = FileDevice::open(loop, dev->name(),
                               FileConfig{nodes->block, cfg.read_only, true, false});
  if (!data) return std::unexpected(data.error());
  dev->data_ = std::move(*data);
  dev->limits_ = dev->data_->limits();
  dev->limits_.copy_max_hw_bytes = dev->limits_.copy_max_bytes = 0;
  dev->limits_.copy_segment_max_bytes = dev->limits_.copy_max_src_segments = 0;

  // Copy limits from the copy manager's operating parameters.
  std::string& why = dev->no_offload_;
  if (!q->tpc) {
    why = "the LUN has no copy manager (INQUIRY 3PC bit clear)";
  } else if (!dev->naa_) {
    why = "VPD page 0x83 has no binary NAA designator for the LUN, so EXTENDED COPY cannot name "
          "it (LIO: set wwn/vpd_unit_serial before exporting the LUN)";
  } else {
    const auto rcr_cdb = scsi::cdb_operating_parameters(512);
    auto rcr = query(fd, node, "RECEIVE COPY RESULTS (operating parameters)", rcr_cdb, 512);
    if (!rcr) {
      why = rcr.error().message();
    } else if (!(dev->params_ = scsi::parse_operating_parameters(*rcr))) {
      why = fmt::format("{}: operating parameters answer too short ({} bytes)", node, rcr->size());
    }
  }
  if (why.empty()) {
    const scsi::CopyParameters& p = *dev->params_;
    const uint32_t bs = dev->block_size_;
    const uint64_t seg_blocks = std::min<uint64_t>(
        scsi::kMaxSegmentBlocks, p.max_segment_bytes ? p.max_segment_bytes / bs : UINT64_MAX);
    uint64_t segments = std::min<uint64_t>(p.max_segments, 256);
    if (p.max_list_bytes) {  // the header, two CSCD descriptors and the segments must fit
      const uint64_t fixed = scsi::kXcopyHeaderBytes + 2 * scsi::kCscdBytes;
      segments = std::min<uint64_t>(
          segments, p.max_list_bytes > fixed ? (p.max_list_bytes - fixed) / scsi::kSegmentBytes : 0);
    }
    if (!p.implements(scsi::kTypeBlockToBlock) || !p.implements(scsi::kTypeIdentification)) {
      why = "the copy manager lacks block-to-block segments (02h) or identification CSCD "
            "descriptors (E4h)";
    } else if (seg_blocks == 0 || segments == 0 || p.max_cscd == 0) {
      why = "the copy manager's operating parameters allow no segment";
    } else {
      QueueLimits& l = dev->limits_;
      l.copy_segment_max_bytes = seg_blocks * bs;
      l.copy_max_src_segments = static_cast<uint32_t>(segments);
      l.copy_max_hw_bytes = l.copy_max_bytes = segments * seg_blocks * bs;
    }
  }
  if (!why.empty()) log_info(fmt::format("{}: copies are emulated: {}", node, why));
  return dev;
}

ScsiDevice::~ScsiDevice() {
  if (inflight_) {
    log_error(fmt::format("{}: destroyed with {} commands in flight (a caller's bug)", name(),
                          inflight_));
  }
  data_.reset();
  if (fd_ >= 0) close(fd_);
}

bool ScsiDevice::same_copy_domain(const Device& other) const {
  auto* o = dynamic_cast<const ScsiDevice*>(&other);
  if (!o || !limits_.copy_max_hw_bytes || !o->naa_ || o->block_size_ != block_size_) return false;
  return o == this || !unreachable_.contains(o->naa_->hex());
}

Status ScsiDevice::lock_storage() { return lock_storage_exclusive(fd_, name()); }

bool ScsiDevice::same_storage(const Device& other) const {
  auto* o = dynamic_cast<const ScsiDevice*>(&other);
  if (!o) return data_->same_storage(other);
  if (naa_ && o->naa_) return naa_->bytes == o->naa_->bytes;
  return data_->same_storage(*o->data_);
}

void ScsiDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
  if (req.op != Op::copy) return data_->submit(req, std::move(done));
  copy(req, std::move(done));
}

bool ScsiDevice::supports(Op op) const {
  return op == Op::copy ? Device::supports(op) : data_->supports(op);
}

// One EXTENDED COPY to this LUN (the destination): a CSCD descriptor for it and one for each
// other source LUN, a block-to-block segment per source leg. The engine has split the copy
// within the limits: segments, blocks per segment.
void ScsiDevice::copy(const Request& req, Completion done) {
  const CopyDesc& desc = *req.copy;
  std::vector<scsi::Designator> luns{*naa_};
  auto x = std::make_shared<Xcopy>();
  std::vector<scsi::XcopySegment> segments;
  uint64_t dst_lba = desc.dst.offset / block_size_;
  for (const CopySegment& s : desc.sources) {
    if (!same_copy_domain(*s.dev)) {
      return not_offloaded(req, std::move(done),
                           name() + ": copy from a LUN outside this copy manager's reach");
    }
    const auto* src = static_cast<const ScsiDevice*>(s.dev);
    size_t index = 0;
    while (index < luns.size() && luns[index].bytes != src->naa_->bytes) ++index;
    if (index == luns.size()) {
      luns.push_back(*src->naa_);
      x->sources.push_back(src->naa_->hex());
    }
    const auto blocks = static_cast<uint16_t>(s.length / block_size_);
    segments.push_back({static_cast<uint16_t>(index), 0, blocks, s.offset / block_size_, dst_lba});
    dst_lba += blocks;
    x->segment_bytes.push_back(s.length);
  }
  if (luns.size() > params_->max_cscd) {
    return not_offloaded(req, std::move(done),
                         fmt::format("{}: a copy naming {} LUNs (the copy manager takes {})",
                                     name(), luns.size(), params_->max_cscd));
  }
  x->list = scsi::encode_extended_copy(++next_list_id_, luns, block_size_, segments);
  x->cdb = scsi::cdb_extended_copy(static_cast<uint32_t>(x->list.size()));
  // The base timeout plus a second per 16 MiB: a copy manager moves the data itself.
  const uint64_t bytes = desc.dst.length;
  x->timeout_ms = static_cast<uint32_t>(
      std::min<uint64_t>(timeout_ms_ + (bytes >> 24) * 1000, 3'600'000));
  x->report = req.report;
  x->done = std::move(done);
  ++counters_.xcopies;
  send(std::move(x));
}

void ScsiDevice::send(std::shared_ptr<Xcopy> x) {
  ++inflight_;
  loop().offload(
      [fd = fd_, x] {
        x->outcome = sg_io(fd, x->cdb, Dir::to_device, x->list.data(),
                           static_cast<uint32_t>(x->list.size()), x->timeout_ms);
        return 0;
      },
      [this, x](int) {
        --inflight_;
        const SgOutcome& o = x->outcome;
        Status s = sg_status(o, name(), "EXTENDED COPY", x->timeout_ms);
        if (s.ok()) return x->done({});
        const Sense sense = o.decoded();
        if (scsi::retry_once(sense) && !x->retried) {  // UNIT ATTENTION: nothing was done
          x->retried = true;
          ++counters_.retries;
          return send(x);
        }
        // A copy manager that reports the failed segment (COMMAND-SPECIFIC INFORMATION, low
        // 16 bits) has finished the ones before it; LIO reports none (0): nothing is known done.
        uint64_t done = 0;
        if (sense.key == 0xA && sense.command_specific) {
          const uint32_t failed = *sense.command_specific & 0xFFFF;
          for (uint32_t i = 0; i < failed && i < x->segment_bytes.size(); ++i) {
            done += x->segment_bytes[i];
          }
        }
        x->report->done_before_error = done;
        if (s.code() == EOPNOTSUPP && done == 0) {
          // The copy manager cannot do this copy (not reachable, unsupported): the engine
          // emulates it. A source it cannot reach is not tried again.
          ++counters_.refused;
          if (sense.key == 0xA && sense.asc == 0x0D && sense.ascq == 0x02) {
            unreachable_.insert(x->sources.begin(), x->sources.end());
          }
          log_info(s.message() + ": emulating this copy");
          x->report->none(x->total(), s.message());
          return x->done({});
        }
        if (s.code() == EOPNOTSUPP) s = Status::error(EIO, s.message());  // partly done
        x->done(s);
      });
}

DeviceInfo ScsiDevice::describe() const {
  DeviceInfo info{"scsi", name(), "", {}, {}};
  info.copy_method = no_offload_.empty()
                         ? "EXTENDED COPY (LID1) run by the LUN's copy manager"
                         : "none: " + no_offload_ + "; copies are emulated";
  if (no_offload_.empty()) info.offloaded_by = "the LUN's copy manager, as EXTENDED COPY (the data did not cross the link)";
  auto& d = info.details;
  d.emplace_back("block device", nodes_.block);
  d.emplace_back("generic device", nodes_.generic.empty() ? "(none: sg not loaded)" : nodes_.generic);
  d.emplace_back("hctl", nodes_.hctl);
  d.emplace_back("inquiry", fmt::format("{} {} {}", inquiry_.vendor, inquiry_.product,
                                        inquiry_.revision));
  d.emplace_back("3pc", inquiry_.tpc ? "1" : "0");
  d.emplace_back("naa", naa_ ? naa_->hex() : "(none)");
  d.emplace_back("block_length", std::to_string(block_size_));
  if (params_) {
    const scsi::CopyParameters& p = *params_;
    std::string types;
    for (uint8_t t : p.descriptor_types) types += fmt::format("{}{:02x}h", types.empty() ? "" : " ", t);
    d.emplace_back("max_cscd_descriptors", std::to_string(p.max_cscd));
    d.emplace_back("max_segment_descriptors", std::to_string(p.max_segments));
    d.emplace_back("max_list_bytes", std::to_string(p.max_list_bytes));
    d.emplace_back("max_segment_bytes", std::to_string(p.max_segment_bytes));
    d.emplace_back("max_inline_bytes", std::to_string(p.max_inline_bytes));
    d.emplace_back("held_data_limit", std::to_string(p.held_data_limit));
    d.emplace_back("descriptor_types", types);
  }
  if (block_limits_) {
    d.emplace_back("max_transfer_blocks", std::to_string(block_limits_->max_transfer_blocks));
    d.emplace_back("max_write_same_blocks", std::to_string(block_limits_->max_write_same_blocks));
  }
  d.emplace_back("token copy (ODX)",
                 rod_tokens_ ? "not used: the LUN offers ROD tokens (VPD 0x8F), blkcopy uses "
                               "EXTENDED COPY only"
                             : "not used (no VPD page 0x8F)");
  d.emplace_back("timeout", fmt::format("{} ms + 1 s per 16 MiB copied", timeout_ms_));
  return info;
}

}  // namespace blkcopy
