#include "imager/systemd.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <set>
#include <sstream>
#include <vector>

#include "common/error.hpp"
#include "common/file.hpp"
#include "imager/kernel_modules.hpp"
#include "imager/provisioning.hpp"
#include "imager/ssh.hpp"
#include "imager/update.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

namespace {

const Meta file_meta{0, 0, 0644}, exec_meta{0, 0, 0755}, dir_meta{0, 0, 0755}, link_meta{0, 0, 0777};

constexpr const char* firewall_unit = R"([Unit]
Description=Cairn firewall: inbound SSH only, brute-force sources blocked
Documentation=file:/etc/cairn/firewall.toml
# Before any interface is up: systemd-networkd requires this unit (drop-in
# systemd-networkd.service.d/cairn-firewall.conf), so without a ruleset the network stays down.
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target boot-complete.target
After=systemd-modules-load.service local-fs.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/cairn-firewall apply --boot
# 3: the policy was refused and the built-in lockdown (inbound SSH only) is loaded instead.
SuccessExitStatus=3
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=sysinit.target
RequiredBy=boot-complete.target
)";

constexpr const char* networkd_needs_firewall = R"(# Cairn: no network without the firewall's ruleset.
[Unit]
Requires=cairn-firewall.service
After=cairn-firewall.service
)";

constexpr const char* firewall_modules = "# Cairn's firewall (nftables, connection tracking, rate limits).\nnf_tables\nnft_ct\nnft_limit\n";

constexpr const char* updated_unit = R"([Unit]
Description=Cairn updater: signed A/B updates, trial boots, rollback
Requires=dbus.socket
After=dbus.socket local-fs.target

[Service]
Type=dbus
BusName=org.cairn.Updater1
ExecStart=/usr/sbin/cairn-updated
Restart=on-failure
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
)";

constexpr const char* provisiond_unit = R"([Unit]
Description=Cairn provisioning agent (DPS)
Wants=network.target
After=network.target cairn-firewall.service

[Service]
ExecStart=/usr/lib/cairn/provisiond-run
# /run/cairn, where the agent's pid file goes (kept: the boot's other units share it).
RuntimeDirectory=cairn
RuntimeDirectoryPreserve=yes
Restart=on-failure
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
)";

// The attestation agent runs once its configuration is there: at boot, or when it is written later
// (cairn-attestd.path starts it then). A config it refuses: tried again a minute later.
constexpr const char* attestd_unit = R"([Unit]
Description=Cairn boot attestation agent
ConditionPathExists=/etc/cairn/attestation.toml
Wants=network-online.target
After=network-online.target cairn-firewall.service

[Service]
ExecStart=/usr/sbin/cairn-attestd --config /etc/cairn/attestation.toml
Restart=on-failure
RestartSec=60
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
)";

constexpr const char* attestd_path_unit = R"([Unit]
Description=Cairn: start the attestation agent when /etc/cairn/attestation.toml appears

[Path]
PathExists=/etc/cairn/attestation.toml
Unit=cairn-attestd.service

[Install]
WantedBy=paths.target
)";

// Early, beside the rest of the boot: all it needs is /var, which cairn-init mounts before systemd
// starts. On the first boot the keys are then made while sysinit.target's units run, not after
// basic.target with sshd (and the boot) waiting for them.
constexpr const char* ssh_keygen_unit = R"([Unit]
Description=Cairn: SSH host keys on the data partition (made on the first boot)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
# /run/sshd, sshd's privilege separation folder (ssh.service makes it too; kept between them).
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
ExecStart=/usr/lib/cairn/ssh-keygen
StandardOutput=journal+console

[Install]
RequiredBy=ssh.service
)";

constexpr const char* sshd_vsock_socket = R"([Unit]
Description=Cairn: sshd on AF_VSOCK port 22
ConditionPathExists=/dev/vsock

[Socket]
ListenStream=vsock:4294967295:22
Accept=yes

[Install]
WantedBy=sockets.target
)";

constexpr const char* sshd_vsock_service = R"([Unit]
Description=Cairn: sshd for one vsock connection
Requires=cairn-ssh-keygen.service
After=cairn-ssh-keygen.service

[Service]
ExecStart=-/usr/sbin/sshd -i
StandardInput=socket
StandardError=journal
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes
)";

constexpr const char* ready_unit = R"([Unit]
Description=Cairn: report ready on the console
DefaultDependencies=no
Requires=sysinit.target
After=sysinit.target multi-user.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
RuntimeDirectory=cairn
RuntimeDirectoryPreserve=yes
ExecStart=/usr/lib/cairn/ready
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
)";

constexpr const char* boot_complete_unit = R"([Unit]
Description=Cairn: the boot is complete (boot-complete.target reached)
Documentation=man:systemd.special(7)
# What cairn-updated waits for before it commits a trial boot. Units that must work for a boot to
# count order themselves Before=boot-complete.target and are required by it.
DefaultDependencies=no
Requires=boot-complete.target
After=local-fs.target boot-complete.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
RuntimeDirectory=cairn
RuntimeDirectoryPreserve=yes
ExecStart=/usr/bin/touch /run/cairn/boot-complete

[Install]
WantedBy=multi-user.target
)";

