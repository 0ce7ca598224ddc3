#include "imager/read_ahead.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/file.hpp"
#include "initrd/read_ahead.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

namespace {

const Meta file_meta{0, 0, 0644}, exec_meta{0, 0, 0755}, link_meta{0, 0, 0777};

void unit(Tree& t, const std::string& path, const std::string& exec) { t.add_file(path, "[Service]\n" + exec + "\n", file_meta, "t"); }

// A small systemd tree: PID 1 and one service are real programs (copies of the host's, with
// their libraries), the other programs plain files.
void add_tree(Tree& t) {
    add_host_executable(t, "/usr/bin/true", "/usr/lib/systemd/systemd", exec_meta, "t");
    add_host_executable(t, "/usr/bin/env", "/usr/bin/env", exec_meta, "t");
    for (const char* p : {"/usr/bin/sock-prog", "/usr/sbin/agetty", "/usr/bin/masked-prog", "/usr/bin/apt-prog", "/usr/bin/admin-prog", "/usr/sbin/bare-prog",
                          "/usr/bin/keys", "/usr/bin/dash"})
        t.add_file(p, "\x7f" "ELF", exec_meta, "t");
    t.add_file("/usr/bin/pre", "#!/usr/bin/dash -e\necho\n", exec_meta, "t");  // a script: its interpreter is read too
    // A command without a path, found where systemd looks; a service another one requires.
    unit(t, "/usr/lib/systemd/system/bare.service", "ExecStart=bare-prog --x");
    t.add_symlink("/usr/lib/systemd/system/sysinit.target.wants/bare.service", "../bare.service", link_meta, "t");
    unit(t, "/usr/lib/systemd/system/keys.service", "ExecStart=/usr/bin/keys");
    t.add_symlink("/usr/lib/systemd/system/app.service.requires/keys.service", "../keys.service", link_meta, "t");
    const std::string units = "/usr/lib/systemd/system/";
    unit(t, units + "app.service", "ExecStart=-/usr/bin/env app --flag");
    t.add_symlink(units + "multi-user.target.wants/app.service", "../app.service", link_meta, "t");
    unit(t, units + "sock.service", "ExecStart=/usr/bin/sock-prog");
    unit(t, units + "sock.socket", "ListenStream=/run/sock");
    t.add_symlink(units + "sockets.target.wants/sock.socket", "../sock.socket", link_meta, "t");
    unit(t, units + "getty@.service", "ExecStart=/usr/sbin/agetty %I");
    t.add_symlink(units + "getty.target.wants/getty@tty1.service", "../getty@.service", link_meta, "t");
    // A drop-in's ExecStartPre, with its prefix.
    t.add_file("/etc/systemd/system/app.service.d/pre.conf", "[Service]\nExecStartPre=+/usr/bin/pre\n", file_meta, "t");
    // The admin's own unit: its program is read ahead, the unit file (under /etc) is not.
    unit(t, "/etc/systemd/system/admin.service", "ExecStart=/usr/bin/admin-prog");
    t.add_symlink("/etc/systemd/system/multi-user.target.wants/admin.service", "../admin.service", link_meta, "t");
    // Masked, started by a timer, or wanted by a target the boot never reaches: not read ahead.
    unit(t, units + "masked.service", "ExecStart=/usr/bin/masked-prog");
    t.add_symlink(units + "multi-user.target.wants/masked.service", "../masked.service", link_meta, "t");
    t.add_symlink("/etc/systemd/system/masked.service", "/dev/null", link_meta, "t");
    unit(t, units + "apt-daily.service", "ExecStart=/usr/bin/apt-prog");
    t.add_file(units + "apt-daily.timer", "[Timer]\nOnCalendar=daily\n", file_meta, "t");
    t.add_symlink(units + "timers.target.wants/apt-daily.timer", "../apt-daily.timer", link_meta, "t");
    t.add_symlink(units + "rescue.target.wants/apt-daily.service", "../apt-daily.service", link_meta, "t");
    // Configuration and the modules' indexes.
    t.add_file("/usr/lib/udev/rules.d/50-default.rules", "\n", file_meta, "t");
    t.add_file("/usr/lib/modules/6.1.0-test/modules.dep.bin", "x", file_meta, "t");
    // The modules systemd-modules-load loads, with what they need.
    const std::string k = "/usr/lib/modules/6.1.0-test/";
    t.add_file(k + "modules.dep", "kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko\nkernel/net/netfilter/nfnetlink.ko:\nkernel/fs/fuse/fuse.ko:\n",
               file_meta, "t");
    for (const char* ko : {"kernel/net/netfilter/nf_tables.ko", "kernel/net/netfilter/nfnetlink.ko", "kernel/fs/fuse/fuse.ko"}) t.add_file(k + ko, "ko", file_meta, "t");
    t.add_file("/etc/modules-load.d/firewall.conf", "# the firewall's\nnf-tables\n", file_meta, "t");
    t.add_file("/usr/lib/udev/hwdb.bin", "x", file_meta, "t");
}

const std::string k_nfnetlink = "/usr/lib/modules/6.1.0-test/kernel/net/netfilter/nfnetlink.ko";
const std::string k_nf_tables = "/usr/lib/modules/6.1.0-test/kernel/net/netfilter/nf_tables.ko";

size_t at(const std::vector<std::string>& list, const std::string& path) {
    return size_t(std::find(list.begin(), list.end(), path) - list.begin());
}

}  // namespace

