// file: a regular file or a block device through io_uring (O_DIRECT when the file system takes
// it, buffered otherwise). Copies are offloaded with copy_file_range(2) when every leg is on one
// file system that really offloads: XFS and Btrfs share extents (reflink), NFS 4.2 and SMB copy
// on the server. Elsewhere (ext4, tmpfs, ...) copy_file_range copies through the page cache,
// slower and costlier than blkcopy's O_DIRECT emulation, so it is used only when asked for
// (`kernelcopy`). Block devices have no copy_file_range, so copies on them are emulated.
#pragma once

#include <blkcopy/device.h>

#include <sys/types.h>

#include <memory>
#include <string_view>

namespace blkcopy {

struct FileConfig {
  std::string path;
  bool read_only = false;
  bool direct = true;  // try O_DIRECT first
  bool copy = true;    // false: never offload
  bool kernel_copy = false;  // true: offload with an in-kernel page-cache copy where that is all
};

// Parses "PATH[,ro][,buffered][,nocopy][,kernelcopy]" (the part after "file:").
Result<FileConfig> parse_file_config(std::string_view spec);

enum class FileCopyMethod { none, kernel_copy, reflink, server_copy };

class FileDevice final : public Device {
 public:
  static Result<std::unique_ptr<FileDevice>> open(EventLoop& loop, std::string name,
                                                  const FileConfig& cfg);
  ~FileDevice() override;

  void submit(const Request& req, Completion done) override;
  // write_zeroes and discard through fallocate (a file system that refuses fails them with
  // EOPNOTSUPP).
  bool supports(Op op) const override { return op != Op::copy || limits_.can_offload(); }
  // The same file through a duplicated descriptor, submitting on `loop`.
  Result<std::unique_ptr<Device>> channel(EventLoop& loop) override;
  bool same_copy_domain(const Device& other) const override;
  bool same_storage(const Device& other) const override;
  DeviceInfo describe() const override;
  Status lock_storage() override;  // flock on the descriptor

  int fd() const { return fd_; }
  bool direct() const { return direct_; }
  FileCopyMethod copy_method() const { return method_; }

 private:
  FileDevice(EventLoop& loop, std::string name) : Device(loop, std::move(name)) {}
  void transfer(const Request& req, uint64_t done_bytes, Completion done);
  void copy(const Request& req, Completion done);

  FileConfig cfg_;
  int fd_ = -1;
  bool direct_ = false;
  bool block_device_ = false;
  dev_t fs_dev_ = 0;
  dev_t st_dev_ = 0;  // with st_ino_: which file or block device this is
  ino_t st_ino_ = 0;
  dev_t st_rdev_ = 0;
  std::string fs_name_;
  FileCopyMethod method_ = FileCopyMethod::none;
  std::string why_;  // how copies run and why this method was chosen
  std::string offloaded_by_;  // who copies an offloaded range, and whether data moves
};

}  // namespace blkcopy
