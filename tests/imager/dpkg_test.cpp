#include "imager/dpkg.hpp"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <map>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/apt.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

TEST(Dpkg, EssentialClosureFollowsDependsAndTheFirstPresentAlternative) {
    std::vector<DebInfo> debs(7);
    debs[0] = {.package = "init-system-helpers", .depends = "perl-base (>= 5.20.1-3), usrmerge | usr-is-merged", .essential = true};
    debs[1] = {.package = "perl-base", .pre_depends = "libc6 (>= 2.35), libcrypt1:any (>= 1:4.1.0)", .essential = true};
    debs[2] = {.package = "libc6", .depends = "libgcc-s1"};
    debs[3] = {.package = "libcrypt1-dev", .provides = "libcrypt1 (= 1:4.4)"};
    debs[4] = {.package = "usr-is-merged"};
    debs[5] = {.package = "systemd", .depends = "libc6"};
    debs[6] = {.package = "libgcc-s1"};
    EXPECT_EQ(essential_closure(debs),
              (std::vector<std::string>{"init-system-helpers", "libc6", "libcrypt1-dev", "libgcc-s1", "perl-base", "usr-is-merged"}));
}

TEST(Dpkg, StatusFileGivesEveryPackageWithItsState) {
    auto got = parse_dpkg_status("Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\nArchitecture: amd64\nDescription: x\n y\n\n"
                                 "Package: dbus\nStatus: install ok unpacked\nVersion: 1.14\nArchitecture: amd64\n\n"
                                 "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n",
                                 "status");
    ASSERT_EQ(got.size(), 3u);  // the file's order
    EXPECT_EQ(got[0].name, "zlib1g");
    EXPECT_EQ(got[0].version, "1:1.2.13");
    EXPECT_TRUE(got[0].configured());
    EXPECT_EQ(got[1].name, "dbus");
    EXPECT_EQ(got[1].status, "install ok unpacked");
    EXPECT_FALSE(got[1].configured());
    EXPECT_FALSE(got[1].installed());
    EXPECT_EQ(got[2].architecture, "amd64");
    EXPECT_TRUE(got[2].configured());
}

// Moved from the SBOM's tests when its own parser went: the SBOM reads dpkg's status with this one.
TEST(Dpkg, StatusFileResolvesDependenciesAmongTheInstalled) {
    std::string status =
        "Package: a\nStatus: install ok installed\nVersion: 1:2.0-1+b1\nArchitecture: amd64\nSource: asrc (2.0-1)\n"
        "Maintainer: M <m@example.org>\nPre-Depends: c\nDepends: libx (>= 1) | b, mail-transport-agent, missing, a\n\n"
        "Package: b\nStatus: install ok installed\nVersion: 1\nArchitecture: all\nProvides: mail-transport-agent (= 1)\n\n"
        "Package: c\nStatus: deinstall ok config-files\nVersion: 3\nArchitecture: amd64\n\n"
        "Package: d\nStatus: hold ok installed\nVersion: 4\nArchitecture: amd64\nSource: dsrc\nDepends: b:any,\n  a\n";
    auto packages = parse_dpkg_status(status, "status");
    ASSERT_EQ(packages.size(), 4u);
    EXPECT_EQ(packages[0].name, "a");
    EXPECT_EQ(packages[0].version, "1:2.0-1+b1");
    EXPECT_EQ(packages[0].source, "asrc");
    EXPECT_EQ(packages[0].source_version, "2.0-1");
    EXPECT_EQ(packages[0].maintainer, "M <m@example.org>");
    EXPECT_EQ(packages[0].depends, std::vector<std::string>{"b"});  // c is not installed, a is itself
    EXPECT_FALSE(packages[2].installed());
    EXPECT_TRUE(packages[3].installed());  // on hold, but its files are there
    EXPECT_FALSE(packages[3].configured());
    EXPECT_EQ(packages[3].source, "dsrc");
    EXPECT_EQ(packages[3].depends, (std::vector<std::string>{"a", "b"}));
    test::expect_error([] { parse_dpkg_status("Package: x\nStatus: install ok installed\n", "STATUS"); }, {"STATUS", "'x'", "Version"});
    test::expect_error([] { parse_dpkg_status("Status: install ok installed\nVersion: 1\n", "STATUS"); }, {"STATUS", "Package"});
    test::expect_error([] { parse_dpkg_status(std::string(max_status_bytes + 1, '\n'), "STATUS"); }, {"STATUS", "larger than"});
}

