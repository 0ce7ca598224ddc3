#include "imager/package_lock.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;

namespace {

PackageLock sample() {
    PackageLock lock;
    lock.request_digest = std::string(64, 'a');
    lock.packages.push_back({"libcap2", "1:2.66-4+deb12u3+b1", "amd64", "libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb",
                             "http://deb.debian.org/debian/pool/main/libc/libcap2/libcap2_2.66-4%2bdeb12u3%2bb1_amd64.deb",
                             std::string(64, '1'), 27000, false});
    lock.packages.push_back({"base-files", "12.4+deb12u15", "amd64", "base-files_12.4+deb12u15_amd64.deb",
                             "http://deb.debian.org/debian/pool/main/b/base-files/base-files_12.4%2bdeb12u15_amd64.deb",
                             std::string(64, '2'), 70820, false});
    lock.packages.push_back({"myapp", "1.0", "all", "myapp.deb", "", std::string(64, '3'), 652, true});
    return lock;
}

}  // namespace

TEST(PackageLock, TextIsSortedOnePackagePerLineAndReadsBack) {
    std::string text = lock_text(sample());
    // Sorted by name, one line each: a changed package is a one-line diff.
    size_t base = text.find("\"name\":\"base-files\""), cap = text.find("\"name\":\"libcap2\""), app = text.find("\"name\":\"myapp\"");
    ASSERT_NE(base, std::string::npos);
    EXPECT_LT(base, cap);
    EXPECT_LT(cap, app);
    EXPECT_EQ(text.find('\n', base), text.find("\n", text.rfind("{", base)));
    PackageLock back = parse_lock(text, "x.lock");
    ASSERT_EQ(back.packages.size(), 3u);
    EXPECT_EQ(back.request_digest, std::string(64, 'a'));
    EXPECT_EQ(back.packages[1].name, "libcap2");
    EXPECT_EQ(back.packages[1].version, "1:2.66-4+deb12u3+b1");
    EXPECT_EQ(back.packages[1].filename, "libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb");
    EXPECT_EQ(back.packages[1].size, 27000u);
    EXPECT_TRUE(back.packages[2].local);
    EXPECT_EQ(lock_text(back), text);  // stable
    ASSERT_NE(find_locked(back, "myapp"), nullptr);
    EXPECT_EQ(find_locked(back, "nothing"), nullptr);
}

TEST(PackageLock, MalformedFilesAreRefusedNamingTheFile) {
    std::string good = lock_text(sample());
    auto replace = [&](const std::string& from, const std::string& to) {
        std::string t = good;
        size_t at = t.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return t.replace(at, from.size(), to);
    };
    test::expect_error([] { parse_lock("{not json", "recipes/x.toml.lock"); }, {"recipes/x.toml.lock", "invalid JSON"});
    test::expect_error([] { parse_lock("[]", "a.lock"); }, {"a.lock", "not a JSON object"});
    // A number too large for a double is nlohmann's out_of_range, not a parse_error (found by fuzz_package_lock).
    test::expect_error([] { parse_lock("{\"format\": 1e99999}", "a.lock"); }, {"a.lock", "invalid JSON"});
    test::expect_error([&] { parse_lock(replace("\"format\": 1", "\"format\": 2"), "a.lock"); }, {"a.lock", "format 2"});
    test::expect_error([&] { parse_lock(replace("\"format\": 1", "\"format\": 4294967297"), "a.lock"); }, {"a.lock", "format 4294967297"});
    test::expect_error([&] { parse_lock(replace("\"request\"", "\"req\""), "a.lock"); }, {"a.lock", "request"});
    test::expect_error([&] { parse_lock(replace(std::string(64, '1'), "abc"), "a.lock"); }, {"a.lock", "libcap2", "sha256"});
    test::expect_error([&] { parse_lock(replace("\"size\":70820", "\"size\":-1"), "a.lock"); }, {"a.lock", "base-files", "size"});
    test::expect_error([&] { parse_lock(replace("\"version\":\"1.0\"", "\"version\":\"\""), "a.lock"); }, {"a.lock", "myapp", "version"});
    test::expect_error([&] { parse_lock(replace("\"filename\":\"myapp.deb\"", "\"filename\":\"../myapp.deb\""), "a.lock"); },
                       {"a.lock", "myapp", "plain file name"});
    test::expect_error([&] { parse_lock(replace("\"name\":\"myapp\"", "\"name\":\"libcap2\""), "a.lock"); }, {"a.lock", "libcap2", "twice"});
    test::expect_error([&] { parse_lock(replace("\"url\":\"http", "\"url\":7,\"x\":\"http"), "a.lock"); }, {"a.lock", "url"});
    test::expect_error([&] { parse_lock(replace("\"local\":true", "\"local\":1"), "a.lock"); }, {"a.lock", "myapp", "local"});
}
