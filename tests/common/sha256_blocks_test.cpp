#include "common/sha256_blocks.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/hash.hpp"

using namespace cairn;

namespace {

// The digests of `count` blocks of `size` bytes laid end to end in `data`, as hex.
std::vector<std::string> blocks_hex(const std::string& prefix, const std::string& data, size_t size, size_t count) {
    std::vector<uint8_t> out(32 * count);
    sha256_blocks({reinterpret_cast<const uint8_t*>(prefix.data()), prefix.size()}, reinterpret_cast<const uint8_t*>(data.data()),
                  size, count, out.data());
    std::vector<std::string> hex;
    for (size_t i = 0; i < count; ++i) hex.push_back(to_hex(std::span<const uint8_t>(out.data() + 32 * i, 32)));
    return hex;
}

std::string random_bytes(std::mt19937& random, size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(random());
    return s;
}

}  // namespace

TEST(Sha256Blocks, KnownAnswers) {
    EXPECT_EQ(blocks_hex("a", "bcbd", 2, 2),
              (std::vector<std::string>{"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", to_hex(sha256("abd"))}));
    EXPECT_EQ(blocks_hex("", "", 0, 1), std::vector<std::string>{"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"});
    // 56 bytes: the padding no longer fits the block, so a second block is all padding.
    EXPECT_EQ(blocks_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "", 0, 1),
              std::vector<std::string>{"248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"});
    EXPECT_TRUE(blocks_hex("salt", "", 4096, 0).empty());
}

// Every way the prefix, the data and the padding can fall across block boundaries, against OpenSSL.
// 35 blocks go 16 + 16 at a time (AVX-512), then a pair (SHA-NI), then one alone, where the CPU has them.
TEST(Sha256Blocks, AgreesWithOpenSslForEveryBoundaryAndEveryPath) {
    std::mt19937 random(7);
    const size_t count = 35;
    for (size_t p : {0, 1, 31, 32, 55, 56, 63, 64, 65, 128, 256})
        for (size_t n : {0, 1, 8, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 512, 4064, 4096, 4097}) {
            const std::string prefix = random_bytes(random, p), data = random_bytes(random, n * count);
            const std::vector<std::string> got = blocks_hex(prefix, data, n, count);
            for (size_t i = 0; i < count; ++i)
                ASSERT_EQ(got[i], to_hex(sha256(prefix + data.substr(i * n, n)))) << "prefix " << p << ", size " << n << ", block " << i;
        }
}

TEST(Sha256Blocks, EveryCountFromOneToFortyAgrees) {
    std::mt19937 random(11);
    const std::string salt = random_bytes(random, 32), data = random_bytes(random, 40 * 4096);
    for (size_t count = 1; count <= 40; ++count) {
        const std::vector<std::string> got = blocks_hex(salt, data, 4096, count);
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(got[i], to_hex(sha256(salt + data.substr(i * 4096, 4096)))) << count << " blocks, block " << i;
    }
}

TEST(Sha256Blocks, NamesTheEngine) {
    const std::string engine = sha256_blocks_engine();
    EXPECT_TRUE(engine == "avx512+sha-ni" || engine == "avx512" || engine == "sha-ni" || engine == "openssl") << engine;
    std::printf("sha256_blocks runs on: %s\n", engine.c_str());
}
