#include "stack/table.h"

#include <fmt/format.h>

#include <charconv>
#include <sstream>

namespace blkcopy {

Result<uint64_t> parse_count(std::string_view text, std::string_view what, std::string_view where) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return fail(EINVAL, fmt::format("{}: {} '{}' is not a number", where, what, text));
  }
  return v;
}

Result<std::vector<TableEntry>> parse_table(std::string_view text, std::string_view name) {
  std::vector<TableEntry> entries;
  std::istringstream in{std::string(text)};
  std::string line;
  int no = 0;
  uint64_t next = 0;
  while (std::getline(in, line)) {
    ++no;
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string s; words >> s;) w.push_back(s);
    if (w.empty() || w[0].starts_with('#')) continue;
    const std::string where = fmt::format("{} line {}", name, no);
    if (w.size() < 3) {
      return fail(EINVAL, fmt::format("{}: expected START LENGTH TARGET [ARGS...]", where));
    }
    auto start = parse_count(w[0], "start", where);
    if (!start) return std::unexpected(start.error());
    auto length = parse_count(w[1], "length", where);
    if (!length) return std::unexpected(length.error());
    if (*length == 0) return fail(EINVAL, fmt::format("{}: length is 0", where));
    if (*start > next) {
      return fail(EINVAL, fmt::format("{}: starts at sector {} but the table so far ends at {}: "
                                      "a gap of {} sectors",
                                      where, *start, next, *start - next));
    }
    if (*start < next) {
      return fail(EINVAL, fmt::format("{}: starts at sector {}, inside the previous entry, which "
                                      "ends at {}: entries overlap",
                                      where, *start, next));
    }
    if (*length > (UINT64_MAX / kSector) - *start) {
      return fail(EINVAL, fmt::format("{}: length {} is too large", where, *length));
    }
    next = *start + *length;
    entries.push_back({*start, *length, w[2], {w.begin() + 3, w.end()}, no});
  }
  if (entries.empty()) return fail(EINVAL, fmt::format("{}: the table has no entries", name));
  return entries;
}

}  // namespace blkcopy
