// blkcopy: copy offload for block storage, from the command line.
#include <fmt/format.h>

#include "tools/commands.h"

namespace blkcopy::tools {

int report_error(int code, const std::string& message) {
  fmt::print(stderr, "blkcopy: error: {}\n", message);
  return code;
}

}  // namespace blkcopy::tools

int main(int argc, char** argv) {
  using namespace blkcopy::tools;
  CLI::App app{"blkcopy: copy offload for block storage (copy inside the device, emulate the "
               "rest)"};
  app.name("blkcopy");  // usage lines say blkcopy, not the path it was started by
  app.set_version_flag("--version", std::string("blkcopy ") + BLKCOPY_VERSION);
  app.require_subcommand(1);
  int exit_code = kOk;
  add_info_command(app, exit_code);
  add_copy_command(app, exit_code);
  add_demo_command(app, exit_code);
  add_clone_command(app, exit_code);
  add_serve_command(app, exit_code);
  add_discover_command(app, exit_code);
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known |= sub->get_name() == argv[1];
    if (!known) {
      return report_error(kBadInput, fmt::format("unknown command '{}' (known: info, copy, clone, serve, discover, demo; "
                                                 "see --help)",
                                                 argv[1]));
    }
  }
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
