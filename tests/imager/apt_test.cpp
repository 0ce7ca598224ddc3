#include "imager/apt.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <sys/file.h>

#include <chrono>
#include <future>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/deb.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

TEST(AptParse, SimulationLinesWithEpochsAndBrokenTails) {
    auto got = parse_simulation(
        "Reading package lists...\n"
        "Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n"
        "Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n"
        "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n"
        "Inst libcap2 (1:2.66-4+deb12u3+b1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])\n"
        "Inst myapp (1.0 local-deb [all])\n");
    ASSERT_EQ(got.size(), 4u);
    EXPECT_EQ(got[0].name, "gcc-12-base");
    EXPECT_EQ(got[1].name, "libc6");
    EXPECT_EQ(got[1].version, "2.36-9+deb12u14");
    EXPECT_EQ(got[1].architecture, "amd64");
    EXPECT_EQ(got[2].version, "1:2.66-4+deb12u3+b1");
    EXPECT_EQ(got[3].architecture, "all");
    test::expect_error([] { parse_simulation("Inst broken\n"); }, {"cannot read", "Inst broken"});
}

TEST(AptParse, PrintUrisWithEscapedFileNamesAndLocalDebs) {
    auto got = parse_print_uris(
        "'http://deb.debian.org/debian/pool/main/libc/libcap2/libcap2_2.66-4%2bdeb12u3%2bb1_amd64.deb' libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb 27000 "
        "SHA256:3016e62cb4b7cd8038822870601f5ed131befe942774d0f745622cc77d8a88f7\n"
        "'file:/tmp/exp/myapp2.deb' myapp2_1.0_all.deb 652 \n");
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].url, "http://deb.debian.org/debian/pool/main/libc/libcap2/libcap2_2.66-4%2bdeb12u3%2bb1_amd64.deb");
    EXPECT_EQ(got[0].filename, "libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb");
    EXPECT_EQ(got[0].size, 27000u);
    EXPECT_EQ(got[0].sha256, "3016e62cb4b7cd8038822870601f5ed131befe942774d0f745622cc77d8a88f7");
    EXPECT_EQ(got[1].sha256, "");
    EXPECT_EQ(deb_file_name("libcap2", "1:2.66-4+deb12u3+b1", "amd64"), got[0].filename);
    test::expect_error([] { parse_print_uris("'http://x/a.deb' a.deb 12 MD5Sum:0123\n"); }, {"MD5Sum", "not SHA256"});
    test::expect_error([] { parse_print_uris("'http://x/a.deb' a.deb twelve SHA256:00\n"); }, {"cannot read", "size"});
}

TEST(AptParse, FailuresBecomeOneLineNamingThePackage) {
    EXPECT_EQ(apt_failure("Reading package lists...\nE: Unable to locate package no-such-package\n"),
              "unknown package 'no-such-package' (no package of that name in the sources)");
    EXPECT_EQ(apt_failure("Package mail-transport-agent is a virtual package provided by:\n  exim4-daemon-light 4.96-15\n  postfix 3.7.11-0\n\n"
                          "E: Package 'mail-transport-agent' has no installation candidate\n"),
              "package 'mail-transport-agent' has no installation candidate (a virtual package: name one of its providers: exim4-daemon-light, postfix)");
    EXPECT_EQ(apt_failure("E: Version '1.0' for 'systemd' was not found\n"), "package 'systemd' has no version '1.0' in the sources");
    EXPECT_EQ(apt_failure("The following information may help to resolve the situation:\n\n"
                          "The following packages have unmet dependencies:\n"
                          " myapp : Depends: libfoo-does-not-exist (>= 2) but it is not installable\n"
                          "         Depends: libbar but it is not installable\n"
                          "E: Unable to correct problems, you have held broken packages.\n"),
              "apt cannot satisfy the dependencies: myapp : Depends: libfoo-does-not-exist (>= 2) but it is not installable; "
              "Depends: libbar but it is not installable");
    EXPECT_EQ(apt_failure("The following packages have unmet dependencies:\n"
                          " systemd-sysv : Conflicts: sysvinit-core but 3.06-4 is to be installed\n"
                          "E: Unable to correct problems, you have held broken packages.\n"),
              "conflicting packages: systemd-sysv : Conflicts: sysvinit-core but 3.06-4 is to be installed");
    EXPECT_EQ(apt_failure("W: x\nE: one\nE: two\n"), "apt-get failed: one; two");
}

