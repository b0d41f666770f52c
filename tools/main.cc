// blkcopy: copy offload for block storage, from the command line.
#include <blkcopy/log.h>
#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <set>

#include <string_view>

#include "tools/commands.h"

namespace blkcopy::tools {

void add_poll_option(CLI::App& cmd, unsigned& us, const char* whose) {
  cmd.add_option("--poll-us", us,
                 fmt::format("busy-poll: {} spin up to N microseconds for work before sleeping, "
                             "as SPDK polls; for loops pinned to cores of their own (default 0)",
                             whose))
      ->check(CLI::Range(0u, 1000000u));
}

Result<std::string> read_secret_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in) return fail(ENOENT, fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  if (!std::getline(in, line)) return fail(ENOENT, fmt::format("cannot read {}: it is empty", path));
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

int open_exit_code(const std::string& dev, const Status& s) {
  switch (s.code()) {
    case ECONNREFUSED: case ETIMEDOUT: case EHOSTUNREACH: case ENETUNREACH: case ECONNRESET:
    case ECONNABORTED: case EPIPE:
      return kUnreachable;
    case EACCES: case EPERM:
      return dev.starts_with("nvme-tcp://") ? kRefused : kBadInput;
    default:
      return kBadInput;
  }
}

bool quiet() { return !blkcopy::log_enabled(blkcopy::LogLevel::warning); }

int report_error(int code, const std::string& message) {
  fmt::print(stderr, "blkcopy: error: {}\n", message);
  return code;
}

namespace {

constexpr const char* kDevicesHelp = R"(Devices (DEV):
  PATH | file:PATH[,ro][,buffered][,nocopy][,kernelcopy]
                                             a file or block device
  mem:SIZE[,block=N][,copy_max=N][,...]      RAM (limits, latency, fault injection)
  dm:TABLEFILE                               a dmsetup-style stack (linear, striped, clone, ...)
  nvme-tcp://HOST:PORT/NQN?ns=N[&...]        a namespace of an NVMe/TCP subsystem
  /dev/nvmeXnY | /dev/ngXnY | nvme:PATH[,ro][,timeout=MS]
                                             a local NVMe namespace (io_uring passthrough)
  /dev/sdX | /dev/sgN | scsi:PATH[,ro][,timeout=MS]
                                             a SCSI LUN (EXTENDED COPY through SG_IO)

)";

constexpr const char* kExitHelp = R"(Exit codes: 0 done, 1 the demo found wrong data, 2 bad input, 3 not offloadable with
--no-emulation, 4 I/O error, 5 a target cannot be reached, 6 a target refused this host (not
allowed, authentication, TLS key), 128+N interrupted by signal N (the summary is printed first).
See blkcopy(1).)";

// Each command's --help ends with what it takes: the device strings only where it takes a DEV.
void set_footers(CLI::App& app) {
  static const std::set<std::string> kTakesDevices = {
      "blkcopy", "info", "copy", "serve", "perf", "add-ns", "add-subsystem"};
  app.footer(std::string(kTakesDevices.contains(app.get_name()) ? kDevicesHelp : "") + kExitHelp);
  for (CLI::App* sub : app.get_subcommands({})) set_footers(*sub);
}

}  // namespace

}  // namespace blkcopy::tools

int main(int argc, char** argv) {
  using namespace blkcopy::tools;
  CLI::App app{"blkcopy: copy offload for block storage (copy inside the device, emulate the "
               "rest)"};
  app.name("blkcopy");  // usage lines say blkcopy, not the path it was started by
  app.set_version_flag("--version", std::string("blkcopy ") + BLKCOPY_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // -v and -q may also come after the command
  int verbose = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbose, "more messages (-vv for debug)");
  app.add_flag("-q,--quiet", quiet, "errors only");
  int exit_code = kOk;
  add_info_command(app, exit_code);
  add_copy_command(app, exit_code);
  add_demo_command(app, exit_code);
  add_clone_command(app, exit_code);
  add_serve_command(app, exit_code);
  add_discover_command(app, exit_code);
  add_ctl_command(app, exit_code);
  add_perf_command(app, exit_code);
  set_footers(app);
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known |= sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      return report_error(kBadInput, fmt::format("unknown command '{}' (known: {}; see --help)", argv[1], names));
    }
  }
  blkcopy::set_log_sink(blkcopy::stderr_log_sink());
  // The level is known only after parsing; commands run inside parse(), so read it first.
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-q" || a == "--quiet") quiet = true;
    if (a == "-v" || a == "--verbose") ++verbose;
    if (a == "-vv") verbose += 2;
  }
  blkcopy::set_log_level(quiet ? blkcopy::LogLevel::error
                         : verbose >= 2 ? blkcopy::LogLevel::debug
                         : verbose == 1 ? blkcopy::LogLevel::info
                                        : blkcopy::LogLevel::warning);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return report_error(kBadInput, e.what());
  }
  return exit_code;
}
