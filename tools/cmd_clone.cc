// blkcopy clone status DEV | blkcopy clone hydrate DEV: the clone targets of a dm stack.
#include <blkcopy/clone.h>
#include <blkcopy/open.h>
#include <blkcopy/units.h>
#include <fmt/format.h>
#include <unistd.h>

#include "tools/commands.h"
#include "tools/interrupt.h"
#include "tools/report.h"

namespace blkcopy::tools {
namespace {

nlohmann::ordered_json status_json(const CloneTarget& c) {
  const CloneStatus s = c.status();
  nlohmann::ordered_json j;
  j["target"] = c.clone_name();
  j["length"] = s.length;
  j["region_size"] = s.region;
  j["regions"] = s.regions;
  j["hydrated"] = s.hydrated;
  j["durable"] = s.durable;
  j["copied_now"] = s.copied;
  j["offloaded_bytes"] = s.offloaded_bytes;
  j["emulated_bytes"] = s.emulated_bytes;
  j["metadata_offset"] = s.meta_offset;
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

std::string status_text(const CloneTarget& c) {
  const CloneStatus s = c.status();
  std::string out = fmt::format(
      "{}: {} of {} regions hydrated ({:.1f}%), regions of {}, {} in all\n", c.clone_name(), s.hydrated,
      s.regions, s.regions ? 100.0 * double(s.hydrated) / double(s.regions) : 100.0,
      format_bytes(double(s.region)), format_bytes(double(s.length)));
  if (s.copied) {
    out += fmt::format("  copied now: {} regions, offloaded {}, emulated {}\n", s.copied,
                       format_bytes(double(s.offloaded_bytes)),
                       format_bytes(double(s.emulated_bytes)));
  }
  if (!s.error.empty()) out += fmt::format("  error: {}\n", s.error);
  return out;
}

int run(const std::string& spec, bool hydrate, bool json, bool progress) {
  auto loop = EventLoop::create();
  if (!loop) return report_error(kIoError, loop.error().message());
  auto dev = open_device(**loop, spec);
  if (!dev) return report_error(open_exit_code(spec, dev.error()), dev.error().message());
  const std::vector<CloneTarget*> clones = clone_targets(**dev);
  if (clones.empty()) {
    return report_error(kBadInput, fmt::format("{} has no clone target", spec));
  }
  int code = kOk;
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (CloneTarget* c : clones) {
    if (hydrate && !interrupt_signal()) {
      ProgressBar bar(!json && isatty(STDERR_FILENO), progress);
      const CloneStatus before = c->status();
      Status s = c->hydrate_all(
          [&](uint64_t n, uint64_t total) {
            bar.update((n - std::min(n, before.hydrated)) * before.region,
                       (total - before.hydrated) * before.region);
          },
          &catch_interrupts());
      bar.finish();
      if (s.code() == ECANCELED && interrupt_signal()) {
        report_error(kIoError, s.message());
        code = interrupted_exit_code();
      } else if (!s.ok()) {
        code = report_error(kIoError, s.message());
      }
    }
    if (json) {
      all.push_back(status_json(*c));
      if (code == interrupted_exit_code() && interrupt_signal()) all.back()["interrupted"] = true;
    } else {
      fmt::print("{}", status_text(*c));
    }
  }
  if (json) fmt::print("{}\n", all.dump(2));
  return code;
}

}  // namespace

void add_clone_command(CLI::App& app, int& exit_code) {
  struct Args {
    std::string device;
    bool json = false, progress = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("clone", "Clone targets of a dm stack: status, hydrate");
  cmd->require_subcommand(1);
  for (const char* name : {"status", "hydrate"}) {
    const bool hydrate = std::string(name) == "hydrate";
    CLI::App* sub = cmd->add_subcommand(
        name, hydrate ? "Copy every region not yet on the destination, then show the status"
                      : "Show how far each clone target has hydrated");
    sub->add_option("DEV", a->device, "a dm: device with clone targets")->required();
    sub->add_flag("--json", a->json, "print JSON");
    if (hydrate) sub->add_flag("--progress", a->progress, "show a progress bar");
    sub->callback([a, hydrate, &exit_code] {
      exit_code = run(a->device, hydrate, a->json, a->progress);
    });
  }
}

}  // namespace blkcopy::tools