TEST(Dpkg, TamingRemovesWhatDiffersFromRunToRun) {
    Scratch dir;
    for (const char* p : {"etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub", "var/lib/dbus/machine-id", "var/log/dpkg.log",
                          "var/cache/ldconfig/aux-cache", "var/lib/dpkg/status-old", "var/cache/debconf/config.dat-old"})
        test::write_text(dir / p, "random");
    test::write_text(dir / "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    test::write_text(dir / "etc/ssh/sshd_config", "keep\n");
    test::write_text(dir / "var/lib/dpkg/status", "keep\n");
    tame_installed_tree(dir.path());
    EXPECT_FALSE(fs::exists(dir / "etc/ssh/ssh_host_ed25519_key"));
    EXPECT_FALSE(fs::exists(dir / "etc/ssh/ssh_host_ed25519_key.pub"));
    EXPECT_FALSE(fs::exists(dir / "var/lib/dbus/machine-id"));
    EXPECT_FALSE(fs::exists(dir / "var/lib/dpkg/status-old"));
    EXPECT_FALSE(fs::exists(dir / "var/cache/debconf/config.dat-old"));
    EXPECT_FALSE(fs::exists(dir / "var/log/dpkg.log"));
    EXPECT_FALSE(fs::exists(dir / "var/cache/ldconfig/aux-cache"));
    EXPECT_EQ(read_file(dir / "etc/machine-id"), "");
    EXPECT_EQ(read_file(dir / "etc/ssh/sshd_config"), "keep\n");
    EXPECT_EQ(read_file(dir / "var/lib/dpkg/status"), "keep\n");
}

TEST(Dpkg, RefusesWithoutRootOrIntoATreeThatIsNotEmpty) {
    Scratch dir;
    test::write_text(dir / "root/etc/x", "x");
    if (test::is_root()) {
        test::expect_error([&] { install_packages(dir / "root", PackageLock{}, {}, {.where = "r.toml: rootfs"}); }, {"r.toml: rootfs", "not empty"});
    } else {
        test::expect_error([&] { install_packages(dir / "root", PackageLock{}, {}, {.where = "r.toml: rootfs"}); }, {"r.toml: rootfs", "needs root"});
    }
}

// --- a real install from Debian's archive (network, root): label integration ---

namespace {

// path type mode uid gid [size sha256 | link target], sorted: what two builds must share.
std::string manifest(const fs::path& root) {
    std::map<std::string, std::string> lines;
    for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) continue;
        std::string rel = fs::relative(it->path(), root).string();
        char head[96];
        std::snprintf(head, sizeof head, " %o %u %u ", st.st_mode, st.st_uid, st.st_gid);
        std::string tail;
        if (S_ISREG(st.st_mode)) tail = std::to_string(st.st_size) + " " + sha256_file_hex(it->path());
        else if (S_ISLNK(st.st_mode)) tail = fs::read_symlink(it->path()).string();
        lines[rel] = rel + head + tail;
    }
    std::string out;
    for (const auto& [k, v] : lines) out += v + "\n";
    return out;
}

std::vector<std::string> in_tree(const fs::path& root, const std::vector<std::string>& command) {
    std::vector<std::string> argv{"bwrap", "--ro-bind", root.string(), "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                                  "--unshare-all", "--die-with-parent", "--clearenv", "--setenv", "PATH", "/usr/sbin:/usr/bin", "--chdir", "/"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
}

double seconds_since(std::chrono::steady_clock::time_point t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); }

}  // namespace

