#include "drivers/file/file_device.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>

#include "core/storage_lock.h"

namespace blkcopy {
namespace {

constexpr uint64_t kCopyMax = 256u << 20;  // bytes per offloaded copy: keeps progress granular

struct FsKind {
  const char* name;
  FileCopyMethod method;
};

FsKind classify(long type) {
  switch (static_cast<unsigned long>(type)) {
    case XFS_SUPER_MAGIC: return {"xfs", FileCopyMethod::reflink};
    case BTRFS_SUPER_MAGIC: return {"btrfs", FileCopyMethod::reflink};
    case NFS_SUPER_MAGIC: return {"nfs", FileCopyMethod::server_copy};
    case 0xFF534D42: return {"cifs", FileCopyMethod::server_copy};  // CIFS_SUPER_MAGIC
    case 0xFE534D42: return {"smb2", FileCopyMethod::server_copy};  // SMB2_SUPER_MAGIC
    case EXT4_SUPER_MAGIC: return {"ext4", FileCopyMethod::kernel_copy};
    case TMPFS_MAGIC: return {"tmpfs", FileCopyMethod::kernel_copy};
    case OVERLAYFS_SUPER_MAGIC: return {"overlayfs", FileCopyMethod::kernel_copy};
    default: return {"other", FileCopyMethod::kernel_copy};
  }
}

// Direct I/O offset alignment of an open file, or 0 when the kernel does not say.
uint32_t dio_alignment(int fd) {
  struct statx stx {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN)) {
    return stx.stx_dio_offset_align;
  }
  return 0;
}

// Whether the file system holding `path` shares extents: XFS made with reflink=0 (or before
// reflink existed) does not, and there copy_file_range falls back to copying through the page
// cache. Probed by cloning one block between two unnamed temporary files in the same directory
// (nothing visible is created). Empty when it cannot tell (no write permission there).
std::optional<bool> shares_extents(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0                ? "/"
                                                      : path.substr(0, slash);
  const int a = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (a < 0) return std::nullopt;
  const int b = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  std::optional<bool> out;
  char block[4096] = {};
  if (b >= 0 && pwrite(a, block, sizeof block, 0) == static_cast<ssize_t>(sizeof block)) {
    if (ioctl(b, FICLONE, a) == 0) {
      out = true;
    } else if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV || errno == EINVAL) {
      out = false;
    }
  }
  if (b >= 0) ::close(b);
  ::close(a);
  return out;
}

}  // namespace

Result<FileConfig> parse_file_config(std::string_view spec) {
  FileConfig cfg;
  size_t comma = spec.find(',');
  cfg.path = std::string(spec.substr(0, comma));
  while (comma != spec.npos) {
    size_t next = spec.find(',', comma + 1);
    std::string_view opt = spec.substr(comma + 1, next - comma - 1);
    comma = next;
    if (opt == "ro") {
      cfg.read_only = true;
    } else if (opt == "buffered") {
      cfg.direct = false;
    } else if (opt == "nocopy") {
      cfg.copy = false;
    } else if (opt == "kernelcopy") {
      cfg.kernel_copy = true;
    } else {
      return fail(EINVAL, fmt::format("unknown file option '{}' (known: ro, buffered, nocopy, "
                                      "kernelcopy)",
                                      opt));
    }
  }
  if (cfg.path.empty()) return fail(EINVAL, "file device: empty path");
  return cfg;
}

FileDevice::~FileDevice() {
  if (fd_ >= 0) close(fd_);
}

