// blkcopy info DEV [--json]: limits like sysfs, capacity, copy support and how.
#include <blkcopy/open.h>
#include <fmt/format.h>

#include "tools/commands.h"
#include "tools/report.h"

namespace blkcopy::tools {

void add_info_command(CLI::App& app, int& exit_code) {
  struct Args {
    std::string device;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("info", "Show a device's queue limits and copy support");
  cmd->add_option("DEV", args->device, "device string (path, file:PATH, mem:SIZE,...)")
      ->required();
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([args, &exit_code] {
    auto loop = EventLoop::create();
    if (!loop) {
      exit_code = report_error(kIoError, loop.error().message());
      return;
    }
    auto dev = open_device(**loop, args->device);
    // A file or node we may only read opens read-only; a remote namespace is not retried (an
    // authentication failure sent twice would count twice toward the target's back-off).
    if (!dev && (dev.error().code() == EACCES || dev.error().code() == EROFS) &&
        !args->device.starts_with("nvme-tcp://")) {
      dev = open_device(**loop, args->device, {.read_only = true});
    }
    if (!dev) {
      exit_code = report_error(open_exit_code(args->device, dev.error()), dev.error().message());
      return;
    }
    if (args->json) {
      fmt::print("{}\n", info_json(**dev).dump(2));
    } else {
      fmt::print("{}", info_text(**dev));
    }
  });
}

}  // namespace blkcopy::tools