TEST(ReadAhead, ListsWhatTheBootReadsSystemdFirstThenConfigurationThenEachStartedProgramWithItsLibraries) {
    Scratch dir;
    Tree t(dir / "root");
    add_tree(t);
    const std::vector<std::string> list = boot_read_ahead(t);
    auto has = [&](const std::string& p) { return at(list, p) < list.size(); };

    for (const char* p : {"/usr/lib/udev/rules.d/50-default.rules", "/usr/lib/modules/6.1.0-test/modules.dep.bin", "/usr/lib/systemd/system/app.service",
                          "/usr/lib/systemd/systemd", "/usr/bin/env", "/usr/bin/sock-prog", "/usr/sbin/agetty", "/usr/bin/pre", "/usr/bin/dash", "/usr/bin/admin-prog",
                          "/usr/sbin/bare-prog", "/usr/bin/keys"})
        EXPECT_TRUE(has(p)) << p;
    // The programs' libraries and their loader, as the tree has them.
    const auto libc = std::find_if(list.begin(), list.end(), [](const std::string& p) { return p.ends_with("/libc.so.6"); });
    EXPECT_NE(libc, list.end());
    EXPECT_TRUE(std::any_of(list.begin(), list.end(), [](const std::string& p) { return p.find("ld-linux-x86-64.so.2") != std::string::npos; }));
    for (const char* p : {"/usr/bin/masked-prog", "/usr/bin/apt-prog", "/usr/lib/udev/hwdb.bin", "/usr/lib/modules/6.1.0-test/modules.dep",
                          "/usr/lib/modules/6.1.0-test/kernel/fs/fuse/fuse.ko", "/etc/modules-load.d/firewall.conf",
                          "/etc/systemd/system/admin.service", "/etc/systemd/system/app.service.d/pre.conf"})
        EXPECT_FALSE(has(p)) << p;
    EXPECT_LT(at(list, k_nfnetlink), at(list, k_nf_tables));  // what a module needs first, as modprobe loads them
    EXPECT_LT(at(list, k_nf_tables), list.size());
    // In the order of the boot: PID 1 with its libraries, configuration, then sysinit.target's,
    // sockets.target's and multi-user.target's programs.
    EXPECT_EQ(at(list, "/usr/lib/systemd/systemd"), 0u);
    EXPECT_LT(size_t(libc - list.begin()), at(list, "/usr/lib/udev/rules.d/50-default.rules"));
    EXPECT_LT(at(list, "/usr/lib/udev/rules.d/50-default.rules"), at(list, "/usr/sbin/bare-prog"));
    EXPECT_LT(at(list, "/usr/sbin/bare-prog"), at(list, "/usr/bin/sock-prog"));
    EXPECT_LT(at(list, "/usr/bin/sock-prog"), at(list, "/usr/bin/env"));
    EXPECT_LT(at(list, "/usr/bin/env"), at(list, "/usr/sbin/agetty"));
    EXPECT_EQ(std::set<std::string>(list.begin(), list.end()).size(), list.size());
}

TEST(ReadAhead, IsWrittenWhereCairnInitLooksAndOnlyForSystemd) {
    Scratch dir;
    Tree plain(dir / "plain");
    plain.add_file("/sbin/init", "#!/bin/sh\n", exec_meta, "t");
    EXPECT_TRUE(boot_read_ahead(plain).empty());

    Tree t(dir / "root");
    add_tree(t);
    const size_t n = add_boot_read_ahead(t);
    const std::string text = read_file(t.host(initrd::read_ahead_list));
    EXPECT_EQ(size_t(std::count(text.begin(), text.end(), '\n')), n);
    EXPECT_NE(text.find("/usr/bin/env\n"), std::string::npos);
    EXPECT_EQ(t.meta(initrd::read_ahead_list)->mode, S_IFREG | 0644u);
}
