// Cairn's systemd units and the /var split of a package-installed root.
#include "imager/systemd.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

const char* recipe_text = R"(name = "sd"
version = "1"

[disk]
size = "auto"
partitions = [
  { role = "root", size = "64MiB" },
  { role = "root-verity" },
]

[kernel]
enabled = false

[update]
trust_anchor = "ca.pem"

[firewall]

[provisioning]

[ssh]
authorized_keys = { root = ["key.pub"] }
)";

// A tree with what Debian's systemd packages put where Cairn looks.
void add_fake_systemd(Tree& t) {
    for (const char* d : {"/usr", "/usr/lib", "/usr/lib/systemd", "/usr/lib/systemd/system"}) t.add_directory(d, Meta{0, 0, 0755}, "t");
    t.add_file("/usr/lib/systemd/systemd", "", Meta{0, 0, 0755}, "t");
    for (const char* unit : {"systemd-networkd.service", "systemd-networkd.socket", "systemd-boot-check-no-failures.service", "ssh.service",
                             "apt-daily.timer", "e2scrub_reap.service", "systemd-repart.service", "sys-kernel-debug.mount",
                             "systemd-remount-fs.service", "systemd-journal-flush.service", "getty@.service"})
        t.add_file(std::string("/usr/lib/systemd/system/") + unit, "[Unit]\n", Meta{0, 0, 0644}, "t");
    t.add_directory("/usr/lib/systemd/system-generators", Meta{0, 0, 0755}, "t");
    for (const char* g : {"systemd-fstab-generator", "systemd-gpt-auto-generator", "systemd-getty-generator", "systemd-run-generator",
                          "systemd-debug-generator", "systemd-sysv-generator"})
        t.add_file(std::string("/usr/lib/systemd/system-generators/") + g, "", Meta{0, 0, 0755}, "t");
    for (const char* d : {"/usr/lib/udev", "/usr/lib/udev/rules.d"}) t.add_directory(d, Meta{0, 0, 0755}, "t");
    t.add_file("/usr/lib/udev/rules.d/85-hwclock.rules", "", Meta{0, 0, 0644}, "t");
    // Accounts as Debian's base makes them: none with a password.
    t.add_directory("/etc", Meta{0, 0, 0755}, "t");
    t.add_file("/etc/shadow", "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n", Meta{0, 0, 0640}, "t");
    // SysV scripts as packages ship them beside their units (hwclock.sh's unit is a mask).
    t.add_directory("/etc/init.d", Meta{0, 0, 0755}, "t");
    t.add_file("/etc/init.d/ssh", "#!/bin/sh\n", Meta{0, 0, 0755}, "t");
    t.add_file("/etc/init.d/hwclock.sh", "#!/bin/sh\n", Meta{0, 0, 0755}, "t");
    t.add_file("/etc/init.d/README", "", Meta{0, 0, 0644}, "t");
    t.add_file("/etc/init.d/old.dpkg-old", "#!/bin/sh\n", Meta{0, 0, 0755}, "t");
    t.add_symlink("/usr/lib/systemd/system/hwclock.service", "/dev/null", Meta{0, 0, 0777}, "t");
    t.add_file("/usr/lib/systemd/system/systemd-update-utmp.service",
               "[Unit]\nDescription=Record System Boot/Shutdown in UTMP\nDefaultDependencies=no\nRequiresMountsFor=/var/log/wtmp\n"
               "Before=sysinit.target shutdown.target\n\n[Service]\nExecStop=/lib/systemd/systemd-update-utmp shutdown\n",
               Meta{0, 0, 0644}, "t");
    // sysusers as Debian 12 runs it.
    t.add_file("/usr/lib/systemd/system/systemd-sysusers.service",
               "[Unit]\nDescription=Create System Users\nConditionNeedsUpdate=|/etc\nConditionCredential=|sysusers.extra\n\n"
               "[Service]\nType=oneshot\nExecStart=systemd-sysusers\n",
               Meta{0, 0, 0644}, "t");
    // timesyncd as Debian 12 orders it.
    t.add_file("/usr/lib/systemd/system/systemd-timesyncd.service",
               "[Unit]\nDescription=Network Time Synchronization\nDefaultDependencies=no\nAfter=systemd-sysusers.service\n"
               "Before=time-set.target sysinit.target shutdown.target\nWants=time-set.target\n\n[Service]\nUser=systemd-timesync\n",
               Meta{0, 0, 0644}, "t");
}

