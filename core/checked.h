// Checked arithmetic for offsets and lengths that come from outside (the network, a file, a
// command line). Every such value goes through one of these before it indexes memory or a
// device: an overflow is an answer (false / nullopt), never a wrapped value.
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>

namespace blkcopy {

// a + b, or nullopt when it does not fit in T.
template <std::unsigned_integral T>
constexpr std::optional<T> checked_add(T a, T b) {
  T r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a * b, or nullopt when it does not fit in T.
template <std::unsigned_integral T>
constexpr std::optional<T> checked_mul(T a, T b) {
  T r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// True when [offset, offset + length) lies within [0, size): no wrap-around, whatever the
// values. Zero-length ranges at or below `size` are inside.
constexpr bool in_bounds(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

}  // namespace blkcopy
