// Two SHA-256 digests at once: of prefix || a and of prefix || b, where a and b have the same size.
//
// dm-verity hashes every 4 KiB block of a root as sha256(salt || block), and that is most of the
// time of building an image and of checking and reading back an update. A lone SHA-256 leaves the
// CPU's SHA unit (x86-64 SHA extensions) waiting for each round's result before the next round can
// start; two independent messages interleaved round by round keep it busy, so a pair costs little
// more than one (about 1.4x the bytes per second for 4 KiB blocks here: bench/verity_bench).
// Without the SHA extensions, it is two ordinary OpenSSL digests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace cairn {

// Whether sha256_pair runs on the SHA extensions (checked once, through CPUID).
bool sha256_pair_accelerated();

void sha256_pair(std::span<const uint8_t> prefix, const uint8_t* a, const uint8_t* b, size_t size, uint8_t* digest_a,
                 uint8_t* digest_b);

}  // namespace cairn
