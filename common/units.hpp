// Sizes with units: "4GiB", "200 MiB", "512K", "1G" (binary), "10MB" (decimal), "4096" (bytes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cairn {

constexpr uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;

// Throws Error naming `what` on a malformed size.
uint64_t parse_size(std::string_view text, const std::string& what);

// "4 GiB", "200 MiB", "1.5 GiB", "4096 B".
std::string format_size(uint64_t bytes);

// a + b and a × b for sizes and offsets that come from outside (a bundle's header and manifest,
// a superblock): Error naming `what` when the result does not fit in 64 bits, never a wrapped value.
uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what);
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what);

constexpr uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

}  // namespace cairn