Result<std::unique_ptr<FileDevice>> FileDevice::open(EventLoop& loop, std::string name,
                                                     const FileConfig& cfg) {
  std::unique_ptr<FileDevice> dev(new FileDevice(loop, std::move(name)));
  dev->cfg_ = cfg;
  const int mode = cfg.read_only ? O_RDONLY : O_RDWR;
  int fd = -1;
  if (cfg.direct) {
    fd = ::open(cfg.path.c_str(), mode | O_DIRECT | O_CLOEXEC);
    dev->direct_ = fd >= 0;
  }
  if (fd < 0 && (!cfg.direct || errno == EINVAL)) {  // EINVAL: the file system refuses O_DIRECT
    fd = ::open(cfg.path.c_str(), mode | O_CLOEXEC);
  }
  if (fd < 0) {
    return std::unexpected(Status::from_errno(errno, fmt::format("cannot open {}", cfg.path)));
  }
  dev->fd_ = fd;

  struct stat st {};
  struct statfs sfs {};
  if (fstat(fd, &st) != 0 || fstatfs(fd, &sfs) != 0) {
    return std::unexpected(Status::from_errno(errno, fmt::format("cannot stat {}", cfg.path)));
  }
  dev->st_dev_ = st.st_dev;
  dev->st_ino_ = st.st_ino;
  dev->st_rdev_ = st.st_rdev;
  QueueLimits& l = dev->limits_;
  l.read_only = cfg.read_only;
  l.max_io_bytes = 64u << 20;
  if (S_ISBLK(st.st_mode)) {
    int lbs = 512;
    uint64_t bytes = 0;
    if (ioctl(fd, BLKSSZGET, &lbs) != 0 || ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
      return std::unexpected(Status::from_errno(errno, fmt::format("ioctl on {}", cfg.path)));
    }
    dev->block_device_ = true;
    dev->fs_name_ = "block device";
    dev->why_ = "none (block device): copies are emulated";
    l.logical_block_size = static_cast<uint32_t>(lbs);
    l.capacity = bytes;
  } else if (S_ISREG(st.st_mode)) {
    const FsKind kind = classify(sfs.f_type);
    dev->fs_name_ = kind.name;
    dev->fs_dev_ = st.st_dev;
    dev->method_ = kind.method;
    // A file system that shares extents (XFS with reflink, Btrfs) asks direct I/O on a file with
    // shared extents to be aligned to its block, not the disk's sector: a file's block would
    // change from 512 to 4096 bytes under the user the first time it shares one. Its block is
    // the file system's from the start, whatever the options, and reflinks are then whole blocks.
    bool extent_blocks = false;
    switch (kind.method) {
      case FileCopyMethod::reflink:
        if (std::optional<bool> shares = shares_extents(cfg.path); shares && !*shares) {
          // reflink=0: copy_file_range would copy through the page cache, as on ext4.
          dev->method_ = cfg.kernel_copy ? FileCopyMethod::kernel_copy : FileCopyMethod::none;
          dev->why_ = cfg.kernel_copy
                          ? fmt::format("copy_file_range, copies inside the kernel through the "
                                        "page cache ({} without reflink; asked for by kernelcopy)",
                                        kind.name)
                          : fmt::format("none: this {} cannot share extents (made without "
                                        "reflink), and its copy_file_range copies through the "
                                        "page cache; copies are emulated (file:PATH,kernelcopy "
                                        "uses it anyway)",
                                        kind.name);
          break;
        }
        extent_blocks = true;
        dev->why_ = fmt::format("copy_file_range, shares extents (reflink on {})", kind.name);
        dev->offloaded_by_ = fmt::format("{}, sharing the extents (no data moved)", kind.name);
        break;
      case FileCopyMethod::server_copy:
        dev->why_ = fmt::format("copy_file_range, copied by the {} server", kind.name);
        dev->offloaded_by_ = fmt::format("the {} server (the data did not cross the network)", kind.name);
        break;
      default:
        dev->why_ = cfg.kernel_copy
                        ? fmt::format("copy_file_range, copies inside the kernel through the page "
                                      "cache ({}: no shared extents; asked for by kernelcopy)",
                                      kind.name)
                        : fmt::format("none: {} cannot share extents, and its copy_file_range "
                                      "copies through the page cache (on ext4, slower and costlier "
                                      "than blkcopy's O_DIRECT emulation); copies are emulated "
                                      "(file:PATH,kernelcopy uses it anyway)",
                                      kind.name);
        if (!cfg.kernel_copy) dev->method_ = FileCopyMethod::none;
    }
    if (!cfg.copy) {
      dev->method_ = FileCopyMethod::none;
      dev->why_ = "none (nocopy): copies are emulated";
    }
    const uint32_t align = dev->direct_ ? dio_alignment(fd) : 0;
    l.logical_block_size = std::max<uint32_t>(512, align);
    if (extent_blocks && sfs.f_bsize > 0 && sfs.f_bsize <= 65536 && std::has_single_bit(uint64_t(sfs.f_bsize))) {
      l.logical_block_size = std::max<uint32_t>(l.logical_block_size, uint32_t(sfs.f_bsize));
    }
    if (dev->method_ == FileCopyMethod::kernel_copy) {
      dev->offloaded_by_ = "the kernel: copy_file_range moved the data through the page cache (host "
                           "CPU and memory, not blkcopy's buffers)";
    }
    l.capacity = static_cast<uint64_t>(st.st_size) / l.logical_block_size * l.logical_block_size;
  } else {
    return fail(EINVAL, fmt::format("{} is neither a regular file nor a block device", cfg.path));
  }
  if (dev->method_ != FileCopyMethod::none) {
    l.copy_max_hw_bytes = kCopyMax;
    l.copy_segment_max_bytes = kCopyMax;
    l.copy_max_src_segments = 256;
    l.copy_max_bytes = kCopyMax;
  }
  return dev;
}

bool FileDevice::same_copy_domain(const Device& other) const {
  auto* f = dynamic_cast<const FileDevice*>(&other);
  return f && method_ != FileCopyMethod::none && f->method_ != FileCopyMethod::none &&
         f->fs_dev_ == fs_dev_;
}

Status FileDevice::lock_storage() { return lock_storage_exclusive(fd_, name()); }

bool FileDevice::same_storage(const Device& other) const {
  auto* f = dynamic_cast<const FileDevice*>(&other);
  if (!f) return false;
  if (block_device_ || f->block_device_) return block_device_ == f->block_device_ && st_rdev_ == f->st_rdev_;
  return f->st_dev_ == st_dev_ && f->st_ino_ == st_ino_;
}

