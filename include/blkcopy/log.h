// Where the library's messages go. The library never prints: it hands each message to the
// sink, which by default writes warnings and errors to stderr as "blkcopy: LEVEL: message".
// A program sets its own sink (or a level) once, before it starts loops.
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

// nullptr restores the default sink.
void set_log_sink(LogSink sink);
// Messages above this level are dropped before they are formatted into the sink.
void set_log_level(LogLevel most_verbose);
bool log_enabled(LogLevel level);

void log(LogLevel level, std::string_view message);
inline void log_error(std::string_view m) { log(LogLevel::error, m); }
inline void log_warning(std::string_view m) { log(LogLevel::warning, m); }
inline void log_info(std::string_view m) { log(LogLevel::info, m); }

}  // namespace blkcopy
