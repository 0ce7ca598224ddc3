#include "imager/early_boot.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/file.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

namespace {

const Meta file_meta{0, 0, 0644}, exec_meta{0, 0, 0755}, link_meta{0, 0, 0777};
const std::string units = "/usr/lib/systemd/system/";
const std::string k = "/usr/lib/modules/6.1.0-test/";

void add_unit(Tree& t, const std::string& name, const std::string& text) { t.add_file(units + name, text, file_meta, "t"); }

// A small systemd tree: default.target is graphical.target, which pulls in multi-user.target and,
// through it, the rest; a kernel with its modules.dep and modules.softdep.
void add_tree(Tree& t) {
    t.add_file("/usr/lib/systemd/systemd", "\x7f" "ELF", exec_meta, "t");
    t.add_symlink(units + "default.target", "graphical.target", link_meta, "t");
    add_unit(t, "graphical.target", "[Unit]\nRequires=multi-user.target\nWants=display-manager.service\n");
    add_unit(t, "multi-user.target", "[Unit]\nRequires=basic.target\n");
    add_unit(t, "basic.target", "[Unit]\nRequires=sysinit.target\nWants=sockets.target\n");
    add_unit(t, "sysinit.target", "[Unit]\nWants=local-fs.target\n");
    add_unit(t, "local-fs.target", "[Unit]\n");
    add_unit(t, "sockets.target", "[Unit]\n");
    add_unit(t, "modprobe@.service", "[Unit]\nDefaultDependencies=no\n[Service]\nExecStart=-/sbin/modprobe -abq %i\n");
    // Mounts sysinit.target links: one needs a module first (Requires=), one has %% in its options.
    add_unit(t, "sys-kernel-config.mount",
             "[Unit]\nConditionPathExists=/sys/kernel/config\nConditionCapability=CAP_SYS_RAWIO\nRequires=modprobe@configfs.service\n"
             "[Mount]\nWhat=configfs\nWhere=/sys/kernel/config\nType=configfs\nOptions=nosuid,nodev,noexec\n");
    add_unit(t, "tmp.mount", "[Unit]\nConditionPathIsSymbolicLink=!/tmp\n[Mount]\nWhat=tmpfs\nWhere=/tmp\nType=tmpfs\nOptions=mode=1777,size=50%%\n");
    // Not for cairn-init: a condition it cannot check, a filesystem on a device, a specifier.
    add_unit(t, "sys-kernel-debug.mount", "[Unit]\nConditionKernelCommandLine=debugfs\n[Mount]\nWhat=debugfs\nWhere=/sys/kernel/debug\nType=debugfs\n");
    add_unit(t, "srv.mount", "[Mount]\nWhat=/dev/vdb1\nWhere=/srv\nType=ext4\n");
    add_unit(t, "run-x.mount", "[Mount]\nWhat=tmpfs\nWhere=/run/x\nType=tmpfs\nOptions=size=%i\n");
    add_unit(t, "var-cache.mount", "[Mount]\nWhat=tmpfs\nWhere=/var/cache\nType=tmpfs\n");  // through the data partition
    for (const char* m : {"sys-kernel-config.mount", "tmp.mount", "sys-kernel-debug.mount", "srv.mount", "run-x.mount", "var-cache.mount"})
        t.add_symlink(units + "sysinit.target.wants/" + m, std::string("../") + m, link_meta, "t");
    // A service the boot starts wants a module; one whose module the admin masked; one the boot never reaches.
    add_unit(t, "pstore.service", "[Unit]\nWants=modprobe@efi_pstore.service\n");
    t.add_symlink(units + "sysinit.target.wants/pstore.service", "../pstore.service", link_meta, "t");
    add_unit(t, "logind.service", "[Unit]\nWants=user.slice modprobe@drm.service\n");
    t.add_symlink(units + "multi-user.target.wants/logind.service", "../logind.service", link_meta, "t");
    t.add_symlink("/etc/systemd/system/modprobe@drm.service", "/dev/null", link_meta, "t");
    add_unit(t, "repart.service", "[Unit]\nWants=modprobe@loop.service\n");
    // A drop-in adds a dependency.
    t.add_file("/etc/systemd/system/logind.service.d/extra.conf", "[Unit]\nWants=extra.service\n", file_meta, "t");
    add_unit(t, "extra.service", "[Service]\nExecStart=/bin/true\n");
    // The kernel: nf_tables needs nfnetlink and libcrc32c, which has a soft dependency.
    t.add_file(k + "modules.dep",
               "kernel/fs/configfs/configfs.ko:\nkernel/fs/autofs/autofs4.ko:\nkernel/drivers/efi-pstore.ko:\nkernel/lib/libcrc32c.ko:\n"
               "kernel/net/nfnetlink.ko:\nkernel/net/nf_tables.ko: kernel/lib/libcrc32c.ko kernel/net/nfnetlink.ko\nkernel/drivers/loop.ko:\n",
               file_meta, "t");
    t.add_file(k + "modules.softdep", "# Soft dependencies\nsoftdep libcrc32c pre: crc32c\n", file_meta, "t");
    t.add_file(k + "modules.builtin", "kernel/net/ipv4/ip_tables.ko\n", file_meta, "t");
    t.add_file("/usr/lib/modules-load.d/firewall.conf", "# the firewall's\nnf-tables\n", file_meta, "t");
}

size_t at(const std::vector<std::string>& list, const std::string& item) { return size_t(std::find(list.begin(), list.end(), item) - list.begin()); }

}  // namespace