Recipe load(const Scratch& dir) {
    test::write_text(dir / "ca.pem", "");
    test::write_text(dir / "key.pub", "");
    test::write_text(dir / "r.toml", recipe_text);
    Recipe r = load_recipe(dir / "r.toml");
    r.attestation.enabled = true;  // [attestation] needs [boot]'s keys, which these tests do not build with
    return r;
}

}  // namespace

TEST(Systemd, TellsASystemdRootFromOthers) {
    Scratch dir;
    Tree t(dir / "root");
    EXPECT_FALSE(runs_systemd(t));
    add_fake_systemd(t);
    EXPECT_TRUE(runs_systemd(t));
}

TEST(Systemd, UnitsAreEnabledAndOrderedAsTheBootNeeds) {
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    add_systemd_units(t, load(dir));
    const fs::path units = dir / "root/usr/lib/systemd/system";
    for (const char* unit : {"cairn-firewall.service", "cairn-updated.service", "cairn-provisiond.service", "cairn-ssh-keygen.service",
                             "cairn-ready.service", "cairn-boot-complete.service", "cairn-sshd-vsock.socket", "cairn-sshd-vsock@.service",
                             "cairn-attestd.service", "cairn-attestd.path"})
        EXPECT_TRUE(fs::is_regular_file(units / unit)) << unit;
    // Enabled: links as `systemctl enable` makes them.
    const std::pair<const char*, const char*> links[] = {
        {"sysinit.target.wants/cairn-firewall.service", "../cairn-firewall.service"},
        {"boot-complete.target.requires/cairn-firewall.service", "../cairn-firewall.service"},
        {"boot-complete.target.requires/systemd-boot-check-no-failures.service", "../systemd-boot-check-no-failures.service"},
        {"multi-user.target.wants/cairn-boot-complete.service", "../cairn-boot-complete.service"},
        {"multi-user.target.wants/cairn-ready.service", "../cairn-ready.service"},
        {"multi-user.target.wants/cairn-updated.service", "../cairn-updated.service"},
        {"multi-user.target.wants/cairn-attestd.service", "../cairn-attestd.service"},
        {"paths.target.wants/cairn-attestd.path", "../cairn-attestd.path"},
        {"multi-user.target.wants/systemd-networkd.service", "../systemd-networkd.service"},
        {"ssh.service.requires/cairn-ssh-keygen.service", "../cairn-ssh-keygen.service"},
        {"sysinit.target.wants/systemd-timesyncd.service", "../systemd-timesyncd.service"},
    };
    for (const auto& [link, target] : links) {
        EXPECT_TRUE(fs::is_symlink(units / link)) << link;
        std::error_code ec;
        EXPECT_EQ(fs::read_symlink(units / link, ec), target) << link;
        ASSERT_TRUE(t.meta(std::string("/usr/lib/systemd/system/") + link)) << link;  // in the metadata table too
    }
    // No network without the firewall; the firewall before any network.
    const std::string dropin = read_file(units / "systemd-networkd.service.d/cairn-firewall.conf");
    EXPECT_NE(dropin.find("Requires=cairn-firewall.service"), std::string::npos);
    EXPECT_NE(dropin.find("After=cairn-firewall.service"), std::string::npos);
    const std::string firewall = read_file(units / "cairn-firewall.service");
    EXPECT_NE(firewall.find("Before=network-pre.target"), std::string::npos);
    EXPECT_NE(firewall.find("DefaultDependencies=no"), std::string::npos);
    EXPECT_NE(read_file(dir / "root/usr/lib/systemd/journald.conf.d/cairn.conf").find("Storage=persistent"), std::string::npos);
    // timesyncd keeps its unit but no longer holds up sysinit.target (an override of the whole
    // unit in /etc: the package's own file stays as shipped, for `dpkg --verify`).
    const std::string timesyncd = read_file(dir / "root/etc/systemd/system/systemd-timesyncd.service");
    EXPECT_NE(timesyncd.find("\nBefore=shutdown.target\n"), std::string::npos) << timesyncd;
    EXPECT_EQ(timesyncd.find("Before=time-set.target"), std::string::npos) << timesyncd;
    EXPECT_NE(timesyncd.find("User=systemd-timesync"), std::string::npos) << timesyncd;
    EXPECT_NE(read_file(dir / "root/usr/lib/systemd/system/systemd-timesyncd.service").find("Before=time-set.target sysinit.target"), std::string::npos);
    // update-utmp too, still recording the shutdown.
    const std::string utmp = read_file(dir / "root/etc/systemd/system/systemd-update-utmp.service");
    EXPECT_NE(utmp.find("\nBefore=shutdown.target\n"), std::string::npos) << utmp;
    EXPECT_EQ(utmp.find("\nBefore=sysinit.target"), std::string::npos) << utmp;
    EXPECT_NE(utmp.find("ExecStop=/lib/systemd/systemd-update-utmp shutdown"), std::string::npos) << utmp;
    // Generators with nothing to do are disabled; those that have work are not.
    std::error_code gec;
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system-generators/systemd-gpt-auto-generator", gec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system-generators/systemd-fstab-generator", gec), "/dev/null");  // no fstab
    // No account has a password: no login prompt on a console (the serial one comes from the generator).
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system-generators/systemd-getty-generator", gec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/getty@.service", gec), "/dev/null");
    // Each SysV script has a native unit: sysv-generator would make none.
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system-generators/systemd-sysv-generator", gec), "/dev/null");
    // journald writes to /var/log/journal from its start: no flush at boot, the release of /var at shutdown kept.
    const std::string flush = read_file(dir / "root/etc/systemd/system/systemd-journal-flush.service.d/cairn.conf");
    EXPECT_NE(flush.find("[Service]\nExecStart=\n"), std::string::npos) << flush;
    EXPECT_EQ(flush.find("\nExecStop="), std::string::npos) << flush;  // the vendor's ExecStop= is not reset
    // hwclock-set does nothing under systemd: its udev rule is masked.
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/udev/rules.d/85-hwclock.rules", gec), "/dev/null");
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system-generators/systemd-hibernate-resume-generator"));  // not installed
    ASSERT_TRUE(t.meta("/etc/systemd/system-generators/systemd-gpt-auto-generator"));
    // Masked where installed; not where not.
    std::error_code ec;
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/apt-daily.timer", ec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/e2scrub_reap.service", ec), "/dev/null");
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system/dpkg-db-backup.timer"));
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/systemd-repart.service", ec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/sys-kernel-debug.mount", ec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system-generators/systemd-run-generator", ec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system-generators/systemd-debug-generator", ec), "/dev/null");
    // No /etc/fstab: nothing for systemd-remount-fs to remount.
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/systemd-remount-fs.service", ec), "/dev/null");
    // sysusers runs when the /etc overlay has its own account files (or a credential asks), not on every boot.
    const std::string sysusers = read_file(dir / "root/etc/systemd/system/systemd-sysusers.service.d/cairn.conf");
    EXPECT_NE(sysusers.find("\nConditionNeedsUpdate=\n"), std::string::npos) << sysusers;
    EXPECT_NE(sysusers.find("\nConditionPathExists=|/var/.cairn/overlays/etc/upper/passwd\n"), std::string::npos) << sysusers;
    EXPECT_NE(sysusers.find("\nConditionPathExists=|/var/.cairn/overlays/etc/upper/gshadow\n"), std::string::npos) << sysusers;
    EXPECT_NE(sysusers.find("\nConditionCredential=|sysusers.extra\n"), std::string::npos) << sysusers;
    EXPECT_EQ(sysusers.find("ConditionNeedsUpdate=|"), std::string::npos) << sysusers;
    // sshd starts without a separate configuration check first.
    EXPECT_NE(read_file(dir / "root/etc/systemd/system/ssh.service.d/cairn.conf").find("\nExecStartPre=\n"), std::string::npos);
    EXPECT_NE(read_file(dir / "root/usr/lib/systemd/network/80-cairn-dhcp.network").find("DHCP=yes"), std::string::npos);
    // The first boot's host keys are made early, beside sysinit.target's units, not after basic.target.
    const std::string keygen = read_file(units / "cairn-ssh-keygen.service");
    EXPECT_NE(keygen.find("\nDefaultDependencies=no\nAfter=local-fs.target\nBefore=ssh.service shutdown.target\n"), std::string::npos) << keygen;
    // The attestation agent runs once its configuration is there, at boot or when it appears.
    EXPECT_NE(read_file(units / "cairn-attestd.service").find("ConditionPathExists=/etc/cairn/attestation.toml"), std::string::npos);
    EXPECT_NE(read_file(units / "cairn-attestd.path").find("PathExists=/etc/cairn/attestation.toml"), std::string::npos);
}

