#include "common/sha256_pair.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/hash.hpp"

using namespace cairn;

namespace {

std::string pair_hex(const std::string& prefix, const std::string& a, const std::string& b, std::string* second = nullptr) {
    Digest da{}, db{};
    sha256_pair({reinterpret_cast<const uint8_t*>(prefix.data()), prefix.size()}, reinterpret_cast<const uint8_t*>(a.data()),
                reinterpret_cast<const uint8_t*>(b.data()), a.size(), da.data(), db.data());
    if (second) *second = to_hex(db);
    return to_hex(da);
}

}  // namespace

TEST(Sha256Pair, KnownAnswers) {
    std::string second;
    EXPECT_EQ(pair_hex("a", "bc", "bd", &second), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(second, to_hex(sha256("abd")));
    EXPECT_EQ(pair_hex("", "", "", &second), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(second, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    // 56 bytes: the padding no longer fits the block, so a second block is all padding.
    EXPECT_EQ(pair_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "", ""),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

// Every way the prefix, the data and the padding can fall across block boundaries, against OpenSSL.
TEST(Sha256Pair, AgreesWithOpenSslForEveryBoundary) {
    std::mt19937 random(7);
    auto bytes = [&](size_t n) {
        std::string s(n, '\0');
        for (char& c : s) c = static_cast<char>(random());
        return s;
    };
    std::vector<size_t> prefixes = {0, 1, 31, 32, 55, 56, 63, 64, 65, 128, 256};
    std::vector<size_t> sizes = {0, 1, 8, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 512, 4064, 4096, 4097};
    for (size_t p : prefixes)
        for (size_t n : sizes) {
            const std::string prefix = bytes(p), a = bytes(n), b = bytes(n);
            std::string second;
            EXPECT_EQ(pair_hex(prefix, a, b, &second), to_hex(sha256(prefix + a))) << "prefix " << p << ", size " << n;
            EXPECT_EQ(second, to_hex(sha256(prefix + b))) << "prefix " << p << ", size " << n;
        }
}

TEST(Sha256Pair, SameMessageTwiceGivesTheSameDigestTwice) {
    const std::string salt(32, '\x5a'), block(4096, '\x01');
    std::string second;
    EXPECT_EQ(pair_hex(salt, block, block, &second), second);
    EXPECT_EQ(second, to_hex(sha256(salt + block)));
}