// Debian leaves /tmp on the root, which is read-only here: a tmpfs, as the minimal init mounts it.
constexpr const char* tmp_mount = R"([Unit]
Description=Temporary Directory /tmp (a tmpfs: the root is read-only)
Documentation=https://systemd.io/TEMPORARY_DIRECTORIES
ConditionPathIsSymbolicLink=!/tmp
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target
After=swap.target

[Mount]
What=tmpfs
Where=/tmp
Type=tmpfs
Options=mode=1777,strictatime,nosuid,nodev,size=50%%,nr_inodes=1m
)";

constexpr const char* journald_conf = "# Cairn: a persistent journal (on the log partition; cairn-init binds it on /var/log/journal).\n"
                                      "[Journal]\nStorage=persistent\n";

constexpr const char* dhcp_network = R"(# Cairn: DHCP on every Ethernet interface (an /etc/systemd/network/*.network of the same name
# replaces this one).
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=yes
)";

// Debian's ssh.service checks the configuration with `sshd -t` before it starts sshd, which checks
// it again: one sshd run too many on the boot's critical path.
constexpr const char* ssh_no_precheck = "# Cairn: sshd checks its configuration as it starts; no separate `sshd -t` run first.\n"
                                        "[Service]\nExecStartPre=\n";

// cairn-init mounts /var/log/journal before systemd starts and sets journald's flag that the
// journal was flushed to /var (initrd/main.cpp), so journald writes there from its start: the
// flush at boot has nothing to move. Its stop command stays: journald lets go of /var at shutdown.
constexpr const char* journal_flush_dropin =
    "# Cairn: journald writes to /var/log/journal from its start (cairn-init mounts it and marks the\n"
    "# journal flushed); nothing to flush at boot. ExecStop= still lets /var go at shutdown.\n"
    "[Service]\nExecStart=\n";

// A --debug image: root is logged in on the serial console (systemd's getty there, as the
// minimal image's init gives a shell).
constexpr const char* debug_console_autologin = "# Cairn --debug image: a root shell on the serial console. Never ship one.\n"
                                                "[Service]\nExecStart=\n"
                                                "ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM\n";

// Timers and services of Debian packages that have nothing to do on a Cairn image.
struct Unneeded {
    const char* unit;
    const char* why;
    // Kept when the recipe's kernel command line has a word starting with one of these (what the
    // unit acts on), or in a --debug image.
    std::initializer_list<const char*> unless_cmdline = {};
    bool kept_in_debug = false;
    const char* kept_with_file = nullptr;  // kept when the image has this file (what the unit acts on)
    bool (*kept_when)(const Tree&) = nullptr;  // kept when this finds work for it in the image
};

// Whether an account of the image can log in with a password (its /etc/shadow field is a hash or
// empty, not locked with `!` or `*`): only then has a console login prompt anyone to let in.
bool password_login(const Tree& tree) {
    const std::string shadow = "/etc/shadow";
    auto m = tree.meta(tree.resolve(shadow, shadow));
    if (!m || !S_ISREG(m->mode)) return false;
    std::istringstream lines(read_file(tree.host(tree.resolve(shadow, shadow))));
    for (std::string line; std::getline(lines, line);) {
        const size_t a = line.find(':');
        if (a == std::string::npos) continue;
        const std::string hash = line.substr(a + 1, line.find(':', a + 1) - a - 1);
        if (hash.empty() || (hash[0] != '!' && hash[0] != '*')) return true;
    }
    return false;
}

// Whether a SysV script in the image's /etc/init.d has no native unit of its name (systemd's
// sysv-generator makes a unit only for those: `foo` or `foo.sh` becomes foo.service unless a
// foo.service exists, a mask included). Hidden and backup files are skipped, as it skips them.
bool sysv_script_without_unit(const Tree& tree) {
    const std::string what = "SysV scripts", dir = tree.resolve("/etc/init.d", what) + "/";
    if (!tree.meta(dir.substr(0, dir.size() - 1))) return false;
    for (const auto& [path, meta] : tree.entries_under(dir)) {
        std::string name = path.substr(dir.size());
        if (name.find('/') != std::string::npos || !S_ISREG(meta.mode) || !(meta.mode & 0111)) continue;
        if (name[0] == '.' || name.ends_with('~')) continue;
        static constexpr std::string_view backups[] = {".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-bak", ".dpkg-tmp", ".ucf-old",
                                                       ".ucf-new",  ".ucf-dist", ".rpmnew",    ".rpmsave",  ".rpmorig",  ".swp"};
        if (std::any_of(std::begin(backups), std::end(backups), [&](std::string_view b) { return name.ends_with(b); })) continue;
        if (name.ends_with(".sh")) name.resize(name.size() - 3);
        const char* unit_dirs[] = {"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", systemd_paths::units};
        if (std::none_of(std::begin(unit_dirs), std::end(unit_dirs),
                         [&](const char* d) { return tree.meta(tree.resolve(std::string(d) + "/" + name + ".service", what)).has_value(); }))
            return true;
    }
    return false;
}