// What systemd would ask of the image's kernel at every boot is answered when the image is built:
// its static device nodes, and no modprobe@ instance for a module the kernel does not have.
TEST(Systemd, TheKernelsStaticNodesAndMissingModulesAreKnownWhenTheImageIsBuilt) {
    const std::string release = "6.1.0-test-amd64", modules = "/usr/lib/modules/" + release;
    auto tree_with_kernel = [&](Tree& t) {
        add_fake_systemd(t);
        for (const char* unit : {"kmod-static-nodes.service", "modprobe@.service"})
            t.add_file(std::string("/usr/lib/systemd/system/") + unit, "[Unit]\n", Meta{0, 0, 0644}, "t");
        t.add_file("/usr/lib/systemd/system/systemd-logind.service", "[Unit]\nWants=user.slice modprobe@drm.service\nAfter=modprobe@drm.service\n",
                   Meta{0, 0, 0644}, "t");
        t.add_file("/usr/lib/systemd/system/sys-fs-fuse-connections.mount", "[Unit]\nRequires=modprobe@fuse.service\n", Meta{0, 0, 0644}, "t");
        // Required by a unit: never masked, even where the kernel lacks the module (masked, it would keep that unit from starting).
        t.add_file("/usr/lib/systemd/system/sys-kernel-config.mount", "[Unit]\nRequires=modprobe@configfs.service\nAfter=modprobe@configfs.service\n",
                   Meta{0, 0, 0644}, "t");
        t.add_symlink("/lib", "usr/lib", Meta{0, 0, 0777}, "t");  // merged /usr, as Debian 12 has it
        for (const std::string& d : {std::string("/usr/lib/modules"), modules}) t.add_directory(d, Meta{0, 0, 0755}, "t");
        t.add_file(modules + "/modules.dep", "kernel/fs/fuse/fuse.ko.xz:\n", Meta{0, 0, 0644}, "t");
        t.add_file(modules + "/modules.devname", "fuse fuse c10:229\ntun net/tun c10:200\n", Meta{0, 0, 0644}, "t");
    };
    Scratch dir;
    Tree t(dir / "root");
    tree_with_kernel(t);
    add_systemd_units(t, load(dir), release);
    const std::string nodes = read_file(dir / "root/usr/lib/tmpfiles.d/static-nodes.conf");
    EXPECT_NE(nodes.find("\nc! /dev/fuse 0600 - - - 10:229\nd /dev/net 0755 - - -\nc! /dev/net/tun 0600 - - - 10:200\n"), std::string::npos) << nodes;
    std::error_code ec;
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/kmod-static-nodes.service", ec), "/dev/null");
    EXPECT_EQ(fs::read_symlink(dir / "root/etc/systemd/system/modprobe@drm.service", ec), "/dev/null");  // no drm in this kernel
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system/modprobe@fuse.service"));
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system/modprobe@configfs.service"));  // required, though not in this kernel
    ASSERT_TRUE(t.meta("/etc/systemd/system/modprobe@drm.service"));
    ASSERT_TRUE(t.meta("/usr/lib/tmpfiles.d/static-nodes.conf"));

    // Without the kernel's release (an image without a kernel of its own), systemd asks at boot.
    Scratch dir2;
    Tree t2(dir2 / "root");
    tree_with_kernel(t2);
    add_systemd_units(t2, load(dir2));
    EXPECT_FALSE(fs::exists(dir2 / "root/usr/lib/tmpfiles.d/static-nodes.conf"));
    EXPECT_FALSE(fs::is_symlink(dir2 / "root/etc/systemd/system/kmod-static-nodes.service"));
    EXPECT_FALSE(fs::is_symlink(dir2 / "root/etc/systemd/system/modprobe@drm.service"));
}

