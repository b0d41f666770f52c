// blkcopy info DEV [--json]: limits like sysfs, capacity, copy support and how.
#include <blkcopy/log.h>
#include <blkcopy/open.h>
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "stack/table.h"
#include "tools/commands.h"
#include "tools/report.h"
#include "tools/target_report.h"

namespace blkcopy::tools {
namespace {

// A small file that parses as a device-mapper table was probably meant as dm:PATH.
bool looks_like_table(const Device& dev, const std::string& path) {
  if (dev.describe().kind != "file" || dev.limits().capacity > (1u << 20)) return false;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return in && !text.str().empty() && parse_table(text.str(), path).has_value();
}

}  // namespace

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
    if (looks_like_table(**dev, args->device)) {
      log_warning(fmt::format("{} looks like a device-mapper table: this is the file itself; "
                              "for the stack it describes, give dm:{}",
                              args->device, args->device));
    }
    // A remote namespace that takes Copy: whether the target's device copies or the target
    // will read and write (blkcopy's target says, in its copy report).
    std::optional<Result<nvme::TargetCopyReport>> target;
    if ((*dev)->limits().can_offload()) target = read_target_report(**dev, std::chrono::seconds(5), nullptr, 0);
    if (target && !*target) log_info((*target).error().message());
    std::string on_target;
    if (target && *target && !(*target)->device_copies_by.empty()) on_target = (*target)->device_copies_by;
    if (args->json) {
      auto j = info_json(**dev);
      if (target) j["target"] = target_report_json(*target);
      fmt::print("{}\n", j.dump(2));
    } else {
      fmt::print("{}", info_text(**dev));
      if (!on_target.empty()) {
        fmt::print("{:<24} {}\n", "copies on the target", on_target.starts_with("none")
                                                             ? "emulated by the target: " + on_target
                                                             : "by " + on_target);
      }
    }
  });
}

}  // namespace blkcopy::tools