TEST(DpkgOnline, InstallsTheLockAsDebianDoesAndAgainIdentically) {
    if (!test::is_root()) GTEST_SKIP() << "needs root";
    Scratch dir;
    std::string host_status = read_file("/var/lib/dpkg/status");
    PackageRequest r{.base = "essential", .packages = {"hello"}, .where = "x.toml: rootfs"};
    auto t = std::chrono::steady_clock::now();
    PackageLock lock = resolve_packages(r, default_cache_dir());
    std::printf("resolve %.2f s (%zu packages)\n", seconds_since(t), lock.packages.size());
    t = std::chrono::steady_clock::now();
    auto debs = fetch_packages(lock, r, default_cache_dir());
    std::printf("fetch %.2f s\n", seconds_since(t));
    t = std::chrono::steady_clock::now();
    auto installed = install_packages(dir / "a", lock, debs, {.epoch = 1700000000, .where = "x.toml: rootfs"});
    std::printf("install %.2f s\n", seconds_since(t));
    ASSERT_EQ(installed.size(), lock.packages.size());

    // Inside: dpkg lists exactly the lock; audit and verify print nothing (verify exits 0 even when it reports).
    std::string listed = run_checked(in_tree(dir / "a", {"dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n"}));
    std::string expected;
    for (const auto& p : lock.packages) expected += p.name + " " + p.version + " ii \n";
    EXPECT_EQ(listed, expected);
    EXPECT_EQ(run_checked(in_tree(dir / "a", {"dpkg", "--audit"})), "");
    RunResult verify = run(in_tree(dir / "a", {"dpkg", "--verify"}));
    EXPECT_EQ(verify.out + verify.err, "");
    EXPECT_EQ(run_checked(in_tree(dir / "a", {"hello"})), "Hello, world!\n");

    // Merged /usr kept, nothing of the sandbox left behind, the host untouched.
    EXPECT_EQ(fs::read_symlink(dir / "a/bin"), "usr/bin");
    EXPECT_EQ(fs::read_symlink(dir / "a/lib64"), "usr/lib64");
    EXPECT_FALSE(fs::exists(dir / "a/usr/sbin/policy-rc.d"));
    std::set<std::string> top;
    for (const auto& e : fs::directory_iterator(dir / "a")) top.insert(e.path().filename().string());
    EXPECT_EQ(top, (std::set<std::string>{"bin", "boot", "dev", "etc", "home", "lib", "lib64", "media", "mnt", "opt", "proc", "root", "run",
                                          "sbin", "srv", "sys", "tmp", "usr", "var"}));
    EXPECT_TRUE(fs::is_empty(dir / "a/tmp"));
    EXPECT_TRUE(fs::is_empty(dir / "a/run"));
    EXPECT_TRUE(fs::is_empty(dir / "a/dev"));
    EXPECT_TRUE(fs::is_empty(dir / "a/proc"));
    EXPECT_EQ(read_file("/var/lib/dpkg/status"), host_status);
    EXPECT_FALSE(fs::exists(dir / "a/var/log/dpkg.log"));

    // The same lock and epoch again, with a warm cache and without a network: the same tree.
    {
        UniqueFd own_net = open_file("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        ASSERT_EQ(::unshare(CLONE_NEWNET), 0);  // this thread and what it starts: only a loopback that is down
        try {
            debs = fetch_packages(lock, r, default_cache_dir());
            installed = install_packages(dir / "b", lock, debs, {.epoch = 1700000000, .where = "x.toml: rootfs"});
        } catch (const Error& e) {
            ADD_FAILURE() << e.what();
        }
        ASSERT_EQ(::setns(own_net.get(), CLONE_NEWNET), 0);
    }
    std::string ma = manifest(dir / "a"), mb = manifest(dir / "b");
    EXPECT_EQ(ma, mb);
}