// An image with content of its own in /var/lib/cairn (seeded into /var by tmpfiles, only while
// the folder is missing or empty) makes its host keys there after that copy, not before it.
TEST(Systemd, HostKeysWaitForTheSeedOfTheirFolderWhenTheImageShipsOne) {
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    for (const char* d : {"/var", "/var/lib", "/var/lib/cairn"}) t.add_directory(d, Meta{0, 0, 0755}, "t");
    t.add_file("/var/lib/cairn/site.conf", "x\n", Meta{0, 0, 0644}, "t");
    add_systemd_units(t, load(dir));
    const std::string keygen = read_file(dir / "root/usr/lib/systemd/system/cairn-ssh-keygen.service");
    EXPECT_NE(keygen.find("\nDefaultDependencies=no\nAfter=local-fs.target systemd-tmpfiles-setup.service\n"), std::string::npos) << keygen;
}

// A --debug image logs root in on the serial console; a normal one does not.
TEST(Systemd, ADebugImageHasARootShellOnTheSerialConsole) {
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    Recipe recipe = load(dir);
    add_systemd_units(t, recipe);
    const fs::path dropin = dir / "root/etc/systemd/system/serial-getty@ttyS0.service.d/cairn-debug.conf";
    EXPECT_FALSE(fs::exists(dropin));
    Scratch debug_dir;
    Tree debug(debug_dir / "root");
    add_fake_systemd(debug);
    recipe.boot.debug = true;
    add_systemd_units(debug, recipe);
    const std::string text = read_file(debug_dir / "root/etc/systemd/system/serial-getty@ttyS0.service.d/cairn-debug.conf");
    EXPECT_NE(text.find("\nExecStart=\nExecStart=-/sbin/agetty --autologin root "), std::string::npos) << text;
    // debugfs and systemd's debug generator stay for the developer; what nothing asks for goes.
    EXPECT_FALSE(fs::is_symlink(debug_dir / "root/etc/systemd/system/sys-kernel-debug.mount"));
    EXPECT_FALSE(fs::is_symlink(debug_dir / "root/etc/systemd/system-generators/systemd-debug-generator"));
    EXPECT_TRUE(fs::is_symlink(debug_dir / "root/etc/systemd/system-generators/systemd-run-generator"));
    // The serial console's getty comes from systemd's getty generator.
    EXPECT_FALSE(fs::is_symlink(debug_dir / "root/etc/systemd/system-generators/systemd-getty-generator"));
    EXPECT_FALSE(fs::is_symlink(debug_dir / "root/etc/systemd/system/getty@.service"));
}

