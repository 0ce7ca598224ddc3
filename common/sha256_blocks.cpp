#include "common/sha256_blocks.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

#include "common/error.hpp"
#include "common/hash.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace cairn {

namespace {

// The message as SHA-256 pads it: prefix || data || 0x80 || zeros || bit length (64-bit big-endian),
// a whole number of 64-byte blocks.
struct Message {
    std::span<const uint8_t> prefix;
    const uint8_t* data;
    uint64_t total;  // prefix + data bytes

    Message() = default;
    Message(std::span<const uint8_t> p, const uint8_t* d, size_t size) : prefix(p), data(d), total(p.size() + size) {}

    uint64_t blocks() const { return (total + 8) / 64 + 1; }

    // Block k, in place when it lies wholly inside the data, else assembled in `scratch`.
    const uint8_t* block(uint64_t k, uint8_t* scratch) const {
        const uint64_t at = 64 * k, p = prefix.size();
        if (at >= p && at + 64 <= total) return data + (at - p);
        std::memset(scratch, 0, 64);
        if (at < p) std::memcpy(scratch, prefix.data() + at, std::min<uint64_t>(64, p - at));
        const uint64_t from = std::max(at, p), to = std::min(at + 64, total);
        if (from < to) std::memcpy(scratch + (from - at), data + (from - p), to - from);
        if (total >= at && total < at + 64) scratch[total - at] = 0x80;
        if (k + 1 == blocks()) {
            const uint64_t bits = total * 8;
            for (int i = 0; i < 8; ++i) scratch[63 - i] = static_cast<uint8_t>(bits >> (8 * i));
        }
        return scratch;
    }
};

// One at a time: a context that has taken the prefix, copied for each block.
void each_with_openssl(std::span<const uint8_t> prefix, const uint8_t* data, size_t size, size_t count, uint8_t* digests) {
    EvpMdCtxPtr prefixed(EVP_MD_CTX_new()), work(EVP_MD_CTX_new());
    if (!prefixed || !work || EVP_DigestInit_ex(prefixed.get(), EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(prefixed.get(), prefix.data(), prefix.size()) != 1)
        fail("OpenSSL: cannot start a SHA-256");
    for (size_t i = 0; i < count; ++i) {
        unsigned int len = 0;
        if (EVP_MD_CTX_copy_ex(work.get(), prefixed.get()) != 1 || EVP_DigestUpdate(work.get(), data + i * size, size) != 1 ||
            EVP_DigestFinal_ex(work.get(), digests + 32 * i, &len) != 1 || len != 32)
            fail("OpenSSL: SHA-256 failed");
    }
}

#if defined(__x86_64__)

#define CAIRN_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

alignas(16) constexpr uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

alignas(16) constexpr uint32_t initial_hash[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

// The eight working words as the SHA instructions hold them: (a, b, e, f) and (c, d, g, h), the
// first named word in the highest lane.
struct State {
    __m128i abef, cdgh;
};

CAIRN_SHA_TARGET __m128i byte_swap_words(__m128i v) {
    return _mm_shuffle_epi8(v, _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3));
}

CAIRN_SHA_TARGET State initial_state() {
    const __m128i abcd = _mm_load_si128(reinterpret_cast<const __m128i*>(initial_hash));      // lanes d c b a
    const __m128i efgh = _mm_load_si128(reinterpret_cast<const __m128i*>(initial_hash + 4));  // lanes h g f e
    const __m128i cdab = _mm_shuffle_epi32(abcd, 0xB1);                                         // lanes c d a b
    const __m128i efgh_reversed = _mm_shuffle_epi32(efgh, 0x1B);                                // lanes e f g h
    return State{_mm_alignr_epi8(cdab, efgh_reversed, 8), _mm_blend_epi16(efgh_reversed, cdab, 0xF0)};
}

CAIRN_SHA_TARGET void store_digest(const State& s, uint8_t* out) {
    const __m128i feba = _mm_shuffle_epi32(s.abef, 0x1B);
    const __m128i dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), byte_swap_words(_mm_blend_epi16(feba, dchg, 0xF0)));      // a b c d
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), byte_swap_words(_mm_alignr_epi8(dchg, feba, 8)));  // e f g h
}