TEST(AptArguments, BaseSetsAsPatternsAlwaysWithUsrIsMerged) {
    PackageRequest r{.base = "minbase", .packages = {"hello", "systemd=252"}, .local_debs = {"/x/my.deb"}, .where = "r.toml: rootfs"};
    EXPECT_EQ(apt_arguments(r), (std::vector<std::string>{"?essential", "?priority(required)", "usr-is-merged", "hello", "systemd=252", "/x/my.deb"}));
    r.base = "important";
    EXPECT_EQ(apt_arguments(r)[2], "?priority(important)");
    r.base = "";
    EXPECT_EQ(apt_arguments(r)[1], "usr-is-merged");
    r.base = "standard";
    test::expect_error([&] { apt_arguments(r); }, {"r.toml: rootfs", "unknown base set 'standard'"});
    r.base = "essential";
    r.packages = {"-o"};
    test::expect_error([&] { apt_arguments(r); }, {"r.toml: rootfs", "'-o' is not a package name"});
}

TEST(AptArguments, RequestDigestFollowsPackagesAndSources) {
    Scratch dir;
    test::write_text(dir / "a.sources", "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n");
    PackageRequest r{.base = "essential", .packages = {"hello"}, .sources = dir / "a.sources"};
    std::string d = request_digest(r);
    EXPECT_EQ(d, request_digest(r));
    r.packages.push_back("dbus");
    EXPECT_NE(request_digest(r), d);
    r.packages.pop_back();
    test::write_text(dir / "a.sources", "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n");
    EXPECT_NE(request_digest(r), d);
    r.sources = dir / "a.txt";
    test::write_text(r.sources, "");
    test::expect_error([&] { request_digest(r); }, {"a.txt", ".sources", ".list"});
}

// --- against Debian's archive (network, root for apt's downloads): label integration ---

namespace {

fs::path online_cache() { return default_cache_dir(); }

// A .deb of our own whose dependency no source has.
fs::path make_deb(const Scratch& dir, const std::string& name, const std::string& depends) {
    auto pkg = dir / ("pkg-" + name);
    test::write_text(pkg / "DEBIAN/control", "Package: " + name + "\nVersion: 1:1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDepends: " +
                                                 depends + "\nDescription: test\n");
    test::write_text(pkg / "usr/share/doc" / name / "README", "test\n");
    auto deb = dir / (name + ".deb");
    run_checked({"dpkg-deb", "--root-owner-group", "--build", pkg.string(), deb.string()});
    return deb;
}

}  // namespace

TEST(AptOnline, ResolveErrorsAreOneLineNamingPackageAndCause) {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    Scratch dir;
    PackageRequest r{.base = "essential", .where = "recipes/x.toml: rootfs.packages"};
    auto one_line = [](const std::function<void()>& f) {
        try {
            f();
        } catch (const Error& e) {
            std::string m = e.what();
            EXPECT_EQ(m.find('\n'), std::string::npos) << m;
            return m;
        }
        ADD_FAILURE() << "no error";
        return std::string();
    };
    r.packages = {"no-such-package-cairn"};
    EXPECT_EQ(one_line([&] { resolve_packages(r, online_cache()); }),
              "recipes/x.toml: rootfs.packages: unknown package 'no-such-package-cairn' (no package of that name in the sources)");
    r.packages = {"mail-transport-agent"};
    EXPECT_NE(one_line([&] { resolve_packages(r, online_cache()); })
                  .find("rootfs.packages: package 'mail-transport-agent' has no installation candidate (a virtual package: name one of its providers: "),
              std::string::npos);
    r.packages = {"systemd-sysv", "sysvinit-core"};
    EXPECT_NE(one_line([&] { resolve_packages(r, online_cache()); }).find("rootfs.packages: conflicting packages: systemd-sysv : Conflicts: sysvinit-core"),
              std::string::npos);
    r.packages = {"systemd=1.0"};
    EXPECT_EQ(one_line([&] { resolve_packages(r, online_cache()); }), "recipes/x.toml: rootfs.packages: package 'systemd' has no version '1.0' in the sources");
    r.packages = {};
    r.local_debs = {make_deb(dir, "cairn-myapp", "libfoo-does-not-exist (>= 2), hello")};
    EXPECT_EQ(one_line([&] { resolve_packages(r, online_cache()); }),
              "recipes/x.toml: rootfs.packages: apt cannot satisfy the dependencies: cairn-myapp : Depends: libfoo-does-not-exist (>= 2) but it is not installable");
}

