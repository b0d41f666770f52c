// Where the library's messages go. The library never prints: it hands each message to the
// sink, and by default there is none (a library is quiet). A program sets a sink (the CLI sets
// stderr_log_sink()) and a level once, before it starts loops.
//
// Thread safety: log() may be called from any loop's thread; calls reach the sink one at a
// time. set_log_sink and set_log_level are not meant to race with log().
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace blkcopy {

enum class LogLevel { error = 0, warning = 1, info = 2, debug = 3 };

using LogSink = std::function<void(LogLevel, std::string_view message)>;

// nullptr restores the default: messages are dropped.
void set_log_sink(LogSink sink);
// "2026-11-28T02:35:29.123Z blkcopy: warning: ..." on stderr.
LogSink stderr_log_sink();
// Messages above this level are dropped before they are formatted into the sink.
void set_log_level(LogLevel most_verbose);
bool log_enabled(LogLevel level);

// Control characters and non-ASCII bytes in a message (a peer's name with a newline, a terminal
// escape, a bidi override) reach the sink escaped (\n as \x0a, a backslash as \\): one message
// is one line, and what it shows is what it holds.
void log(LogLevel level, std::string_view message);
// s with control characters and non-ASCII bytes escaped as \xNN and backslashes doubled: for
// peer strings printed outside the log (discover's output).
std::string printable(std::string_view s);
inline void log_error(std::string_view m) { log(LogLevel::error, m); }
inline void log_warning(std::string_view m) { log(LogLevel::warning, m); }
inline void log_info(std::string_view m) { log(LogLevel::info, m); }

}  // namespace blkcopy
