#include "common/units.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;

TEST(Units, ParsesBinaryAndDecimalUnits) {
    EXPECT_EQ(parse_size("4096", "x"), 4096u);
    EXPECT_EQ(parse_size("512KiB", "x"), 512u * 1024);
    EXPECT_EQ(parse_size("200 MiB", "x"), 200u * MiB);
    EXPECT_EQ(parse_size("4G", "x"), 4 * GiB);
    EXPECT_EQ(parse_size("4GiB", "x"), 4 * GiB);
    EXPECT_EQ(parse_size("10MB", "x"), 10'000'000u);
    EXPECT_EQ(parse_size("2TiB", "x"), 2 * TiB);
}

TEST(Units, RejectsMalformedSizesNamingTheKey) {
    for (const char* bad : {"", "MiB", "12 parsecs", "-5", "99999999999999999999", "20000000TiB"}) {
        try {
            parse_size(bad, "disk.size");
            FAIL() << "accepted '" << bad << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("disk.size"), std::string::npos) << e.what();
        }
    }
}

TEST(Units, FormatsSizes) {
    EXPECT_EQ(format_size(4 * GiB), "4 GiB");
    EXPECT_EQ(format_size(200 * MiB), "200 MiB");
    EXPECT_EQ(format_size(1536 * MiB), "1.5 GiB");
    EXPECT_EQ(format_size(100), "100 B");
    EXPECT_EQ(align_up(1, MiB), MiB);
    EXPECT_EQ(align_up(MiB, MiB), MiB);
}

TEST(Units, CheckedArithmeticRefusesToWrap) {
    EXPECT_EQ(checked_add(1, 2, "x"), 3u);
    EXPECT_EQ(checked_mul(4096, 1000, "x"), 4096000u);
    EXPECT_EQ(checked_add(UINT64_MAX - 1, 1, "x"), UINT64_MAX);
    // 2^52 × 4096 wraps to 0 in 64 bits.
    expect_error([] { checked_mul((1ull << 52) + 3, 4096, "payloads[1].verity"); }, {"payloads[1].verity", "more than 64 bits"});
    expect_error([] { checked_add(UINT64_MAX, 1, "offset"); }, {"offset", "more than 64 bits"});
}