const Unneeded unneeded_units[] = {
    {"apt-daily.timer", "the root is read-only: apt cannot install into it (updates come as signed A/B bundles)"},
    {"apt-daily-upgrade.timer", "the root is read-only: apt cannot upgrade it (updates come as signed A/B bundles)"},
    {"dpkg-db-backup.timer", "the dpkg database is the slot's own, read-only in the root: nothing changes to back up"},
    {"e2scrub_all.timer", "e2scrub checks ext4 on LVM snapshots; a Cairn disk has no LVM"},
    {"e2scrub_reap.service", "e2scrub checks ext4 on LVM snapshots; a Cairn disk has no LVM"},
    {"systemd-repart.service", "the partitions are the signed layout's: nothing creates or grows one at boot (and the loop "
                               "and dm_mod module loads it asks for are spared)"},
    {"sys-kernel-debug.mount", "debugfs shows kernel internals; a device does not mount it (a --debug image does)", {}, true},
    {"sys-kernel-tracing.mount", "tracefs shows kernel internals; a device does not mount it (a --debug image does)", {}, true},
    {"systemd-remount-fs.service", "cairn-init mounts the root read-only from dm-verity and the image has no /etc/fstab: nothing to remount",
     {}, false, "/etc/fstab"},
    {"getty@.service", "no account of the image has a password, so a login prompt on a console has nobody to let in (logins are by "
                       "SSH key; a --debug image logs root in on the serial console)",
     {}, true, nullptr, password_login},
};

// Packages' units that Debian orders before sysinit.target though nothing in the early boot needs
// them done: here they start beside the rest, their hardening unchanged, so that every boot does
// not wait for them (each costs a second or two under emulation). An override of the whole unit
// in /etc (a drop-in cannot remove an ordering); the package's own file stays as shipped.
struct Unordered {
    const char* unit;
    std::initializer_list<const char*> targets;
    const char* why;
};
const Unordered unordered_units[] = {
    {"systemd-timesyncd.service", {"sysinit.target", "time-set.target"},
     "the clock of a VM or of a device with an RTC is already set when it starts"},
    {"systemd-update-utmp.service", {"sysinit.target"}, "it writes the boot's record to wtmp, which nothing in the early boot reads"},
};

// systemd's generators that have nothing to generate on a Cairn image, disabled as
// systemd.generator(7) says (a link to /dev/null of the same name in /etc/systemd/system-generators):
// each is a program systemd runs before it loads a unit, on every boot.
const Unneeded unneeded_generators[] = {
    {"systemd-gpt-auto-generator", "Cairn's partitions are mounted as its layout says, none by its partition type"},
    {"systemd-cryptsetup-generator", "cairn-init sets up every device-mapper device before systemd starts; no /etc/crypttab"},
    {"systemd-rc-local-generator", "the image's services are units; no /etc/rc.local"},
    {"systemd-run-generator", "the kernel command line is signed into the UKI and asks for no systemd.run=", {"systemd.run"}},
    {"systemd-debug-generator", "the kernel command line is signed into the UKI and asks for no systemd.mask=, systemd.wants= or debug shell",
     {"systemd.mask", "systemd.wants", "systemd.debug_shell", "systemd.debug-shell"}, true},
    {"systemd-hibernate-resume-generator", "a Cairn disk has no swap to resume from"},
    {"systemd-system-update-generator", "updates are signed A/B bundles, not offline updates applied at boot"},
    {"systemd-veritysetup-generator", "cairn-init sets up the verity root before systemd starts"},
    {"systemd-integritysetup-generator", "a Cairn disk has no dm-integrity volumes"},
    {"systemd-fstab-generator", "the image has no /etc/fstab: cairn-init mounts the root, /var and the log partition",
     {"systemd.volatile"}, false, "/etc/fstab"},
    {"systemd-getty-generator", "no account of the image has a password, so the login prompt it starts on the serial console has "
                                "nobody to let in (a --debug image logs root in there)",
     {}, true, nullptr, password_login},
    {"systemd-sysv-generator", "every SysV script in the image's /etc/init.d has a native unit, which systemd prefers: it would make "
                               "no unit",
     {}, false, nullptr, sysv_script_without_unit},
};

// Where cairn-init keeps the upper layer of the /etc overlay (initrd/main.cpp), as the running
// system sees it.
constexpr const char* etc_upper = "/var/.cairn/overlays/etc/upper";

// A drop-in for systemd-sysusers.service (its vendor text `unit`), or "" when the unit does not run
// on ConditionNeedsUpdate=. The drop-in's text says why; an empty Condition assignment resets all
// of the unit's conditions, so the vendor's others (credentials) are written again.
std::string sysusers_conditions(const std::string& unit) {
    std::string kept;
    bool needs_update = false;
    std::istringstream lines(unit);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("ConditionNeedsUpdate=", 0) == 0) needs_update = true;
        else if (line.rfind("Condition", 0) == 0) kept += line + "\n";
    }
    if (!needs_update) return "";
    std::string text =
        "# Cairn: the image's accounts are made when it is built, and Debian has no systemd-update-done to\n"
        "# mark /etc as up to date (ConditionNeedsUpdate=/etc held on every boot). sysusers runs when the\n"
        "# /etc overlay has its own copy of an account file, which would hide accounts a newer slot adds.\n"
        "[Unit]\nConditionNeedsUpdate=\n";
    for (const char* f : {"passwd", "group", "shadow", "gshadow"}) text += std::string("ConditionPathExists=|") + etc_upper + "/" + f + "\n";
    return text + kept;
}

