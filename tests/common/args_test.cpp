#include "common/args.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

using namespace cairn;

TEST(Args, WalksOptionsValuesAndPositionals) {
    Args a({"build", "-o", "out dir", "--json", "--timeout", "30", "-", "--cache=x"});
    std::vector<std::string> seen;
    std::string out;
    long long timeout = 0;
    bool json = false;
    while (a.next()) {
        if (a.is("-o", "--output")) out = a.value();
        else if (a.is("--timeout")) timeout = a.number(1, 60);
        else if (a.is("--json")) json = true;
        else seen.push_back(a.arg() + (a.is_option() ? " (option)" : ""));
    }
    EXPECT_EQ(out, "out dir");
    EXPECT_EQ(timeout, 30);
    EXPECT_TRUE(json);
    EXPECT_EQ(seen, (std::vector<std::string>{"build", "-", "--cache=x (option)"}));
    EXPECT_FALSE(a.next());
}

TEST(Args, SkipsTheProgramName) {
    char program[] = "cairn", first[] = "--json";
    char* argv[] = {program, first, nullptr};
    Args a(2, argv);
    ASSERT_TRUE(a.next());
    EXPECT_EQ(a.arg(), "--json");
    EXPECT_FALSE(a.next());
}

TEST(Args, AMissingOrMalformedValueNamesTheOption) {
    Args a({"--key"});
    ASSERT_TRUE(a.next());
    test::expect_error([&] { a.value(); }, {"--key needs a value"});

    for (const char* bad : {"", "12x", "x", "1.5", "99999999999999999999"}) {
        Args b({"--port", bad});
        b.next();
        test::expect_error([&] { b.number(0, 65535); }, {"--port: '" + std::string(bad) + "' is not a whole number"});
    }
    Args c({"--port", "70000"});
    c.next();
    test::expect_error([&] { c.number(0, 65535); }, {"--port: 70000 is out of range (0 to 65535)"});
    Args d({"--port"});
    d.next();
    try {
        d.number(0, 1);
        FAIL() << "no error";
    } catch (const UsageError& e) {
        EXPECT_STREQ(e.what(), "--port needs a value");
    }
}

TEST(Args, HelpIsTakenByTheWalkerNeverAsAValue) {
    Args a({"build", "-h", "--key", "--help", "x"});
    std::vector<std::string> seen;
    std::string key;
    while (a.next()) {
        if (a.is("--key")) key = a.value();
        else seen.push_back(a.arg());
    }
    EXPECT_TRUE(a.help());
    EXPECT_EQ(key, "--help");  // an option's value
    EXPECT_EQ(seen, (std::vector<std::string>{"build", "x"}));
    Args b({"status", "--json"});
    while (b.next()) {
    }
    EXPECT_FALSE(b.help());
    EXPECT_TRUE(Args::help_in({"apply", "--help"}));
    EXPECT_TRUE(Args::help_in({"-h"}));
    EXPECT_FALSE(Args::help_in({"apply", "--policy", "p"}));
}

TEST(Args, VersionIsTakenByTheWalkerNeverAsAValue) {
    Args a({"status", "--image-version", "--version", "--version", "x"});
    std::vector<std::string> seen;
    std::string value;
    while (a.next()) {
        if (a.is("--image-version")) value = a.value();
        else seen.push_back(a.arg());
    }
    EXPECT_TRUE(a.version());
    EXPECT_FALSE(a.help());
    EXPECT_EQ(value, "--version");  // an option's value
    EXPECT_EQ(seen, (std::vector<std::string>{"status", "x"}));
    EXPECT_TRUE(Args::version_in({"apply", "--version"}));
    EXPECT_FALSE(Args::version_in({"apply", "--policy", "p"}));
    EXPECT_FALSE(Args::help_in({"--version"}));
}