TEST(AptOnline, UnsignedSourcesAreRefusedAsAptRefusesThem) {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    Scratch dir;
    // No Signed-By and a keyring that is not Debian's: apt must refuse the Release file.
    test::write_text(dir / "x.sources", "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-updates\nComponents: main\n"
                                        "Signed-By: /usr/share/keyrings/debian-archive-removed-keys.gpg\n");
    PackageRequest r{.base = "essential", .packages = {"hello"}, .sources = dir / "x.sources", .where = "x.toml: rootfs.sources"};
    test::expect_error([&] { resolve_packages(r, dir / "cache"); }, {"x.toml: rootfs.sources: apt-get update failed", "not signed"});
}

TEST(AptOnline, ResolvesLocksAndFetchesAndRefusesAWrongHash) {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    Scratch dir;
    PackageRequest r{.base = "essential", .packages = {"hello"}, .local_debs = {make_deb(dir, "cairn-myapp2", "hello")}, .where = "x.toml: rootfs"};
    auto t0 = std::chrono::steady_clock::now();
    PackageLock lock = resolve_packages(r, online_cache());
    auto t1 = std::chrono::steady_clock::now();
    std::printf("resolve: %.2f s, %zu packages\n", std::chrono::duration<double>(t1 - t0).count(), lock.packages.size());
    EXPECT_EQ(lock.request_digest, request_digest(r));
    const LockedPackage* hello = find_locked(lock, "hello");
    ASSERT_NE(hello, nullptr);
    EXPECT_FALSE(hello->local);
    EXPECT_EQ(hello->sha256.size(), 64u);
    EXPECT_TRUE(hello->url.starts_with("http")) << hello->url;
    ASSERT_NE(find_locked(lock, "usr-is-merged"), nullptr);
    EXPECT_EQ(find_locked(lock, "usrmerge"), nullptr);
    EXPECT_EQ(find_locked(lock, "perl"), nullptr);
    ASSERT_NE(find_locked(lock, "cairn-myapp2"), nullptr);
    EXPECT_TRUE(find_locked(lock, "cairn-myapp2")->local);
    EXPECT_EQ(find_locked(lock, "cairn-myapp2")->version, "1:1.0");
    EXPECT_NE(find_locked(lock, "dpkg"), nullptr);

    // Builds sharing the apt state take turns: while another holds its lock, a resolve waits.
    fs::path state;
    for (const auto& e : fs::directory_iterator(online_cache() / "apt"))
        if (fs::exists(e.path() / "apt.conf") && read_file(e.path() / "apt.conf").find(e.path().string()) != std::string::npos &&
            fs::exists(e.path() / "etc/apt/sources.list.d/debian.sources"))
            state = e.path();
    ASSERT_FALSE(state.empty());
    UniqueFd held = open_file(state / "lock", O_RDWR);
    ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
    struct stat before {}, during {};
    ASSERT_EQ(::stat((state / "apt.conf").c_str(), &before), 0);
    auto second = std::async(std::launch::async, [&] { return resolve_packages(r, online_cache()); });
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    // Under the lock it writes its configuration anew (a new file): not yet.
    ASSERT_EQ(::stat((state / "apt.conf").c_str(), &during), 0);
    EXPECT_EQ(during.st_ino, before.st_ino);
    held.reset();
    EXPECT_EQ(lock_text(second.get()), lock_text(lock));

    // Into a cache of its own: hello comes from the network, then from the cache.
    PackageLock small;
    small.packages = {*hello};
    auto files = fetch_packages(small, r, dir / "cache");
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0], dir / "cache/debs" / hello->filename);
    EXPECT_EQ(read_deb_info(files[0]).package, "hello");
    EXPECT_EQ(fetch_packages(small, r, dir / "cache"), files);

    // A lock whose SHA-256 is not the file's: neither the cached file nor a download is taken.
    small.packages[0].sha256 = std::string(64, '0');
    test::expect_error([&] { fetch_packages(small, r, dir / "cache"); },
                       {"x.toml: rootfs: locked package hello " + hello->version + " cannot be had", "SHA-256"});
    // A file that went from the archive.
    small.packages[0] = *hello;
    small.packages[0].url = "http://deb.debian.org/debian/pool/main/h/hello/hello_0.0-cairn_amd64.deb";
    small.packages[0].filename = "hello_0.0-cairn_amd64.deb";
    test::expect_error([&] { fetch_packages(small, r, dir / "cache"); }, {"locked package hello", "cannot be had", "404"});
    // A local package that changed since the lock.
    small.packages = {*find_locked(lock, "cairn-myapp2")};
    make_deb(dir, "cairn-myapp2", "hello, dpkg");
    test::expect_error([&] { fetch_packages(small, r, dir / "cache"); }, {"locked package cairn-myapp2 1:1.0 cannot be had", "has changed", "cairn lock --update"});
}
