// nvmetcli JSON: any text parses into a configuration that validates, or is refused with a
// message; never a crash, an exception or a hang.
#include <cstdlib>
#include <string_view>

#include "fuzz/fuzz.h"
#include <blkcopy/target.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool lenient = data[0] & 1;
  std::vector<std::string> warnings;
  auto cfg = blkcopy::nvme::parse_nvmetcli_json(
      std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), lenient, &warnings);
  if (cfg && !blkcopy::nvme::validate(*cfg).ok()) std::abort();  // parsed means valid
  if (cfg) {
    for (const auto& e : cfg->subsystems) {
      if (e.cntlid_min > e.cntlid_max || e.qid_max == 0) std::abort();
    }
  }
  return 0;
}
