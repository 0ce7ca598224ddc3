// Images whose init is systemd (a Debian package set with systemd-sysv): Cairn's device programs
// as systemd units, the trial-boot check on boot-complete.target, the `ready` line, the journal,
// the network, and /var on a read-only root.
//
// What the units do, in boot order:
//   cairn-firewall.service   before network-pre.target; systemd-networkd requires it, so the
//                            network never comes up without a loaded ruleset
//   systemd-networkd         DHCP on every Ethernet interface (80-cairn-dhcp.network)
//   cairn-ssh-keygen.service host keys on the data partition on the first boot: early (after
//                            local-fs.target, beside sysinit.target's units), before ssh.service
//   cairn-updated.service    the update daemon (D-Bus); judges a trial boot by boot-complete.target
//   cairn-provisiond.service the provisioning agent
//   cairn-ready.service      after multi-user.target: `cairn: ready slot=... version=... root=...`
//   boot-complete.target     reached when every unit ordered before it worked:
//                            systemd-boot-check-no-failures.service (no failed unit) and the firewall
//   cairn-boot-complete.service  after boot-complete.target: /run/cairn/boot-complete, which
//                            cairn-updated waits for to commit a trial boot
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "imager/recipe.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

namespace systemd_paths {
inline constexpr const char* systemd = "/usr/lib/systemd/systemd";
inline constexpr const char* units = "/usr/lib/systemd/system";
// Overrides of packages' units and masks: where `systemctl edit`/`mask` put them (dpkg owns the
// vendor folder; its files stay as the packages shipped them, so `dpkg --verify` stays clean).
inline constexpr const char* admin_units = "/etc/systemd/system";
inline constexpr const char* generators = "/usr/lib/systemd/system-generators";
inline constexpr const char* admin_generators = "/etc/systemd/system-generators";
inline constexpr const char* ready = "/usr/lib/cairn/ready";
inline constexpr const char* ssh_keygen = "/usr/lib/cairn/ssh-keygen";
inline constexpr const char* factory_var = "/usr/share/factory/var";
inline constexpr const char* dpkg_database = "/usr/lib/cairn/dpkg";  // cairn-init binds it on /var/lib/dpkg
inline constexpr const char* var_tmpfiles = "/usr/lib/tmpfiles.d/cairn-var.conf";
}  // namespace systemd_paths

// Whether the tree's init is systemd: it has /usr/lib/systemd/systemd.
bool runs_systemd(const Tree& tree);

// The unit file systemd would load for `name` (its template's for an instance), the admin's
// folder first; nullopt when it is masked (a link to /dev/null) or missing.
std::optional<std::string> unit_file(const Tree& tree, const std::string& name);

// The units linked in `target`'s .wants and .requires folders, the admin's first, by name.
std::vector<std::string> linked_units(const Tree& tree, const std::string& target);

// A unit's files: `file` (unit_file's answer), then its drop-ins (NAME.d/*.conf in the vendor
// folder, then the admin's, so that the admin's come last and win; for an instance, the
// template's first).
std::vector<std::string> unit_files(const Tree& tree, const std::string& name, const std::string& file);

// Adds the units above for what the recipe enables ([firewall], [update], [ssh], [provisioning]),
// the boot units, a persistent journal, the DHCP network and timesyncd when the tree has them;
// takes packages' units that need not hold up sysinit.target off it (timesyncd, update-utmp), masks
// units and disables generators that have nothing to do on a Cairn image. With the release of the
// image's kernel (its lib/modules/<release> in the tree), what systemd would ask of that kernel at
// every boot is answered here: its static device nodes (kmod-static-nodes.service), and
// modprobe@NAME.service masked for a module NAME it does not have.
void add_systemd_units(Tree& tree, const Recipe& recipe, const std::string& kernel_release = "");

// The script behind cairn-ready.service.
std::string ready_script();

// /var of an installed package set, for a root that is read-only with /var on the data partition:
// the dpkg database goes to /usr/lib/cairn/dpkg (the running slot's, never a stale copy), the rest
// to /usr/share/factory/var, and a tmpfiles.d file copies each of its entries into /var when it is
// missing there (on the first boot, and for what a new version adds). Works on the staging folder;
// call Tree::sync_with_staging after it. Links become `L` lines with absolute targets. Returns
// the number of entries seeded, links included.
size_t move_var_to_factory(const std::filesystem::path& staging);

}  // namespace cairn::imager
