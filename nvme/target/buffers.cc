#include "nvme/target/buffers.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

namespace blkcopy::nvme {
namespace {

constexpr unsigned kClasses = 10;  // 4 KiB .. 2 MiB
constexpr size_t kKeepPerClass = 64, kKeepBytesPerClass = 8u << 20;
struct BufferCache {
  std::vector<uint8_t*> free[kClasses];
  ~BufferCache() {
    for (auto& v : free) {
      for (uint8_t* p : v) std::free(p);
    }
  }
};
thread_local BufferCache buffer_cache;

unsigned size_class(uint32_t len) {
  unsigned k = 0;
  while (k + 1 < kClasses && (4096u << k) < len) ++k;
  return k;
}

}  // namespace

uint32_t buffer_class(uint32_t len) { return 4096u << size_class(len); }

uint8_t* take_buffer(uint32_t len, uint32_t& cap) {
  const unsigned k = size_class(len);
  cap = 4096u << k;
  if (cap < len) return nullptr;
  auto& v = buffer_cache.free[k];
  if (!v.empty()) {
    uint8_t* p = v.back();
    v.pop_back();
    return p;
  }
  return static_cast<uint8_t*>(aligned_alloc(4096, cap));
}

void give_buffer(uint8_t* p, uint32_t cap) {
  if (!p) return;
  auto& v = buffer_cache.free[size_class(cap)];
  if (v.size() < std::min<size_t>(kKeepPerClass, kKeepBytesPerClass / cap)) return v.push_back(p);
  std::free(p);
}

}  // namespace blkcopy::nvme