TEST(EarlyBoot, TheBootsUnitsAreWhatTheDefaultTargetPullsIn) {
    Scratch dir;
    Tree t(dir / "root");
    add_tree(t);
    const auto u = boot_units(t);
    EXPECT_EQ(u.front(), "graphical.target");
    for (const char* n : {"multi-user.target", "sysinit.target", "sys-kernel-config.mount", "modprobe@configfs.service", "modprobe@efi_pstore.service",
                          "logind.service", "extra.service", "tmp.mount"})
        EXPECT_LT(at(u, n), u.size()) << n;
    // Masked, missing, or reached by nothing from the default target.
    for (const char* n : {"modprobe@drm.service", "display-manager.service", "user.slice", "repart.service", "modprobe@loop.service"})
        EXPECT_EQ(at(u, n), u.size()) << n;
}

TEST(EarlyBoot, ListsTheBootsModulesWithWhatEachNeedsAndLeavesSoftDependenciesToModprobe) {
    Scratch dir;
    Tree t(dir / "root");
    add_tree(t);
    const auto lines = boot_module_lines(t);
    const std::vector<std::string> expected = {k + "kernel/fs/autofs/autofs4.ko", k + "kernel/drivers/efi-pstore.ko",
                                               k + "kernel/fs/configfs/configfs.ko", k + "kernel/net/nfnetlink.ko",
                                               k + "kernel/net/nf_tables.ko nfnetlink libcrc32c"};
    EXPECT_EQ(lines, expected);  // ip_tables is built in; libcrc32c has a soft dependency; loop is not the boot's
}

TEST(EarlyBoot, ListsTheBootsMountsOfFilesystemsWithoutADevice) {
    Scratch dir;
    Tree t(dir / "root");
    add_tree(t);
    const auto mounts = boot_mounts(t);
    ASSERT_EQ(mounts.size(), 3u);
    EXPECT_EQ(mounts[0].unit, "sys-kernel-config.mount");
    EXPECT_EQ(mounts[0].options, "nosuid,nodev,noexec");
    EXPECT_EQ(mounts[0].conditions, std::vector<std::string>{"/sys/kernel/config"});
    EXPECT_EQ(mounts[1].unit, "tmp.mount");
    EXPECT_EQ(mounts[1].options, "mode=1777,size=50%");
    EXPECT_EQ(mounts[1].conditions, std::vector<std::string>{"!symlink:/tmp"});
    EXPECT_EQ(mounts[2].unit, "-");  // PID 1's own bpffs
    EXPECT_EQ(mounts[2].where, "/sys/fs/bpf");
}

TEST(EarlyBoot, ListsAreWrittenWhereCairnInitReadsThemAndOnlyForSystemd) {
    Scratch dir;
    Tree plain(dir / "plain");
    plain.add_file("/sbin/init", "#!/bin/sh\n", exec_meta, "t");
    const EarlyBootLists none = add_early_boot(plain);
    EXPECT_EQ(none.modules + none.mounts, 0u);
    EXPECT_FALSE(plain.meta(initrd::boot_modules_list));

    Tree t(dir / "root");
    add_tree(t);
    const EarlyBootLists lists = add_early_boot(t);
    EXPECT_EQ(lists.modules, 5u);
    EXPECT_EQ(lists.mounts, 3u);
    EXPECT_EQ(read_file(t.host(initrd::boot_mounts_list)),
              "sys-kernel-config.mount\tconfigfs\tconfigfs\t/sys/kernel/config\tnosuid,nodev,noexec\t/sys/kernel/config\n"
              "tmp.mount\ttmpfs\ttmpfs\t/tmp\tmode=1777,size=50%\t!symlink:/tmp\n"
              "-\tbpf\tbpf\t/sys/fs/bpf\tnosuid,nodev,noexec,mode=700\t\n");
    // What cairn-init reads back is what was listed.
    const auto parsed = initrd::parse_boot_mounts(read_file(t.host(initrd::boot_mounts_list)));
    ASSERT_EQ(parsed.size(), 3u);
    EXPECT_EQ(parsed[1].options, "mode=1777,size=50%");
    EXPECT_EQ(t.meta(initrd::boot_modules_list)->mode, S_IFREG | 0644u);
    const std::string dropin = read_file(t.host("/etc/systemd/system/modprobe@.service.d/cairn-early-boot.conf"));
    EXPECT_NE(dropin.find("ConditionPathExists=!/sys/module/%i\n"), std::string::npos);
}
