// Many SHA-256 digests of the same shape at once: sha256(prefix || block) for consecutive blocks.
//
// dm-verity hashes every 4 KiB block of a root as sha256(salt || block); that is most of the time
// of building an image and of checking and reading back an update. One SHA-256 at a time leaves
// most of a modern core idle: each round waits for the one before. Independent messages side by
// side do not, so the blocks are hashed
//   - 16 at a time, one per 32-bit lane of AVX-512 registers, where the CPU has AVX-512;
//   - 2 at a time, interleaved round by round on the SHA extensions (SHA-NI), for what is left;
//   - one by one through OpenSSL on CPUs with neither.
// bench/verity_bench shows the gain on this machine; tests/common/sha256_blocks_test.cpp checks
// every path against OpenSSL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace cairn {

// Writes sha256(prefix || data[i * size, (i + 1) * size)) to digests + 32 * i, for i < count.
void sha256_blocks(std::span<const uint8_t> prefix, const uint8_t* data, size_t size, size_t count, uint8_t* digests);

// What sha256_blocks runs on here (checked once, through CPUID): "avx512+sha-ni", "sha-ni",
// "avx512" or "openssl".
std::string sha256_blocks_engine();

}  // namespace cairn
