#include "nvme/target/trace.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "nvme/spec.h"
#include "nvme/target/queue.h"
#include "nvme/target/request.h"
#include "nvme/target/subsystem.h"

namespace blkcopy::nvme {
namespace {

const char* opcode_name(bool admin, const Sqe& sqe) {
  if (sqe.opcode == admin::kFabrics) {
    switch (reinterpret_cast<const uint8_t*>(&sqe)[kFcType]) {
      case fabrics::kConnect: return "connect";
      case fabrics::kPropertyGet: return "property_get";
      case fabrics::kPropertySet: return "property_set";
      case fabrics::kAuthSend: return "auth_send";
      case fabrics::kAuthReceive: return "auth_receive";
      default: return "fabrics";
    }
  }
  if (admin) {
    switch (sqe.opcode) {
      case admin::kGetLogPage: return "get_log_page";
      case admin::kIdentify: return "identify";
      case admin::kAbort: return "abort";
      case admin::kSetFeatures: return "set_features";
      case admin::kGetFeatures: return "get_features";
      case admin::kAsyncEvent: return "async_event";
      case admin::kKeepAlive: return "keep_alive";
      default: return nullptr;
    }
  }
  switch (sqe.opcode) {
    case io::kFlush: return "flush";
    case io::kWrite: return "write";
    case io::kRead: return "read";
    case io::kWriteZeroes: return "write_zeroes";
    case io::kDsm: return "dataset_management";
    case io::kCopy: return "copy";
    default: return nullptr;
  }
}

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::floor<std::chrono::seconds>(now);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06}Z", secs, us);
}

}  // namespace

Status CommandTrace::start(const std::string& path) {
  // A regular file only (not a link, nor a FIFO every loop would block on), readable by its
  // owner only whatever mode it had.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) return Status::error(errno, fmt::format("{}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || ::fchmod(fd, 0600) != 0 ||
      ::fcntl(fd, F_SETFL, O_WRONLY | O_APPEND) != 0) {
    ::close(fd);
    return Status::error(EINVAL, fmt::format("{}: not a regular file", path));
  }
  FILE* f = ::fdopen(fd, "a");
  if (!f) {
    ::close(fd);
    return Status::error(errno, fmt::format("{}: {}", path, std::strerror(errno)));
  }
  std::setvbuf(f, nullptr, _IOLBF, 64 * 1024);  // a line at a time: `tail -f` sees each command
  std::lock_guard lock(mu_);
  if (f_) std::fclose(f_);
  f_ = f;
  path_ = path;
  on_ = true;
  return {};
}

void CommandTrace::stop() {
  std::lock_guard lock(mu_);
  on_ = false;
  if (f_) std::fclose(f_);
  f_ = nullptr;
}

std::string CommandTrace::path() const {
  std::lock_guard lock(mu_);
  return path_;
}

void CommandTrace::record(const TargetQueue& q, const TargetRequest& r, uint16_t status) {
  const QueueSession& s = q.session;
  const bool admin = s.qid == 0;
  const Sqe& e = r.sqe;
  std::string line = fmt::format(R"({{"time":"{}","host":{},"cntlid":{},"qid":{},)", now_utc(),
                                 nlohmann::json(s.ctrl ? s.ctrl->hostnqn : "")
                                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                                 s.ctrl ? s.ctrl->cntlid : 0, s.qid);
  if (const char* name = opcode_name(admin, e)) {
    line += fmt::format(R"("opcode":"{}",)", name);
  } else {
    line += fmt::format(R"("opcode":"{:#04x}",)", e.opcode);
  }
  if (!admin && e.opcode != admin::kFabrics) {
    line += fmt::format(R"("nsid":{},)", e.nsid);
    const uint64_t lba = e.cdw10 | uint64_t(e.cdw11) << 32;
    if (e.opcode == io::kRead || e.opcode == io::kWrite || e.opcode == io::kWriteZeroes) {
      line += fmt::format(R"("slba":{},"blocks":{},)", lba, (e.cdw12 & 0xFFFF) + 1);
    } else if (e.opcode == io::kCopy) {
      line += fmt::format(R"("sdlba":{},"ranges":[)", lba);
      for (size_t i = 0; i < r.ranges.size(); ++i) {
        line += fmt::format(R"({}{{"snsid":{},"slba":{},"blocks":{}}})", i ? "," : "",
                            r.ranges[i].snsid, r.ranges[i].slba, r.ranges[i].blocks);
      }
      line += fmt::format(R"(],"offloaded_bytes":{},"emulated_bytes":{},)",
                          r.copy_result.offloaded_bytes, r.copy_result.emulated_bytes);
    }
  }
  line += fmt::format(R"("status":"{:#06x}")", status);
  if (r.started != std::chrono::steady_clock::time_point{}) {
    line += fmt::format(R"(,"latency_us":{})", std::chrono::duration_cast<std::chrono::microseconds>(
                                                    std::chrono::steady_clock::now() - r.started)
                                                    .count());
  }
  line += "}\n";
  std::lock_guard lock(mu_);
  if (f_) std::fwrite(line.data(), 1, line.size(), f_);
}

}  // namespace blkcopy::nvme
