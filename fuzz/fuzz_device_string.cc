// Device strings and the small parsers behind them (sizes, fault rules, host:port, the options
// of mem:, file:, dm: and nvme-tcp:): any text parses or is refused with a message. Only the
// parsers run: no file is opened and no socket made.
#include <string_view>

#include "block/fault.h"
#include "core/net.h"
#include "drivers/file/file_device.h"
#include "drivers/mem/mem_device.h"
#include "fuzz/fuzz.h"
#include "nvme/host/nvme_tcp_device.h"
#include "stack/dm_device.h"
#include <blkcopy/units.h>

using namespace blkcopy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 8) {
    case 0: (void)parse_mem_config(text); break;
    case 1: (void)parse_file_config(text); break;
    case 2: (void)parse_dm_config(text); break;
    case 3: (void)nvme::parse_nvme_tcp_config(text); break;
    case 4: (void)parse_size(text); break;
    case 5: (void)parse_fault_rule(text, data[0] & 8); break;
    case 6: (void)parse_host_port(text, "fuzz", 4420); break;
    case 7: (void)parse_port(text, "fuzz"); break;
  }
  return 0;
}
