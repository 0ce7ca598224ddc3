#include "initrd/early_boot.hpp"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/test_support.hpp"

using namespace cairn::initrd;
using cairn::test::Scratch;
using cairn::test::write_text;
namespace fs = std::filesystem;

TEST(EarlyBoot, ModulesWithSettingsAreTheOnesModprobeDAndTheCommandLineName) {
    Scratch s;
    write_text(s / "etc/modprobe.d/admin.conf", "# a comment naming nothing\noptions nf-conntrack hashsize=4096\nblacklist pcspkr\n");
    write_text(s / "usr/lib/modprobe.d/vendor.conf", "install dummy /bin/true\nsoftdep libcrc32c pre: crc32c post: crc32c_generic\nalias fs-x xfs\n");
    write_text(s / "usr/lib/modprobe.d/ignored.txt", "options ignored x=1\n");  // not a .conf
    const auto names = modules_with_settings({(s / "etc/modprobe.d").string(), (s / "usr/lib/modprobe.d").string(), (s / "missing").string()},
                                             "ro quiet fuse.max_user_bgreq=4 modprobe.blacklist=floppy,snd-pcsp module_blacklist=evbug root=/dev/vda");
    for (const char* n : {"nf_conntrack", "pcspkr", "dummy", "libcrc32c", "crc32c", "crc32c_generic", "fs_x", "xfs", "fuse", "floppy", "snd_pcsp", "evbug"})
        EXPECT_TRUE(names.count(n)) << n;
    for (const char* n : {"ignored", "ro", "quiet", "root", "a", "hashsize"}) EXPECT_FALSE(names.count(n)) << n;
}

TEST(EarlyBoot, LoadsOnlyTheRunningKernelsModulesAndLeavesWhatItMustNotOrCannotLoad) {
    Scratch s;
    const std::string k = "/usr/lib/modules/6.1.0-test/kernel/";
    write_text(s / (k.substr(1) + "not-a-module.ko"), "not ELF");  // fails to load: left to systemd
    write_text(s / (k.substr(1) + "skipped.ko"), "x");
    write_text(s / (k.substr(1) + "needy.ko"), "x");
    fs::create_symlink(s / (k.substr(1) + "not-a-module.ko"), s / (k.substr(1) + "link.ko"));
    write_text(s / "usr/lib/cairn/boot-modules",
               "/usr/lib/modules/5.10.0-other/kernel/other.ko\n"  // another kernel's: not counted
               + k + "printk.ko\n"                              // built in, always in /sys/module
               + k + "skipped.ko\n"                             // settings name it
               + k + "needy.ko cairn_test_not_loaded\n"         // what it needs is not there
               + k + "link.ko\n"                                // a symbolic link: not followed
               + k + "missing.ko\n" + k + "not-a-module.ko\n" + "relative.ko\n" + k + "../escape.ko\n\n");
    const EarlyModules r = load_boot_modules(s.path().string(), "6.1.0-test", {"skipped"});
    EXPECT_EQ(r.already, 1u);
    EXPECT_EQ(r.loaded, 0u);
    EXPECT_EQ(r.left, 5u);  // skipped, needy, link, missing, not-a-module
    const EarlyModules none = load_boot_modules((s / "nothing").string(), "6.1.0-test", {});
    EXPECT_EQ(none.loaded + none.already + none.left, 0u);
}

TEST(EarlyBoot, ParsesTheMountListAndDropsMalformedLines) {
    const auto mounts = parse_boot_mounts(
        "tmp.mount\ttmpfs\ttmpfs\t/tmp\tmode=1777,size=50%\t!symlink:/tmp\n"
        "dev-hugepages.mount\thugetlbfs\thugetlbfs\t/dev/hugepages\t-\t/sys/kernel/mm/hugepages /x !/y\n"
        "-\tbpf\tbpf\t/sys/fs/bpf\tmode=700\t\n"
        "short\ttmpfs\n"
        "rel.mount\ttmpfs\ttmpfs\trelative\t-\t\n"
        "\n");
    ASSERT_EQ(mounts.size(), 3u);
    EXPECT_EQ(mounts[0].unit, "tmp.mount");
    EXPECT_EQ(mounts[0].options, "mode=1777,size=50%");
    EXPECT_EQ(mounts[0].conditions, std::vector<std::string>{"!symlink:/tmp"});
    EXPECT_EQ(mounts[1].options, "");
    EXPECT_EQ(mounts[1].conditions, (std::vector<std::string>{"/sys/kernel/mm/hugepages", "/x", "!/y"}));
    EXPECT_EQ(mounts[2].unit, "-");
    EXPECT_TRUE(mounts[2].conditions.empty());
}