// One 64-byte block into each of two states, the two streams interleaved step by step. Message
// words go four to a vector, w[t] in lane t % 4; group i (rounds 4i .. 4i+3) is made from the four
// groups before it: w[t-16] + s0(w[t-15]) (msg1), + w[t-7] (alignr), + s1(w[t-2]) (msg2).
CAIRN_SHA_TARGET inline __attribute__((always_inline)) void compress_pair(State& x, State& y, const uint8_t* bx,
                                                                           const uint8_t* by) {
    const State x0 = x, y0 = y;
    __m128i wx[4], wy[4];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        if (i < 4) {
            wx[i] = byte_swap_words(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bx + 16 * i)));
            wy[i] = byte_swap_words(_mm_loadu_si128(reinterpret_cast<const __m128i*>(by + 16 * i)));
        } else {
            wx[i & 3] = _mm_sha256msg2_epu32(
                _mm_add_epi32(_mm_sha256msg1_epu32(wx[i & 3], wx[(i + 1) & 3]), _mm_alignr_epi8(wx[(i + 3) & 3], wx[(i + 2) & 3], 4)),
                wx[(i + 3) & 3]);
            wy[i & 3] = _mm_sha256msg2_epu32(
                _mm_add_epi32(_mm_sha256msg1_epu32(wy[i & 3], wy[(i + 1) & 3]), _mm_alignr_epi8(wy[(i + 3) & 3], wy[(i + 2) & 3], 4)),
                wy[(i + 3) & 3]);
        }
        const __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(round_constants + 4 * i));
        const __m128i kx = _mm_add_epi32(wx[i & 3], k), ky = _mm_add_epi32(wy[i & 3], k);
        // Two rounds with lanes 0-1 of w + k, then two with lanes 2-3; each call returns the new (a, b, e, f),
        // and the old (a, b, e, f) is the new (c, d, g, h).
        x.cdgh = _mm_sha256rnds2_epu32(x.cdgh, x.abef, kx);
        y.cdgh = _mm_sha256rnds2_epu32(y.cdgh, y.abef, ky);
        x.abef = _mm_sha256rnds2_epu32(x.abef, x.cdgh, _mm_shuffle_epi32(kx, 0x0E));
        y.abef = _mm_sha256rnds2_epu32(y.abef, y.cdgh, _mm_shuffle_epi32(ky, 0x0E));
    }
    x.abef = _mm_add_epi32(x.abef, x0.abef);
    x.cdgh = _mm_add_epi32(x.cdgh, x0.cdgh);
    y.abef = _mm_add_epi32(y.abef, y0.abef);
    y.cdgh = _mm_add_epi32(y.cdgh, y0.cdgh);
}

CAIRN_SHA_TARGET void pair_with_sha_extensions(const Message& a, const Message& b, uint8_t* digest_a, uint8_t* digest_b) {
    State x = initial_state(), y = x;
    alignas(16) uint8_t scratch_a[64], scratch_b[64];
    const uint64_t blocks = a.blocks();
    for (uint64_t k = 0; k < blocks; ++k) compress_pair(x, y, a.block(k, scratch_a), b.block(k, scratch_b));
    store_digest(x, digest_a);
    store_digest(y, digest_b);
}

// Sixteen messages, one per 32-bit lane: the rounds as the standard writes them, on whole
// registers. Each message's 64-byte block is loaded as one register and the 16x16 words are
// transposed, so that register j holds word j of every message.
#define CAIRN_AVX512_TARGET __attribute__((target("avx512f,avx512bw")))

CAIRN_AVX512_TARGET inline __attribute__((always_inline)) void transpose_16x16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {  // 2x2 blocks of words
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // 4x4
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 16; i += 8)  // 128-bit lanes, across registers four apart
        for (int j = 0; j < 4; ++j) {
            t[i + j] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0xDD);
        }
    for (int j = 0; j < 8; ++j) {  // and eight apart
        r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xDD);
    }
}

CAIRN_AVX512_TARGET inline __attribute__((always_inline)) __m512i xor3(__m512i a, __m512i b, __m512i c) {
    return _mm512_ternarylogic_epi32(a, b, c, 0x96);
}

CAIRN_AVX512_TARGET inline __attribute__((always_inline)) void compress_16(__m512i state[8], const uint8_t* const block[16]) {
    const __m512i byte_swap = _mm512_broadcast_i32x4(_mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3));
    __m512i w[16];
    for (int i = 0; i < 16; ++i) w[i] = _mm512_loadu_si512(block[i]);
    transpose_16x16(w);
    for (int i = 0; i < 16; ++i) w[i] = _mm512_shuffle_epi8(w[i], byte_swap);
    __m512i a = state[0], b = state[1], c = state[2], d = state[3], e = state[4], f = state[5], g = state[6], h = state[7];