// The vendor unit text with `targets` taken out of its Before= lines (a drop-in cannot remove an
// ordering, so the override is the whole unit). Empty when none of them is there.
std::string without_before(const std::string& unit, const std::vector<std::string>& targets) {
    std::string out;
    bool changed = false;
    std::istringstream lines(unit);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("Before=", 0) == 0) {
            std::istringstream words(line.substr(7));
            std::string kept;
            for (std::string w; words >> w;) {
                if (std::find(targets.begin(), targets.end(), w) != targets.end()) {
                    changed = true;
                    continue;
                }
                kept += (kept.empty() ? "" : " ") + w;
            }
            if (kept.empty()) continue;
            line = "Before=" + kept;
        }
        out += line + "\n";
    }
    return changed ? out : std::string();
}

void ensure_directory(Tree& tree, const std::string& path, const std::string& what) {
    std::string at;
    for (const auto& part : fs::path(path).relative_path()) {
        at += "/" + part.string();
        if (!tree.meta(tree.resolve(at, what))) tree.add_directory(at, dir_meta, what);
    }
}

void add_unit(Tree& tree, const std::string& name, const std::string& text, const std::string& what) {
    ensure_directory(tree, systemd_paths::units, what);
    tree.add_file(std::string(systemd_paths::units) + "/" + name, text, file_meta, what);
}

// `systemctl mask`: a link to /dev/null of the unit's name in /etc/systemd/system.
void mask(Tree& tree, const std::string& unit, const std::string& why, const std::string& what) {
    ensure_directory(tree, systemd_paths::admin_units, what);
    tree.add_symlink(std::string(systemd_paths::admin_units) + "/" + unit, "/dev/null", link_meta, what + ": masking " + unit + " (" + why + ")");
}

// `systemctl enable` for a unit: a symlink in the vendor unit folder, TARGET.wants or .requires.
void enable(Tree& tree, const std::string& unit, const std::string& target, const std::string& what, const char* kind = "wants") {
    const std::string dir = std::string(systemd_paths::units) + "/" + target + "." + kind;
    ensure_directory(tree, dir, what);
    tree.add_symlink(dir + "/" + unit, "../" + unit, link_meta, what);
}

bool has(const Tree& tree, const std::string& path, const std::string& what) {
    auto m = tree.meta(tree.resolve(path, what));
    return m.has_value();
}

// The modules `modprobe@NAME.service` instances of the image's units would load (systemd-logind
// wants modprobe@drm, systemd-pstore modprobe@efi_pstore): NAME of each one a unit's Wants= names.
// One that a unit Requires= (the fuse and configfs mounts) is left out: masked, it would keep that
// unit from starting instead of merely loading nothing.
std::set<std::string> wanted_modprobe_instances(const Tree& tree) {
    std::set<std::string> wanted, required;
    const std::string what = "modprobe@ units";
    for (const char* d : {systemd_paths::units, systemd_paths::admin_units}) {
        const std::string dir = tree.resolve(d, what) + "/";
        for (const auto& [path, meta] : tree.entries_under(dir)) {
            if (!S_ISREG(meta.mode) || path.find('/', dir.size()) != std::string::npos) continue;
            std::istringstream lines(read_file(tree.host(path)));
            for (std::string line; std::getline(lines, line);) {
                const size_t eq = line.find('=');
                if (eq == std::string::npos) continue;
                const std::string key = line.substr(0, eq);
                std::set<std::string>* into = key == "Wants" ? &wanted : (key == "Requires" || key == "BindsTo" || key == "Requisite") ? &required : nullptr;
                std::istringstream words(line.substr(eq + 1));
                for (std::string w; into && words >> w;)
                    if (w.rfind("modprobe@", 0) == 0 && w.ends_with(".service") && w.size() > 17) into->insert(w.substr(9, w.size() - 17));
            }
        }
    }
    for (const auto& r : required) wanted.erase(r);
    return wanted;
}

// What systemd would ask of the image's own kernel at every boot, answered when the image is built:
// kmod-static-nodes.service's list of static device nodes (a tmpfiles.d file of the same name, so
// that a run of the unit, unmasked, would replace it), and no modprobe@ instance for a module the
// kernel does not have. Nothing when the image has no kernel of its own.
void kernel_answers(Tree& tree, const std::string& release, const std::string& what) {
    if (release.empty()) return;
    const std::string modules_dir = tree.resolve("/lib/modules/" + release, what);
    if (!tree.meta(modules_dir + "/modules.dep")) return;
    auto mask_unless_own = [&](const std::string& unit, const std::string& why) {
        if (!tree.meta(tree.resolve(std::string(systemd_paths::admin_units) + "/" + unit, what))) mask(tree, unit, why, what);  // else the recipe's own
    };
    const std::string devname = modules_dir + "/modules.devname";
    if (has(tree, std::string(systemd_paths::units) + "/kmod-static-nodes.service", what) && tree.meta(devname)) {
        ensure_directory(tree, "/usr/lib/tmpfiles.d", what);
        tree.add_file("/usr/lib/tmpfiles.d/static-nodes.conf",
                      "# Cairn: the static device nodes of the image's kernel " + release + " (its modules.devname), as\n"
                      "# kmod-static-nodes.service would write them at every boot.\n" + static_nodes_tmpfiles(read_file(tree.host(devname))),
                      file_meta, what);
        mask_unless_own("kmod-static-nodes.service", "the image's kernel is known when it is built: its static nodes are in /usr/lib/tmpfiles.d/static-nodes.conf");
    }
    if (!has(tree, std::string(systemd_paths::units) + "/modprobe@.service", what)) return;
    const KernelModules kernel = read_kernel_modules(tree.host(modules_dir), what);
    for (const std::string& name : wanted_modprobe_instances(tree))
        if (!kernel.has(name)) mask_unless_own("modprobe@" + name + ".service", "the image's kernel " + release + " has no module " + name + ", built in or loadable");
}

}  // namespace

