#include "core/storage_lock.h"

#include <blkcopy/log.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace blkcopy {
namespace {

// "pid 1234 (blkcopy serve --ns dm:t.table)" for the process holding a flock on st's inode, or
// "" when /proc/locks does not say.
std::string holder(const struct stat& st) {
  // Lines read: "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (major:minor in hex).
  const std::string key = fmt::format("{:02x}:{:02x}:{}", major(st.st_dev), minor(st.st_dev),
                                      st.st_ino);
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string id, kind, mode, access, pid, inode;
    if (!(in >> id >> kind)) continue;
    if (kind == "->") in >> kind;  // a waiter: "1: -> FLOCK ..."
    if (!(in >> mode >> access >> pid >> inode) || kind != "FLOCK" || inode != key) continue;
    if (pid == std::to_string(::getpid())) {
      return "this process (the same storage under another device string or table)";
    }
    std::ifstream cmd_file("/proc/" + pid + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(cmd_file)), std::istreambuf_iterator<char>());
    while (!cmd.empty() && cmd.back() == '\0') cmd.pop_back();
    for (char& c : cmd) c = c == '\0' ? ' ' : c;
    if (cmd.size() > 120) cmd = cmd.substr(0, 117) + "...";
    return cmd.empty() ? "pid " + pid : fmt::format("pid {} ({})", pid, printable(cmd));
  }
  return {};
}

}  // namespace

Status lock_storage_exclusive(int fd, std::string_view what) {
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return {};
  const int err = errno;
  if (err != EWOULDBLOCK) {
    return Status::error(err, fmt::format("cannot lock {}: {}", what, std::strerror(err)));
  }
  struct stat st{};
  std::string who = ::fstat(fd, &st) == 0 ? holder(st) : std::string();
  return Status::error(EBUSY, fmt::format("{} is in use by {}", what,
                                          who.empty() ? "another process" : who));
}

}  // namespace blkcopy