#pragma GCC unroll 64
    for (int i = 0; i < 64; ++i) {
        if (i >= 16) {  // w[i] = s1(w[i-2]) + w[i-7] + s0(w[i-15]) + w[i-16], kept in a ring of 16
            const __m512i w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            const __m512i s0 = xor3(_mm512_ror_epi32(w15, 7), _mm512_ror_epi32(w15, 18), _mm512_srli_epi32(w15, 3));
            const __m512i s1 = xor3(_mm512_ror_epi32(w2, 17), _mm512_ror_epi32(w2, 19), _mm512_srli_epi32(w2, 10));
            w[i & 15] = _mm512_add_epi32(_mm512_add_epi32(w[i & 15], s0), _mm512_add_epi32(s1, w[(i - 7) & 15]));
        }
        const __m512i big_s1 = xor3(_mm512_ror_epi32(e, 6), _mm512_ror_epi32(e, 11), _mm512_ror_epi32(e, 25));
        const __m512i choose = _mm512_ternarylogic_epi32(e, f, g, 0xCA);  // e ? f : g
        const __m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, big_s1),
                                            _mm512_add_epi32(choose, _mm512_add_epi32(w[i & 15], _mm512_set1_epi32(round_constants[i]))));
        const __m512i big_s0 = xor3(_mm512_ror_epi32(a, 2), _mm512_ror_epi32(a, 13), _mm512_ror_epi32(a, 22));
        const __m512i majority = _mm512_ternarylogic_epi32(a, b, c, 0xE8);
        h = g;
        g = f;
        f = e;
        e = _mm512_add_epi32(d, t1);
        d = c;
        c = b;
        b = a;
        a = _mm512_add_epi32(t1, _mm512_add_epi32(big_s0, majority));
    }
    const __m512i next[8] = {a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) state[i] = _mm512_add_epi32(state[i], next[i]);
}

CAIRN_AVX512_TARGET void sixteen_with_avx512(std::span<const uint8_t> prefix, const uint8_t* data, size_t size, uint8_t* digests) {
    Message m[16];
    for (int lane = 0; lane < 16; ++lane) m[lane] = Message(prefix, data + lane * size, size);
    __m512i state[8];
    for (int i = 0; i < 8; ++i) state[i] = _mm512_set1_epi32(static_cast<int>(initial_hash[i]));
    alignas(64) uint8_t scratch[16][64];
    const uint64_t blocks = m[0].blocks();
    for (uint64_t k = 0; k < blocks; ++k) {
        const uint8_t* block[16];
        for (int lane = 0; lane < 16; ++lane) block[lane] = m[lane].block(k, scratch[lane]);
        compress_16(state, block);
    }
    alignas(64) uint32_t words[8][16];
    for (int i = 0; i < 8; ++i) _mm512_store_si512(words[i], state[i]);
    for (int lane = 0; lane < 16; ++lane)
        for (int i = 0; i < 8; ++i)
            for (int byte = 0; byte < 4; ++byte)
                digests[32 * lane + 4 * i + byte] = static_cast<uint8_t>(words[i][lane] >> (24 - 8 * byte));
}

struct Cpu {
    bool sha_ni = false, avx512 = false;
};

Cpu detect_cpu() {
    Cpu cpu;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return cpu;
    const bool ssse3 = ecx & (1u << 9), sse41 = ecx & (1u << 19), osxsave = ecx & (1u << 27);
    unsigned eax7 = 0, ebx7 = 0, ecx7 = 0, edx7 = 0;
    if (!__get_cpuid_count(7, 0, &eax7, &ebx7, &ecx7, &edx7)) return cpu;
    cpu.sha_ni = ssse3 && sse41 && (ebx7 & (1u << 29));
    // AVX-512F and BW, and an OS that saves the opmask and all 32 512-bit registers (XCR0 bits 1, 2, 5-7).
    if (osxsave && (ebx7 & (1u << 16)) && (ebx7 & (1u << 30))) {
        unsigned lo = 0, hi = 0;
        __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        cpu.avx512 = (lo & 0xE6) == 0xE6;
    }
    return cpu;
}

#else

struct Cpu {
    bool sha_ni = false, avx512 = false;
};

Cpu detect_cpu() { return {}; }

#endif

const Cpu& cpu() {
    static const Cpu detected = detect_cpu();
    return detected;
}

}  // namespace

void sha256_blocks(std::span<const uint8_t> prefix, const uint8_t* data, size_t size, size_t count, uint8_t* digests) {
    size_t i = 0;
#if defined(__x86_64__)
    if (cpu().avx512)
        for (; i + 16 <= count; i += 16) sixteen_with_avx512(prefix, data + i * size, size, digests + 32 * i);
    if (cpu().sha_ni)
        for (; i + 2 <= count; i += 2)
            pair_with_sha_extensions(Message(prefix, data + i * size, size), Message(prefix, data + (i + 1) * size, size),
                                     digests + 32 * i, digests + 32 * (i + 1));
#endif
    if (i < count) each_with_openssl(prefix, data + i * size, size, count - i, digests + 32 * i);
}

std::string sha256_blocks_engine() {
    if (cpu().avx512 && cpu().sha_ni) return "avx512+sha-ni";
    if (cpu().avx512) return "avx512";
    if (cpu().sha_ni) return "sha-ni";
    return "openssl";
}

}  // namespace cairn