// The unit file systemd would load for `name` (its template's for an instance), the admin's
// folder first; nullopt when it is masked (a link to /dev/null) or missing.
std::optional<std::string> unit_file(const Tree& tree, const std::string& name) {
    std::vector<std::string> candidates = {name};
    if (size_t at = name.find('@'), dot = name.rfind('.'); at != std::string::npos && dot != std::string::npos && dot > at + 1)
        candidates.push_back(name.substr(0, at + 1) + name.substr(dot));  // foo@bar.service -> foo@.service
    for (const char* folder : {systemd_paths::admin_units, systemd_paths::units}) {
        for (const auto& candidate : candidates) {
            const std::string path = std::string(folder) + "/" + candidate;
            if (!tree.meta(path)) continue;
            std::string file = tree_regular_file(tree, path);  // empty for a mask: /dev/null is no file of the tree
            if (file.empty()) return std::nullopt;
            return file;
        }
    }
    return std::nullopt;
}

// The units linked in `target`'s .wants and .requires folders, the admin's first, by name.
std::vector<std::string> linked_units(const Tree& tree, const std::string& target) {
    std::vector<std::string> names;
    for (const char* folder : {systemd_paths::admin_units, systemd_paths::units})
        for (const char* kind : {".wants", ".requires"}) {
            const std::string dir = std::string(folder) + "/" + target + kind;
            for (const auto& [path, meta] : tree.entries_under(dir))
                if (path.find('/', dir.size() + 1) == std::string::npos) names.push_back(path.substr(dir.size() + 1));
        }
    return names;
}

// A unit's files: the unit file, then its drop-ins (NAME.d/*.conf in the vendor folder, then the
// admin's, so that the admin's come last and win; for an instance, the template's first).
std::vector<std::string> unit_files(const Tree& tree, const std::string& name, const std::string& file) {
    std::vector<std::string> files = {file};
    std::vector<std::string> names;
    if (size_t at = name.find('@'), dot = name.rfind('.'); at != std::string::npos && dot != std::string::npos && dot > at + 1)
        names.push_back(name.substr(0, at + 1) + name.substr(dot));
    names.push_back(name);
    for (const auto& n : names)
        for (const char* folder : {systemd_paths::units, systemd_paths::admin_units}) {
            const std::string dir = std::string(folder) + "/" + n + ".d";
            for (const auto& [path, meta] : tree.entries_under(dir))
                if (path.ends_with(".conf") && path.find('/', dir.size() + 1) == std::string::npos)
                    if (std::string f = tree_regular_file(tree, path); !f.empty()) files.push_back(f);
        }
    return files;
}

bool runs_systemd(const Tree& tree) {
    auto m = tree.meta(tree.resolve(systemd_paths::systemd, "systemd"));
    return m && S_ISREG(m->mode);
}

std::string ready_script() {
    return "#!/bin/sh\n"
           "# The `ready` line of a Cairn image on systemd (cairn-ready.service, after multi-user.target;\n"
           "# the unit makes /run/cairn). Shell builtins only: it is on every boot's critical path.\n"
           "slot= roothash=\n"
           "read -r cmdline < /proc/cmdline\n"
           "for word in $cmdline; do\n"
           "  case $word in\n"
           "    cairn.slot=*) slot=${word#*=} ;;\n"
           "    cairn.roothash=*) roothash=${word#*=} ;;\n"
           "  esac\n"
           "done\n"
           ". /etc/os-release\n"
           "version=$VERSION_ID\n"
           "# The release's version: the line `\"version\": \"...\"` of release.json.\n"
           "if [ -r /usr/lib/cairn/release.json ]; then\n"
           "  while IFS= read -r line; do\n"
           "    line=${line#\"${line%%[! ]*}\"}\n"
           "    case $line in\n"
           "      '\"version\":'*) line=${line#*:}; line=${line#*\\\"}; version=${line%%\\\"*}; break ;;\n"
           "    esac\n"
           "  done < /usr/lib/cairn/release.json\n"
           "fi\n"
           "# The root's line of /proc/mounts: device, mount point, type, options.\n"
           "while read -r dev dir type options rest; do\n"
           "  [ \"$dir\" = / ] && break\n"
           "done < /proc/mounts\n"
           ": > /run/cairn/ready\n"
           "echo \"cairn: ready slot=$slot version=$version root=$roothash rootdev=$dev rootfs=$type options=$options\"\n";
}