Result<std::unique_ptr<Device>> FileDevice::channel(EventLoop& other) {
  const int fd = fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return std::unexpected(Status::from_errno(errno, fmt::format("{}: dup", name())));
  std::unique_ptr<FileDevice> c(new FileDevice(other, name()));
  c->limits_ = limits_;
  c->cfg_ = cfg_;
  c->fd_ = fd;
  c->direct_ = direct_;
  c->block_device_ = block_device_;
  c->fs_dev_ = fs_dev_;
  c->st_dev_ = st_dev_;
  c->st_ino_ = st_ino_;
  c->st_rdev_ = st_rdev_;
  c->fs_name_ = fs_name_;
  c->method_ = method_;
  c->why_ = why_;
  c->offloaded_by_ = offloaded_by_;
  return std::unique_ptr<Device>(std::move(c));
}

void FileDevice::submit(const Request& req, Completion done) {
  if (Status s = check(req); !s.ok()) return complete_later(std::move(done), std::move(s));
  auto complete = [this, op = req.op](Completion d) {
    return [this, op, d = std::move(d)](int res) {
      d(res < 0 ? Status::from_errno(-res, fmt::format("{} on {}", op_name(op), name()))
                : Status());
    };
  };
  switch (req.op) {
    case Op::read:
    case Op::write: transfer(req, 0, std::move(done)); break;
    case Op::flush: loop().fsync(fd_, complete(std::move(done))); break;
    case Op::write_zeroes:
      loop().fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, req.offset, req.length,
                       complete(std::move(done)));
      break;
    case Op::discard:  // punched holes read back as zeroes
      loop().fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, req.offset, req.length,
                       complete(std::move(done)));
      break;
    case Op::copy: copy(req, std::move(done)); break;
  }
}

// Reads or writes the whole request, resubmitting the rest after a short transfer.
void FileDevice::transfer(const Request& req, uint64_t done_bytes, Completion done) {
  auto next = [this, req, done_bytes, done = std::move(done)](int res) mutable {
    if (res < 0) {
      return done(Status::from_errno(-res, fmt::format("{} of {} bytes at {} on {}",
                                                       op_name(req.op), req.length, req.offset,
                                                       name())));
    }
    if (res == 0) {
      return done(Status::error(EIO, fmt::format("{} at {} on {}: unexpected end of file",
                                                  op_name(req.op), req.offset + done_bytes,
                                                  name())));
    }
    done_bytes += static_cast<uint64_t>(res);
    if (done_bytes == req.length) return done(Status());
    transfer(req, done_bytes, std::move(done));
  };
  auto* p = static_cast<std::byte*>(req.buf) + done_bytes;
  const auto len = static_cast<uint32_t>(req.length - done_bytes);
  if (req.op == Op::read) {
    loop().read(fd_, p, len, req.offset + done_bytes, std::move(next));
  } else {
    loop().write(fd_, p, len, req.offset + done_bytes, std::move(next));
  }
}

void FileDevice::copy(const Request& req, Completion done) {
  const CopyDesc& desc = *req.copy;
  const bool domain = std::all_of(desc.sources.begin(), desc.sources.end(),
                                  [&](const CopySegment& s) { return same_copy_domain(*s.dev); });
  if (!domain || !limits_.can_offload()) {
    return not_offloaded(req, std::move(done),
                         fmt::format("{}: copy not supported ({})", name(),
                                     domain ? "offload off" : "other file system"));
  }
  // copy_file_range blocks, so it runs on a helper thread; the descriptor outlives the call.
  auto work = [&desc, out = fd_]() -> int {
    uint64_t at = desc.dst.offset;
    for (const CopySegment& s : desc.sources) {
      const int in = static_cast<const FileDevice*>(s.dev)->fd_;
      loff_t off_in = static_cast<loff_t>(s.offset);
      loff_t off_out = static_cast<loff_t>(at);
      for (uint64_t left = s.length; left > 0;) {
        ssize_t n = copy_file_range(in, &off_in, out, &off_out, left, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return -EIO;
        left -= static_cast<uint64_t>(n);
      }
      at += s.length;
    }
    return 0;
  };
  // A refusal means nothing of that source was copied; sources before it were, and copying
  // them again (emulated) writes the same bytes: the engine's pieces never overlap themselves.
  loop().offload(std::move(work), [this, report = req.report, len = desc.dst.length,
                                   done = std::move(done)](int res) {
    if (res == -EXDEV || res == -EOPNOTSUPP || res == -ENOSYS || res == -EINVAL) {
      report->none(len, fmt::format("{}: copy_file_range refused: {}", name(),
                                    std::strerror(-res)));
      return done(Status());
    }
    done(res < 0 ? Status::from_errno(-res, fmt::format("copy_file_range on {}", name()))
                 : Status());
  });
}

DeviceInfo FileDevice::describe() const {
  DeviceInfo info{"file", name(), "", {}};
  info.copy_method = why_;
  if (method_ != FileCopyMethod::none) info.offloaded_by = offloaded_by_;
  info.details.emplace_back("path", cfg_.path);
  info.details.emplace_back("file_system", fs_name_);
  info.details.emplace_back("io", direct_ ? "direct (O_DIRECT)" : "buffered");
  return info;
}

}  // namespace blkcopy
