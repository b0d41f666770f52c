// The control socket's request lines (JSON-RPC 2.0): any bytes get an answer or, for a
// notification, none; never a crash, whatever the nesting, the encoding or the types.
#include <string_view>

#include "fuzz/fuzz.h"
#include "nvme/target/control_server.h"

using namespace blkcopy;
using nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::map<std::string, nvme::ControlServer::Method> methods = {
      {"echo", [](const json& p) -> Result<json> { return p; }},
      {"number", [](const json& p) -> Result<json> { return json(p.at("n").get<uint64_t>()); }},
      {"fails", [](const json&) -> Result<json> { return fail(ENOENT, "no such thing"); }}};
  (void)nvme::json_rpc_answer(methods, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
