#include "common/text.hpp"

#include <gtest/gtest.h>

using namespace cairn;

TEST(Text, TrimDropsBlanksAtBothEndsOrTheGivenCharacters) {
    EXPECT_EQ(trim("  a b \t\r\n"), "a b");
    EXPECT_EQ(trim("\n\n"), "");
    EXPECT_EQ(trim(""), "");
    EXPECT_EQ(trim("xxaxx", "x"), "a");
    EXPECT_EQ(trim(" a\n", "\n"), " a");
}

TEST(Text, TrimEndKeepsTheStart) {
    EXPECT_EQ(trim_end("  key\r\n"), "  key");
    EXPECT_EQ(trim_end("value \n \n"), "value");
    EXPECT_EQ(trim_end(std::string("text\0\0\n", 7), std::string_view("\0\n", 2)), "text");
    EXPECT_EQ(trim_end(" \t"), "");
}

TEST(Text, LastLinesCountsFromTheEndIgnoringTrailingBlankLines) {
    EXPECT_EQ(last_lines("a\nb\nc\n\n", 2), "b\nc");
    EXPECT_EQ(last_lines("a\nb\n", 5), "a\nb");
    EXPECT_EQ(last_lines("one line", 1), "one line");
    EXPECT_EQ(last_lines("", 3), "");
    EXPECT_EQ(last_lines("a\nb", 0), "");
    EXPECT_EQ(last_lines("\nb", 1), "b");
    EXPECT_EQ(last_lines(" \n\n", 2), "");
}
