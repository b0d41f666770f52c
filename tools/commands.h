// The CLI's subcommands. Each adds itself to the app and sets `exit_code` when it runs.
#pragma once

#include <CLI/CLI.hpp>
#include <blkcopy/status.h>

#include <sys/stat.h>

#include <optional>
#include <string>

namespace blkcopy::tools {

// Exit codes of every command (blkcopy(1), EXIT STATUS); 128 + N after signal N.
enum Exit : int {
  kOk = 0,
  kFailed = 1,        // the demo's data check failed
  kBadInput = 2,      // bad arguments, unknown device, invalid copy
  kNotSupported = 3,  // offload impossible and --no-emulation
  kIoError = 4,       // an I/O error (the message gives the bytes copied); a server's failure
  kUnreachable = 5,   // a target (or serve's control socket) cannot be reached or stops answering
  kRefused = 6,       // the target refused this host: not allowed, authentication, TLS key
};

// The exit code for `dev` that did not open with `s`: a network target that cannot be reached
// or refuses this host is not bad input.
int open_exit_code(const std::string& dev, const Status& s);

// -q: errors only; a command prints nothing on success.
bool quiet();

void add_info_command(CLI::App& app, int& exit_code);
void add_copy_command(CLI::App& app, int& exit_code);
void add_demo_command(CLI::App& app, int& exit_code);
void add_clone_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);
void add_discover_command(CLI::App& app, int& exit_code);
void add_perf_command(CLI::App& app, int& exit_code);
void add_ctl_command(CLI::App& app, int& exit_code);

// Where `serve` opens its control socket and `ctl` looks for it, unless told otherwise.
inline constexpr const char* kDefaultControlSocket = "/run/blkcopy/serve.sock";

// --poll-us: busy polling of the command's event loops (EventLoop::set_busy_poll); `whose`
// says which loops, for the help text.
void add_poll_option(CLI::App& cmd, unsigned& us, const char* whose);

// A device string that names a file: its scheme ("file:", "dm:" or "" for a plain path), the
// path, and the options after it; nullopt for other devices (mem:, nvme-tcp://...).
struct FileSpec {
  std::string scheme, path, options;
};
std::optional<FileSpec> file_spec(const std::string& dev);
// What stat(2) says of the regular file a device string names (a plain path or file:PATH);
// nullopt for anything else (a block device, a table, mem:, a file that is not there).
std::optional<struct stat> regular_file(const std::string& dev);
// The same string with a relative path made absolute: serve opens files from its own working
// directory (/ under systemd), not the caller's.
std::string absolute_device(const std::string& dev);

// The first line of a file holding a key or secret, without its line end.
Result<std::string> read_secret_file(const std::string& path);

// "blkcopy: error: MESSAGE" on stderr; returns code.
int report_error(int code, const std::string& message);

}  // namespace blkcopy::tools
