// Device-mapper tables in dmsetup syntax: one "START LENGTH TARGET ARGS..." line per target, in
// 512-byte sectors. Blank lines and lines starting with '#' are skipped.
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace blkcopy {

inline constexpr uint64_t kSector = 512;

struct TableEntry {
  uint64_t start = 0;   // sectors
  uint64_t length = 0;  // sectors
  std::string target;
  std::vector<std::string> args;
  int line = 0;
};

// Checks the syntax and that the entries cover [0, end) in order, without gaps or overlaps.
// `name` prefixes every message ("t.table line 3: ...").
Result<std::vector<TableEntry>> parse_table(std::string_view text, std::string_view name);

// Parses a count of sectors or another non-negative integer argument.
Result<uint64_t> parse_count(std::string_view text, std::string_view what, std::string_view where);

}  // namespace blkcopy