void add_systemd_units(Tree& tree, const Recipe& recipe, const std::string& kernel_release) {
    const std::string what = recipe.file.string() + ": systemd units";
    ensure_directory(tree, "/usr/lib/cairn", what);

    // The boot: ready on the console, and the trial-boot check on boot-complete.target.
    tree.add_file(systemd_paths::ready, ready_script(), exec_meta, what);
    add_unit(tree, "cairn-ready.service", ready_unit, what);
    enable(tree, "cairn-ready.service", "multi-user.target", what);
    add_unit(tree, "cairn-boot-complete.service", boot_complete_unit, what);
    enable(tree, "cairn-boot-complete.service", "multi-user.target", what);
    if (has(tree, std::string(systemd_paths::units) + "/systemd-boot-check-no-failures.service", what))
        enable(tree, "systemd-boot-check-no-failures.service", "boot-complete.target", what, "requires");

    // /tmp on a tmpfs (services with PrivateTmp= need it writable).
    add_unit(tree, "tmp.mount", tmp_mount, what);
    enable(tree, "tmp.mount", "local-fs.target", what);

    // The journal, persistent (on the log partition).
    ensure_directory(tree, "/usr/lib/systemd/journald.conf.d", what);
    tree.add_file("/usr/lib/systemd/journald.conf.d/cairn.conf", journald_conf, file_meta, what);
    if (has(tree, std::string(systemd_paths::units) + "/systemd-journal-flush.service", what)) {
        const std::string dropins = std::string(systemd_paths::admin_units) + "/systemd-journal-flush.service.d";
        ensure_directory(tree, dropins, what);
        tree.add_file(dropins + "/cairn.conf", journal_flush_dropin, file_meta, what);
    }

    // The network (DHCP) and the clock, when the packages are there.
    const bool networkd = has(tree, std::string(systemd_paths::units) + "/systemd-networkd.service", what);
    if (networkd) {
        ensure_directory(tree, "/usr/lib/systemd/network", what);
        tree.add_file("/usr/lib/systemd/network/80-cairn-dhcp.network", dhcp_network, file_meta, what);
        enable(tree, "systemd-networkd.service", "multi-user.target", what);
        enable(tree, "systemd-networkd.socket", "sockets.target", what);
    }
    if (has(tree, std::string(systemd_paths::units) + "/systemd-timesyncd.service", what))
        enable(tree, "systemd-timesyncd.service", "sysinit.target", what);
    for (const auto& u : unordered_units) {
        const std::string vendor = std::string(systemd_paths::units) + "/" + u.unit;
        if (!has(tree, vendor, what)) continue;
        const std::string text = without_before(read_file(tree.host(tree.resolve(vendor, what))), {u.targets.begin(), u.targets.end()});
        if (text.empty()) continue;
        ensure_directory(tree, systemd_paths::admin_units, what);
        std::string orders;
        for (const char* t : u.targets) orders += std::string(orders.empty() ? "" : " or ") + t;
        tree.add_file(std::string(systemd_paths::admin_units) + "/" + u.unit,
                      "# Cairn: Debian's unit, not ordered before " + orders + ": " + u.why + ".\n" + text, file_meta, what);
    }
    // Whether the image keeps something it does not need otherwise: the command line asks for it,
    // or the image has what it acts on.
    auto kept = [&](const Unneeded& u) {
        if (u.kept_in_debug && recipe.boot.debug) return true;
        if (u.kept_with_file && has(tree, u.kept_with_file, what)) return true;
        if (u.kept_when && u.kept_when(tree)) return true;
        std::istringstream words(recipe.boot.cmdline);
        for (std::string w; words >> w;)
            for (const char* prefix : u.unless_cmdline)
                if (w.rfind(prefix, 0) == 0) return true;
        return false;
    };
    for (const auto& g : unneeded_generators) {
        if (kept(g) || !has(tree, std::string(systemd_paths::generators) + "/" + g.unit, what)) continue;
        ensure_directory(tree, systemd_paths::admin_generators, what);
        tree.add_symlink(std::string(systemd_paths::admin_generators) + "/" + g.unit, "/dev/null", link_meta,
                         what + ": disabling " + g.unit + " (" + g.why + ")");
    }
    // Masked (a link to /dev/null, as `systemctl mask` makes it) where the package is installed.
    for (const auto& u : unneeded_units) {
        if (kept(u) || !has(tree, std::string(systemd_paths::units) + "/" + u.unit, what)) continue;
        mask(tree, u.unit, u.why, what);
    }

    kernel_answers(tree, kernel_release, what);

    // util-linux's udev rule for the RTC starts hwclock-set, which exits at once under systemd (that
    // sets the clock itself): masked as udev(7) says, a link to /dev/null of its name in /etc.
    const std::string hwclock_rule = "/usr/lib/udev/rules.d/85-hwclock.rules";
    if (has(tree, hwclock_rule, what)) {
        ensure_directory(tree, "/etc/udev/rules.d", what);
        tree.add_symlink("/etc/udev/rules.d/85-hwclock.rules", "/dev/null", link_meta,
                         what + ": masking " + hwclock_rule + " (hwclock-set does nothing under systemd)");
    }

    const std::string sysusers = std::string(systemd_paths::units) + "/systemd-sysusers.service";
    if (has(tree, sysusers, what)) {
        const std::string dropin = sysusers_conditions(read_file(tree.host(tree.resolve(sysusers, what))));
        if (!dropin.empty()) {
            const std::string dropins = std::string(systemd_paths::admin_units) + "/systemd-sysusers.service.d";
            ensure_directory(tree, dropins, what);
            tree.add_file(dropins + "/cairn.conf", dropin, file_meta, what);
        }
    }

    if (recipe.boot.debug) {
        const std::string dropins = std::string(systemd_paths::admin_units) + "/serial-getty@ttyS0.service.d";
        ensure_directory(tree, dropins, what);
        tree.add_file(dropins + "/cairn-debug.conf", debug_console_autologin, file_meta, what);
    }
    if (recipe.firewall.enabled) {
        add_unit(tree, "cairn-firewall.service", firewall_unit, what);
        enable(tree, "cairn-firewall.service", "sysinit.target", what);
        enable(tree, "cairn-firewall.service", "boot-complete.target", what, "requires");
        ensure_directory(tree, "/usr/lib/modules-load.d", what);
        tree.add_file("/usr/lib/modules-load.d/cairn-firewall.conf", firewall_modules, file_meta, what);
        if (networkd) {
            const std::string dropins = std::string(systemd_paths::units) + "/systemd-networkd.service.d";
            ensure_directory(tree, dropins, what);
            tree.add_file(dropins + "/cairn-firewall.conf", networkd_needs_firewall, file_meta, what);
        }
    }
    if (recipe.update.enabled) {
        add_unit(tree, "cairn-updated.service", updated_unit, what);
        enable(tree, "cairn-updated.service", "multi-user.target", what);
    }
    if (recipe.provisioning.enabled) {
        add_unit(tree, "cairn-provisiond.service", provisiond_unit, what);
        enable(tree, "cairn-provisiond.service", "multi-user.target", what);
    }
    if (recipe.attestation.enabled && recipe.attestation.agent) {
        add_unit(tree, "cairn-attestd.service", attestd_unit, what);
        enable(tree, "cairn-attestd.service", "multi-user.target", what);
        add_unit(tree, "cairn-attestd.path", attestd_path_unit, what);
        enable(tree, "cairn-attestd.path", "paths.target", what);
    }
    if (recipe.ssh.enabled) {
        tree.add_file(systemd_paths::ssh_keygen, ssh_keygen_script(), exec_meta, what);
        if (has(tree, std::string(systemd_paths::units) + "/ssh.service", what)) {
            const std::string dropins = std::string(systemd_paths::admin_units) + "/ssh.service.d";
            ensure_directory(tree, dropins, what);
            tree.add_file(dropins + "/cairn.conf", ssh_no_precheck, file_meta, what);
        }
        // An image that ships content of its own in the keys' parent folder (/var/lib/cairn) has it
        // seeded into /var by systemd-tmpfiles-setup, which copies a folder only while it is missing
        // or empty: the keys wait for that copy there.
        std::string keygen_unit = ssh_keygen_unit;
        if (has(tree, fs::path(ssh_paths::host_keys).parent_path().string(), what)) {
            const std::string after = "\nAfter=local-fs.target\n";
            keygen_unit.replace(keygen_unit.find(after), after.size(), "\nAfter=local-fs.target systemd-tmpfiles-setup.service\n");
        }
        add_unit(tree, "cairn-ssh-keygen.service", keygen_unit, what);
        enable(tree, "cairn-ssh-keygen.service", "ssh.service", what, "requires");
        if (recipe.ssh.vsock) {
            add_unit(tree, "cairn-sshd-vsock.socket", sshd_vsock_socket, what);
            add_unit(tree, "cairn-sshd-vsock@.service", sshd_vsock_service, what);
            enable(tree, "cairn-sshd-vsock.socket", "sockets.target", what);
        }
    }
}