TEST(EarlyBoot, MountOptionsBecomeFlagsAndDataAsMountReadsThem) {
    const MountArguments a = mount_arguments("mode=1777,strictatime,nosuid,nodev,size=50%,nr_inodes=1m,defaults,nofail,x-systemd.automount,ro,rw");
    EXPECT_EQ(a.flags, static_cast<unsigned long>(MS_STRICTATIME | MS_NOSUID | MS_NODEV));  // rw after ro clears it
    EXPECT_EQ(a.data, "mode=1777,size=50%,nr_inodes=1m");
    EXPECT_EQ(mount_arguments("").flags, 0u);
    EXPECT_EQ(mount_arguments("").data, "");
}

TEST(EarlyBoot, ConditionsAreCheckedUnderTheRoot) {
    Scratch s;
    fs::create_directories(s / "present");
    fs::create_symlink("present", s / "link");
    const std::string root = s.path().string();
    EXPECT_TRUE(conditions_hold({"u", "tmpfs", "tmpfs", "/x", "", {"/present", "!/absent", "!symlink:/present", "!symlink:/absent"}}, root));
    EXPECT_FALSE(conditions_hold({"u", "tmpfs", "tmpfs", "/x", "", {"/absent"}}, root));
    EXPECT_FALSE(conditions_hold({"u", "tmpfs", "tmpfs", "/x", "", {"!/present"}}, root));
    EXPECT_FALSE(conditions_hold({"u", "tmpfs", "tmpfs", "/x", "", {"!symlink:/link"}}, root));
    EXPECT_TRUE(conditions_hold({"u", "proc", "proc", "/x", "", {"/proc/self"}}, root));  // the initrd's own /proc
}

// Mounts for real: root only (CI runs the suite as root).
TEST(EarlyBoot, MountsTheListedFilesystemsUnlessTheAdministratorOrAConditionSaysOtherwise) {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting needs root";
    const std::string tmp_line = "tmp.mount\ttmpfs\ttmpfs\t/tmp\tmode=1777,nosuid,nodev,size=1m\t!symlink:/tmp\n";
    auto make_root = [&](const fs::path& root, const std::string& list) {
        fs::create_directories(root / "tmp");
        fs::create_directories(root / "var/x");
        write_text(root / "usr/lib/cairn/boot-mounts", list);
    };
    Scratch s;
    make_root(s / "plain", tmp_line + "var-x.mount\ttmpfs\ttmpfs\t/var/x\t-\t\n");  // /var/x: on the data partition, never
    EXPECT_EQ(mount_boot_filesystems((s / "plain").string()), 1u);
    struct statvfs tmp {};
    ASSERT_EQ(::statvfs((s / "plain/tmp").c_str(), &tmp), 0);
    EXPECT_TRUE(tmp.f_flag & ST_NOSUID);
    EXPECT_TRUE(tmp.f_flag & ST_NODEV);
    EXPECT_EQ(tmp.f_blocks * tmp.f_frsize, 1024u * 1024u);
    EXPECT_EQ(mount_boot_filesystems((s / "plain").string()), 0u);  // already a mount point: not mounted twice
    EXPECT_EQ(::umount2((s / "plain/tmp").c_str(), MNT_DETACH), 0);

    make_root(s / "overridden", tmp_line);
    write_text(s / "overridden/etc/systemd/system/tmp.mount", "[Mount]\n");
    make_root(s / "dropin", tmp_line);
    fs::create_directories(s / "dropin/etc/systemd/system/tmp.mount.d");
    make_root(s / "unmet", "tmp.mount\ttmpfs\ttmpfs\t/tmp\t-\t/absent\n");
    make_root(s / "link", tmp_line);
    fs::remove(s / "link/tmp");
    fs::create_symlink("var/x", s / "link/tmp");
    for (const char* root : {"overridden", "dropin", "unmet", "link", "nothing"}) EXPECT_EQ(mount_boot_filesystems((s / root).string()), 0u) << root;
}

// What cairn-init reads from the data partition (the /etc overlay's upper layer) cannot stall it.
TEST(EarlyBoot, AFifoOrADeviceInModprobeDIsNotRead) {
    Scratch s;
    fs::create_directories(s / "modprobe.d");
    ASSERT_EQ(::mkfifo((s / "modprobe.d/fifo.conf").c_str(), 0644), 0);
    fs::create_symlink("/dev/zero", s / "modprobe.d/zero.conf");
    write_text(s / "modprobe.d/real.conf", "options loop max_loop=8\n");
    EXPECT_EQ(modules_with_settings({(s / "modprobe.d").string()}, ""), std::set<std::string>{"loop"});
}
