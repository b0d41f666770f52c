#include <blkcopy/log.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace blkcopy {
namespace {

std::mutex g_mu;
LogSink g_sink;
LogLevel g_level = LogLevel::warning;

const char* name(LogLevel l) {
  switch (l) {
    case LogLevel::error: return "error";
    case LogLevel::warning: return "warning";
    case LogLevel::info: return "info";
    case LogLevel::debug: return "debug";
  }
  return "?";
}

// "2026-11-28T02:35:29.123Z blkcopy: warning: ..." on stderr.
void to_stderr(LogLevel level, std::string_view message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%03dZ blkcopy: %s: %.*s\n", stamp, static_cast<int>(ms.count()),
               name(level), static_cast<int>(message.size()), message.data());
}

}  // namespace

LogSink stderr_log_sink() { return to_stderr; }

void set_log_sink(LogSink sink) {
  std::lock_guard lock(g_mu);
  g_sink = std::move(sink);
}

void set_log_level(LogLevel most_verbose) {
  std::lock_guard lock(g_mu);
  g_level = most_verbose;
}

bool log_enabled(LogLevel level) {
  std::lock_guard lock(g_mu);
  return g_sink && level <= g_level;
}

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {  // controls, DEL, and every byte of non-ASCII text
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void log(LogLevel level, std::string_view message) {
  std::lock_guard lock(g_mu);
  if (level > g_level || !g_sink) return;
  // One message is one line: control characters a peer put in a name (a newline and a forged
  // "authenticated" line, terminal escapes, UTF-8 C1 controls and bidi overrides) reach no sink
  // raw, and a literal backslash is doubled so that escaped and plain text cannot be confused.
  const bool clean = std::none_of(message.begin(), message.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u >= 0x7f || c == '\\';
  });
  if (clean) return g_sink(level, message);
  g_sink(level, printable(message));
}

}  // namespace blkcopy
