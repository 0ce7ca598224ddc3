#include "common/encoding.hpp"

#include <gtest/gtest.h>

#include "common/hash.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;

TEST(Encoding, Base64RoundTripsAndMatchesRfc4648) {
    EXPECT_EQ(base64_encode(std::string_view("")), "");
    EXPECT_EQ(base64_encode(std::string_view("f")), "Zg==");
    EXPECT_EQ(base64_encode(std::string_view("fo")), "Zm8=");
    EXPECT_EQ(base64_encode(std::string_view("foobar")), "Zm9vYmFy");
    for (std::string s : {std::string(), std::string("a"), std::string("ab"), std::string("abc"), std::string("abcd"), std::string("\0\xff\x10", 3)})
        EXPECT_EQ(base64_decode(base64_encode(s), "t"), s);
    EXPECT_EQ(base64_decode("Zm9v\nYmE=", "t"), "fooba");
}

TEST(Encoding, Base64RejectsGarbage) {
    cairn::test::expect_error([] { base64_decode("Zm9v!", "tpm.endorsementKey"); }, {"tpm.endorsementKey", "not base64"});
    cairn::test::expect_error([] { base64_decode("Zg=a", "key"); }, {"key", "after '=' padding"});
    cairn::test::expect_error([] { base64_decode("Z", "key"); }, {"key", "truncated"});
}

TEST(Encoding, Base32IsLowercaseUnpadded) {
    auto bytes = [](std::string_view s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
    EXPECT_EQ(base32_lower_unpadded(bytes("foobar")), "mzxw6ytboi");
    EXPECT_EQ(base32_lower_unpadded(bytes("f")), "my");
    // The TPM registration-ID rule on a SHA-256 digest: 52 characters (Python's b32encode, '=' stripped, lower).
    auto digest = cairn::sha256("abc");
    EXPECT_EQ(base32_lower_unpadded(digest), "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq");
}

TEST(Encoding, UrlEncodingAndQueries) {
    EXPECT_EQ(url_encode("0ne00000001/registrations/dev-1"), "0ne00000001%2Fregistrations%2Fdev-1");
    EXPECT_EQ(url_encode("a+b=c~"), "a%2Bb%3Dc~");
    EXPECT_EQ(url_decode("a%2bb%3D", "t"), "a+b=");
    cairn::test::expect_error([] { url_decode("abc%4", "sr"); }, {"sr", "percent-encoding"});
    auto q = parse_query("api-version=2021-06-01&x=a%20b&flag", "q");
    EXPECT_EQ(q["api-version"], "2021-06-01");
    EXPECT_EQ(q["x"], "a b");
    EXPECT_EQ(q.count("flag"), 1u);
}

TEST(Encoding, Timestamps) {
    auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
    EXPECT_EQ(utc_timestamp(t), "2023-11-14T22:13:20.123Z");
    EXPECT_EQ(unix_seconds(t), 1700000000);
    EXPECT_EQ(to_lower("0NE000ABC"), "0ne000abc");
}
