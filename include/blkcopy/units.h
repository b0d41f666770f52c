// Sizes as people write them: 512, 4k, 1M, 2G (binary multiples), and back.
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace blkcopy {

// Parses "4096", "4k", "4K", "4KiB", "1M", "2G", "1T". Rejects empty, negative, junk, overflow.
Result<uint64_t> parse_size(std::string_view text);

// "1.5 GiB", "512 B".
std::string format_bytes(double bytes);

}  // namespace blkcopy
