#include "updater/bundle_url.hpp"

#include <gtest/gtest.h>

using namespace cairn::updater;

TEST(BundleUrl, UrlsAreRecognisedAndSignedUrlTokensStayOutOfMessages) {
    EXPECT_EQ(redact_url("https://cdn.example/b.cairn?sig=abc&exp=1"), "https://cdn.example/b.cairn?…");
    EXPECT_EQ(redact_url("https://cdn.example/b.cairn"), "https://cdn.example/b.cairn");
    EXPECT_TRUE(is_bundle_url("HTTPS://x/y"));
    EXPECT_TRUE(is_bundle_url("http://x/y"));
    EXPECT_FALSE(is_bundle_url("/var/b.cairn"));
    EXPECT_FALSE(is_bundle_url("ftp://x/y"));
}
