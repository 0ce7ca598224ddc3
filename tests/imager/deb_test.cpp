#include "imager/deb.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

namespace {

// Builds a small .deb with dpkg-deb, with a maintainer script that must never run.
std::filesystem::path make_deb(const Scratch& dir, const std::string& compression) {
    auto pkg = dir / "pkg";
    test::write_text(pkg / "DEBIAN/control", "Package: cairn-test\nVersion: 1.2-3\nArchitecture: all\nMaintainer: t <t@example.org>\nDepends: libc6 (>= 2.36)\nDescription: test\n");
    test::write_text(pkg / "DEBIAN/postinst", "#!/bin/sh\ntouch /tmp/cairn-postinst-ran\n");
    ::chmod((pkg / "DEBIAN/postinst").c_str(), 0755);
    test::write_text(pkg / "usr/bin/hello", "#!/bin/sh\necho hello\n");
    ::chmod((pkg / "usr/bin/hello").c_str(), 0755);
    test::write_text(pkg / "etc/hello.conf", "x=1\n");
    ::chmod((pkg / "etc/hello.conf").c_str(), 0640);
    auto deb = dir / ("cairn-test-" + compression + ".deb");
    run_checked({"dpkg-deb", "--root-owner-group", "-Z" + compression, "--build", pkg.string(), deb.string()});
    return deb;
}

}  // namespace

class DebCompression : public ::testing::TestWithParam<std::string> {};

TEST_P(DebCompression, ExtractsDataWithoutRunningScripts) {
    Scratch dir;
    auto deb = make_deb(dir, GetParam());
    Tree t(dir / "root");
    DebInfo info = extract_deb(deb, t, {});
    EXPECT_EQ(info.package, "cairn-test");
    EXPECT_EQ(info.version, "1.2-3");
    EXPECT_EQ(info.depends, "libc6 (>= 2.36)");
    EXPECT_EQ(read_file(dir / "root/usr/bin/hello"), "#!/bin/sh\necho hello\n");
    EXPECT_EQ(t.meta("/usr/bin/hello")->mode, S_IFREG | 0755);
    EXPECT_EQ(t.meta("/etc/hello.conf")->mode, S_IFREG | 0640);
    EXPECT_EQ(t.meta("/etc/hello.conf")->uid, 0u);
    EXPECT_FALSE(std::filesystem::exists(dir / "root/DEBIAN"));
    EXPECT_FALSE(std::filesystem::exists(dir / "root/postinst"));
}

INSTANTIATE_TEST_SUITE_P(Compressions, DebCompression, ::testing::Values("xz", "gzip", "zstd", "none"));

TEST(Deb, NotADebIsAClearError) {
    Scratch dir;
    test::write_text(dir / "fake.deb", "!<arch>\nnot really\n");
    Tree t(dir / "root");
    try {
        extract_deb(dir / "fake.deb", t, {});
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("fake.deb: not a Debian package"), std::string::npos) << e.what();
    }
}

// Uses apt's package lists and the Debian mirror: the same path `cairn build` takes.
TEST(Deb, FetchesByNameIntoTheCacheOnce) {
    Scratch cache;
    auto deb = fetch_deb("busybox-static", cache.path(), "rootfs.add[0].package");
    ASSERT_TRUE(std::filesystem::exists(deb));
    AptPackage p = apt_show("busybox-static", "t");
    EXPECT_EQ(sha256_file_hex(deb), p.sha256);
    auto before = std::filesystem::last_write_time(deb);
    EXPECT_EQ(fetch_deb("busybox-static", cache.path(), "t"), deb);
    EXPECT_EQ(std::filesystem::last_write_time(deb), before) << "a cached .deb with the right hash is reused";
    Tree t(cache / "root");
    extract_deb(deb, t, {});
    EXPECT_TRUE(std::filesystem::exists(cache / "root/bin/busybox"));
}

TEST(Deb, UnknownPackageNamesTheKey) {
    Scratch cache;
    try {
        fetch_deb("cairn-no-such-package", cache.path(), "recipe.toml:30: rootfs.add[2].package");
        FAIL();
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("recipe.toml:30: rootfs.add[2].package: unknown Debian package 'cairn-no-such-package'"), std::string::npos) << m;
    }
}
