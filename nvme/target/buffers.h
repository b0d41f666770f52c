// Page-aligned command buffers of at least `len` bytes (`cap` says how many), recycled per
// thread: a 128 KiB read would otherwise map, fault in and unmap fresh pages every time (glibc
// maps blocks that large anew). Size classes 4 KiB << k up to 2 MiB; each thread keeps at most
// 8 MiB per class. Whoever fills a buffer overwrites what it sends.
#pragma once

#include <cstdint>

namespace blkcopy::nvme {

inline constexpr uint32_t kLargestBuffer = 2u << 20;

// nullptr when len is above kLargestBuffer or memory is exhausted.
uint8_t* take_buffer(uint32_t len, uint32_t& cap);
void give_buffer(uint8_t* p, uint32_t cap);
// The capacity take_buffer(len) hands out (what a budget counts).
uint32_t buffer_class(uint32_t len);

}  // namespace blkcopy::nvme