// An account with a password keeps the consoles' login prompts; an empty password field too (a
// login without one).
TEST(Systemd, APasswordAccountKeepsTheLoginPrompts) {
    for (const char* account : {"admin:$y$j9T$salt$hash:19000:0:99999:7:::\n", "guest::19000:0:99999:7:::\n"}) {
        Scratch dir;
        Tree t(dir / "root");
        add_fake_systemd(t);
        t.add_file("/etc/shadow", std::string("root:*:19000:0:99999:7:::\n") + account, Meta{0, 0, 0640}, "t");
        add_systemd_units(t, load(dir));
        EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system-generators/systemd-getty-generator")) << account;
        EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system/getty@.service")) << account;
    }
}

// A SysV script with no native unit keeps systemd's sysv-generator, which makes it one.
TEST(Systemd, ASysvScriptWithoutAUnitKeepsItsGenerator) {
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    t.add_file("/etc/init.d/legacy-agent.sh", "#!/bin/sh\n", Meta{0, 0, 0755}, "t");
    add_systemd_units(t, load(dir));
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system-generators/systemd-sysv-generator"));
    // A script that is not executable is not one systemd runs.
    Scratch dir2;
    Tree t2(dir2 / "root");
    add_fake_systemd(t2);
    t2.add_file("/etc/init.d/notes", "#!/bin/sh\n", Meta{0, 0, 0644}, "t");
    add_systemd_units(t2, load(dir2));
    EXPECT_TRUE(fs::is_symlink(dir2 / "root/etc/systemd/system-generators/systemd-sysv-generator"));
}