namespace {

// A link at image path `at` (or, for a directory, each link directly in it) with a relative target
// gets the absolute one: the factory copy sits elsewhere, where the relative one would dangle.
void absolute_links(const fs::path& host, const std::string& at) {
    std::error_code ec;
    auto fix = [&](const fs::path& link, const std::string& image_path) {
        const fs::path target = fs::read_symlink(link, ec);
        if (ec || target.is_absolute()) return;
        const fs::path absolute = (fs::path(image_path).parent_path() / target).lexically_normal();
        fs::remove(link, ec);
        fs::create_symlink(absolute, link, ec);
        if (ec) fail("rewriting the link " + link.string() + ": " + ec.message());
    };
    if (fs::is_symlink(host, ec)) return fix(host, at);
    if (!fs::is_directory(host, ec)) return;
    for (const auto& e : fs::directory_iterator(host, ec))
        if (e.is_symlink(ec)) fix(e.path(), at + "/" + e.path().filename().string());
}

// The paths the tree's tmpfiles.d files (other than Cairn's own /var one) make: lines whose type
// creates what they name (a file, folder, link, node or copy). Paths with specifiers are skipped.
std::set<std::string> tmpfiles_created(const fs::path& staging) {
    std::set<std::string> paths;
    const std::string ours = fs::path(systemd_paths::var_tmpfiles).filename().string();
    std::error_code ec;
    for (const char* dir : {"usr/lib/tmpfiles.d", "etc/tmpfiles.d"}) {
        if (!fs::is_directory(staging / dir, ec)) continue;
        for (const auto& e : fs::directory_iterator(staging / dir)) {
            const std::string name = e.path().filename().string();
            if (name == ours || e.path().extension() != ".conf" || !e.is_regular_file(ec)) continue;
            std::istringstream lines(read_file(e.path()));
            for (std::string line; std::getline(lines, line);) {
                std::istringstream words(line);
                std::string type, path;
                if (!(words >> type >> path) || type[0] == '#' || path.find('%') != std::string::npos) continue;
                if (std::string_view("fFwdDevqQpLcbC").find(type[0]) != std::string_view::npos) paths.insert(path);
            }
        }
    }
    return paths;
}

}  // namespace

