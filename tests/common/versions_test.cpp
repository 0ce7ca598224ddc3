// The order and form of versions (common/versions.hpp).
#include "common/versions.hpp"

#include <gtest/gtest.h>

using namespace cairn;

TEST(Versions, CompareNumericallyPartByPart) {
    EXPECT_LT(compare_versions("1.9", "1.10"), 0);
    EXPECT_GT(compare_versions("2.0", "1.99.99"), 0);
    EXPECT_EQ(compare_versions("1.2.3", "1.2.3"), 0);
    EXPECT_LT(compare_versions("1.2", "1.2.1"), 0);
    EXPECT_LT(compare_versions("1.2.0-rc1", "1.2.0-rc2"), 0);
    EXPECT_GT(compare_versions("0.2.0", "0.1.0"), 0);
}

// A pre-release sorts before its release, both as semver writes it (`-`) and as Debian does (`~`):
// an old release-candidate bundle is a downgrade from the release.
TEST(Versions, PreReleasesSortBeforeTheirRelease) {
    for (const char* rc : {"0.1.0-rc1", "0.1.0~rc1"}) {
        EXPECT_LT(compare_versions(rc, "0.1.0"), 0) << rc;
        EXPECT_GT(compare_versions("0.1.0", rc), 0) << rc;
        EXPECT_GT(compare_versions(rc, "0.0.9"), 0) << rc;
        EXPECT_LT(compare_versions(rc, "0.1.1-rc1"), 0) << rc;
        EXPECT_LT(compare_versions(rc, "0.1.1"), 0) << rc;
        EXPECT_EQ(compare_versions(rc, rc), 0) << rc;
    }
    EXPECT_LT(compare_versions("0.1.0", "0.1.1-rc1"), 0);
    EXPECT_GT(compare_versions("0.1.1-rc1", "0.1.0"), 0);
    EXPECT_LT(compare_versions("0.1.0-rc1", "0.1.0-rc2"), 0);
    EXPECT_GT(compare_versions("0.1.0~rc2", "0.1.0~rc1"), 0);
    EXPECT_LT(compare_versions("0.1.0-rc9", "0.1.0-rc10"), 0);  // digit runs numerically
    EXPECT_EQ(compare_versions("0.1.0-rc1", "0.1.0~rc1"), 0);   // the two spellings of one pre-release
    // semver's order of pre-release identifiers: numeric ones numerically and below alphanumeric
    // ones; more identifiers are newer when the common ones are equal.
    EXPECT_LT(compare_versions("1.0.0-alpha", "1.0.0-alpha.1"), 0);
    EXPECT_LT(compare_versions("1.0.0-alpha.1", "1.0.0-alpha.beta"), 0);
    EXPECT_LT(compare_versions("1.0.0-alpha.beta", "1.0.0-beta"), 0);
    EXPECT_LT(compare_versions("1.0.0-beta", "1.0.0-beta.2"), 0);
    EXPECT_LT(compare_versions("1.0.0-beta.2", "1.0.0-beta.11"), 0);
    EXPECT_LT(compare_versions("1.0.0-beta.11", "1.0.0-rc.1"), 0);
    EXPECT_LT(compare_versions("1.0.0-rc.1", "1.0.0"), 0);
    EXPECT_LT(compare_versions("1.0.0-1", "1.0.0-alpha"), 0);
    EXPECT_GT(compare_versions("1.0.0-alpha", "1.0.0-1"), 0);
    // Numbers of any length, and leading zeros, compare by value.
    EXPECT_LT(compare_versions("1.99999999999999999999", "1.100000000000000000000"), 0);
    EXPECT_EQ(compare_versions("1.02", "1.2"), 0);
    // Build metadata after `+` does not order versions (semver); equal versions are equal.
    EXPECT_EQ(compare_versions("1.0.0+build.5", "1.0.0+build.6"), 0);
    EXPECT_EQ(compare_versions("1.0.0+x", "1.0.0"), 0);
    EXPECT_LT(compare_versions("1.0.0-rc1+x", "1.0.0"), 0);
    EXPECT_EQ(compare_versions("2.0", "2.0"), 0);
}

// What `cairn build` accepts as a recipe's version or --image-version: what compare_versions orders.
TEST(Versions, WellFormed) {
    for (const char* good : {"1", "0.1.0", "2.0.0-rc1", "1.0~rc2", "1.2.3+build.7", "2024.05.01", "1.0.0-alpha.beta", "1.0-1"})
        EXPECT_FALSE(version_problem(good)) << good;
    for (const char* bad : {"", "not a version!", "v1.0", "1..2", "1.0-", "1.0+", ".1", "1.0 ", "1.0-rc..1", "1/2"})
        EXPECT_TRUE(version_problem(bad)) << bad;
    EXPECT_EQ(version_problem("v1.0").value_or(""), "it starts with 'v': a version starts with a digit, such as 1.0 or 2.1.0-rc1");
}