// A generator the recipe's kernel command line gives work to is kept.
TEST(Systemd, AGeneratorTheCommandLineAsksForIsKept) {
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    Recipe recipe = load(dir);
    recipe.boot.cmdline = "console=ttyS0 systemd.run=/usr/bin/true";
    add_systemd_units(t, recipe);
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system-generators/systemd-run-generator"));
    EXPECT_TRUE(fs::is_symlink(dir / "root/etc/systemd/system-generators/systemd-debug-generator"));
    EXPECT_TRUE(fs::is_symlink(dir / "root/etc/systemd/system/sys-kernel-debug.mount"));
}

// A unit whose work the image brings is kept: systemd-remount-fs and the fstab generator where
// there is an /etc/fstab.
TEST(Systemd, RemountFsIsKeptWithAnFstab) {
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    t.add_file("/etc/fstab", "tmpfs /srv tmpfs defaults 0 0\n", Meta{0, 0, 0644}, "t");
    add_systemd_units(t, load(dir));
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system/systemd-remount-fs.service"));
    EXPECT_FALSE(fs::is_symlink(dir / "root/etc/systemd/system-generators/systemd-fstab-generator"));
}

// systemd's own checker reads every unit Cairn writes (syntax, directives, executables).
TEST(Systemd, SystemdAnalyzeAcceptsTheUnits) {
    if (!find_program("systemd-analyze")) GTEST_SKIP() << "systemd-analyze is not installed";
    Scratch dir;
    Tree t(dir / "root");
    add_fake_systemd(t);
    add_systemd_units(t, load(dir));
    const fs::path units = dir / "root/usr/lib/systemd/system";
    std::vector<std::string> argv = {"systemd-analyze", "verify", "--man=no", "--recursive-errors=no"};
    for (const char* unit : {"cairn-firewall.service", "cairn-updated.service", "cairn-provisiond.service", "cairn-ssh-keygen.service",
                             "cairn-ready.service", "cairn-boot-complete.service", "cairn-sshd-vsock.socket", "cairn-attestd.service",
                             "cairn-attestd.path"})
        argv.push_back((units / unit).string());
    RunResult r = run(argv);
    // Executables are looked up on the build host, where Cairn's programs are not installed:
    // those complaints aside, nothing may be reported.
    std::string problems;
    std::istringstream lines(r.out + r.err);
    for (std::string line; std::getline(lines, line);) {
        if (line.find("is not executable") != std::string::npos || line.find("No such file or directory") != std::string::npos ||
            line.find("Command ") != std::string::npos || line.find("Unit ") != std::string::npos)
            continue;
        problems += line + "\n";
    }
    EXPECT_EQ(problems, "") << r.out << r.err;
}

TEST(Systemd, VarMovesToTheFactoryAndTheDpkgDatabaseToUsr) {
    Scratch dir;
    const fs::path s = dir / "stage";
    test::write_text(s / "var/lib/dpkg/status", "Package: x\n");
    test::write_text(s / "var/lib/systemd/deb-systemd-helper-enabled/x", "");
    test::write_text(s / "var/cache/debconf/config.dat", "");
    test::write_text(s / "var/log/wtmp", "");
    fs::create_directories(s / "run");
    fs::create_directories(s / "var/backups");  // empty, owned by base-files: dpkg --verify wants it there
    fs::create_symlink("/run", s / "var/run");  // as base-files ships it: it must not be followed to the build host's /run
    fs::create_symlink("../../usr/share/doc/systemd/README.logs", s / "var/log/README");  // as systemd ships it
    EXPECT_EQ(move_var_to_factory(s), 6u);  // backups, lib/systemd, cache/debconf, log/wtmp, log/README, run
    // Moved to the factory, a relative link would point elsewhere: it is made absolute.
    EXPECT_EQ(fs::read_symlink(s / "usr/share/factory/var/log/README"), "/usr/share/doc/systemd/README.logs");
    EXPECT_EQ(read_file(s / "usr/lib/cairn/dpkg/status"), "Package: x\n");
    EXPECT_TRUE(fs::exists(s / "usr/share/factory/var/lib/systemd/deb-systemd-helper-enabled/x"));
    EXPECT_TRUE(fs::is_symlink(s / "usr/share/factory/var/run"));
    EXPECT_TRUE(fs::is_directory(s / "var/lib/dpkg"));  // the mount point
    EXPECT_TRUE(fs::is_empty(s / "var/lib/dpkg"));
    const std::string conf = read_file(s / "usr/lib/tmpfiles.d/cairn-var.conf");
    EXPECT_NE(conf.find("C /var/lib/systemd - - - - /usr/share/factory/var/lib/systemd\n"), std::string::npos) << conf;
    EXPECT_NE(conf.find("C /var/backups - - - - /usr/share/factory/var/backups\n"), std::string::npos) << conf;
    EXPECT_NE(conf.find("C /var/cache/debconf - - - - /usr/share/factory/var/cache/debconf\n"), std::string::npos) << conf;
    EXPECT_NE(conf.find("C /var/log/wtmp - - - - /usr/share/factory/var/log/wtmp\n"), std::string::npos) << conf;
    // Links are made where missing, never copied (tmpfiles would follow them).
    EXPECT_NE(conf.find("L /var/run - - - - /run\n"), std::string::npos) << conf;
    EXPECT_NE(conf.find("L /var/log/README - - - - /usr/share/doc/systemd/README.logs\n"), std::string::npos) << conf;
    EXPECT_EQ(conf.find("/var/lib/dpkg"), conf.find("/var/lib/dpkg"));  // named in the comment only
    EXPECT_EQ(conf.find("C /var/lib/dpkg"), std::string::npos);
}

