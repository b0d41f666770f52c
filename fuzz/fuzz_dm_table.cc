// Device-mapper tables: any text is a table whose entries cover [0, end) without gaps or
// overlaps, or an error.
#include <cstdlib>
#include <string_view>

#include "fuzz/fuzz.h"
#include "stack/table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto t = blkcopy::parse_table(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!t) return 0;
  uint64_t at = 0;
  for (const auto& e : *t) {
    if (e.start != at || e.length == 0 || e.target.empty()) std::abort();
    at = e.start + e.length;
    if (at < e.start) std::abort();  // wrapped
  }
  return 0;
}