size_t move_var_to_factory(const fs::path& staging) {
    const fs::path var = staging / "var";
    std::error_code ec;
    if (fs::is_symlink(var, ec) || !fs::is_directory(var, ec)) return 0;
    const fs::path factory = staging / fs::path(systemd_paths::factory_var).relative_path();
    const fs::path dpkg = staging / fs::path(systemd_paths::dpkg_database).relative_path();
    fs::create_directories(factory, ec);
    if (ec) fail("creating " + factory.string() + ": " + ec.message());
    fs::create_directories(dpkg.parent_path(), ec);
    if (fs::exists(var / "lib/dpkg", ec)) {
        fs::rename(var / "lib/dpkg", dpkg, ec);
        if (ec) fail("moving " + (var / "lib/dpkg").string() + " to " + dpkg.string() + ": " + ec.message());
    }
    // Second-level entries (/var/lib/systemd, /var/cache/debconf, /var/log/wtmp): each copied when
    // missing, so what a new version brings arrives and what the device has is never replaced.
    // Where a package's own tmpfiles.d line already makes an entry (systemd's `d /var/lib/private`,
    // `f /var/log/wtmp`, `L /var/lock`), tmpfiles keeps one line per path and warns about the
    // others at every boot: that entry is left to the package's line when it brings nothing more
    // (a link, an empty file, a folder), and a folder's content is seeded entry by entry.
    const std::set<std::string> theirs = tmpfiles_created(staging);
    std::vector<std::string> seeded;
    std::vector<std::pair<std::string, std::string>> links;  // path under /var, absolute target
    auto sorted_entries = [](const fs::path& dir) {
        std::vector<fs::path> v;
        for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path());
        std::sort(v.begin(), v.end());
        return v;
    };
    std::function<void(const fs::path&, const std::string&, bool)> seed = [&](const fs::path& at, const std::string& rel, bool top) {
        const bool link = fs::is_symlink(at, ec), dir = !link && fs::is_directory(at, ec);  // never through a link (/var/run -> /run)
        const bool made_by_package = theirs.count("/var/" + rel) > 0;
        if (made_by_package && !dir && (link || fs::file_size(at, ec) == 0)) return;
        if (dir && (top || made_by_package)) {
            absolute_links(at, "/var/" + rel);
            const std::vector<fs::path> inner = sorted_entries(at);
            if (inner.empty() && !made_by_package) seeded.push_back(rel);  // an empty one a package owns: /var/backups, /var/local
            for (const auto& i : inner) seed(i, rel + "/" + i.filename().string(), false);
            return;
        }
        if (top) absolute_links(at, "/var/" + rel);
        if (link) links.push_back({rel, fs::read_symlink(at, ec).string()});
        else seeded.push_back(rel);
    };
    for (const auto& t : sorted_entries(var)) {
        const std::string name = t.filename().string();
        seed(t, name, true);
        fs::rename(t, factory / name, ec);
        if (ec) fail("moving " + t.string() + " to " + (factory / name).string() + ": " + ec.message());
    }
    std::string conf = "# Cairn: /var of this image's packages, kept in the read-only root at " + std::string(systemd_paths::factory_var) +
                       ",\n# copied into /var (the data partition) where it is missing. The dpkg database is the\n"
                       "# running slot's own, bound read-only on /var/lib/dpkg by cairn-init.\n";
    for (const auto& s : seeded) conf += "C /var/" + s + " - - - - " + std::string(systemd_paths::factory_var) + "/" + s + "\n";
    // Links are made, not copied: tmpfiles would follow a copied one's target, which may not exist yet.
    for (const auto& [path, target] : links) conf += "L /var/" + path + " - - - - " + target + "\n";
    const fs::path tmpfiles = staging / fs::path(systemd_paths::var_tmpfiles).relative_path();
    fs::create_directories(tmpfiles.parent_path(), ec);
    write_file_atomic(tmpfiles, conf);
    // The mount points the running system needs in the root itself.
    for (const char* d : {"var", "var/log", "var/lib", "var/lib/dpkg"}) fs::create_directories(staging / d, ec);
    return seeded.size() + links.size();
}

}  // namespace cairn::imager