// What a package's own tmpfiles.d line makes is left to it (tmpfiles keeps one line per path and
// warns about the others at every boot); a folder it makes has its content seeded entry by entry.
TEST(Systemd, VarEntriesAPackagesTmpfilesLineMakesAreLeftToIt) {
    Scratch dir;
    const fs::path s = dir / "stage";
    test::write_text(s / "usr/lib/tmpfiles.d/systemd.conf",
                     "# comment\nd /var/lib/systemd 0755 root root -\nd /var/lib/private 0700 root root -\nz /var/log/journal 2755 - - -\n"
                     "d /var/lib/systemd/coredump 0755 root root 3d\nz /var/lib/%m - - -\n");
    test::write_text(s / "usr/lib/tmpfiles.d/var.conf", "f /var/log/wtmp 0664 root utmp -\nf /var/log/faillog 0644 - - -\nL /var/lock - - - - ../run/lock\n");
    test::write_text(s / "usr/lib/tmpfiles.d/cairn-var.conf", "C /var/lib/ucf - - - - /elsewhere\n");  // a stale copy of ours: ignored
    test::write_text(s / "var/lib/systemd/deb-systemd-helper-enabled/x", "");
    test::write_text(s / "var/lib/systemd/catalog/database", "db");
    fs::create_directories(s / "var/lib/systemd/coredump");
    fs::create_directories(s / "var/lib/private");
    test::write_text(s / "var/lib/ucf/hashfile", "");
    test::write_text(s / "var/log/wtmp", "");
    test::write_text(s / "var/log/faillog", "not empty");
    test::write_text(s / "var/log/journal/.keep", "");
    fs::create_symlink("../run/lock", s / "var/lock");
    move_var_to_factory(s);
    const std::string conf = read_file(s / "usr/lib/tmpfiles.d/cairn-var.conf");
    // Left to the package's line: the folders themselves, an empty file, a link.
    for (const char* path : {"/var/lib/systemd ", "/var/lib/private ", "/var/lib/systemd/coredump ", "/var/log/wtmp ", "/var/lock "})
        EXPECT_EQ(conf.find(path), std::string::npos) << path << "\n" << conf;
    // Seeded: what is in a folder the package makes, a file with content, what no line makes.
    for (const char* line : {"C /var/lib/systemd/deb-systemd-helper-enabled - - - - /usr/share/factory/var/lib/systemd/deb-systemd-helper-enabled\n",
                             "C /var/lib/systemd/catalog - - - - /usr/share/factory/var/lib/systemd/catalog\n",
                             "C /var/log/faillog - - - - /usr/share/factory/var/log/faillog\n",
                             "C /var/lib/ucf - - - - /usr/share/factory/var/lib/ucf\n", "C /var/log/journal - - - - /usr/share/factory/var/log/journal\n"})
        EXPECT_NE(conf.find(line), std::string::npos) << line << conf;
    EXPECT_TRUE(fs::exists(s / "usr/share/factory/var/lib/systemd/catalog/database"));
}
