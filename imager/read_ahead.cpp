#include "imager/read_ahead.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "imager/early_boot.hpp"
#include "imager/systemd.hpp"

namespace cairn::imager {

namespace {

// Folders whose every file a systemd boot reads (what each reads them for).
constexpr const char* read_ahead_folders[] = {
    "/usr/lib/systemd/system",      // the units and their drop-ins (PID 1 loads them before it starts anything)
    "/usr/lib/systemd/network",     // systemd-networkd, systemd-udevd's .link files
    "/usr/lib/udev/rules.d",        // systemd-udevd
    "/usr/lib/tmpfiles.d",          // systemd-tmpfiles, twice
    "/usr/lib/sysctl.d",            // systemd-sysctl
    "/usr/lib/modules-load.d",      // systemd-modules-load
    "/usr/share/dbus-1/system.d",   // dbus-daemon's policy
    "/usr/share/dbus-1/system-services",
    "/usr/lib/locale/C.utf8",       // every program that sets the locale (LANG=C.UTF-8)
    "/usr/lib/modprobe.d",          // kmod, for each module loaded
    "/usr/lib/systemd/system.conf.d", "/usr/lib/systemd/journald.conf.d", "/usr/lib/systemd/logind.conf.d", "/usr/lib/systemd/networkd.conf.d",
};

// Single files read at every boot.
constexpr const char* read_ahead_files[] = {"/usr/share/dbus-1/system.conf"};

// Targets a boot reaches, in the order it reaches them: their units' programs come in this order.
constexpr const char* boot_targets[] = {"sysinit.target", "local-fs.target", "sockets.target", "basic.target", "network-pre.target",
                                        "network.target", "remote-fs.target", "multi-user.target", "getty.target", "graphical.target"};

constexpr const char* exec_keys[] = {"ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost"};

// Where systemd 252 looks for a command given without a path.
constexpr const char* command_path[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"};

// The interpreter a script names on its "#!" line; empty for anything else.
std::string script_interpreter(const Tree& tree, const std::string& program) {
    const std::string file = tree_regular_file(tree, program);
    if (file.empty()) return {};
    std::ifstream in(tree.host(file));
    std::string line;
    if (!std::getline(in, line) || !line.starts_with("#!")) return {};
    const size_t start = line.find_first_not_of(" \t", 2);
    if (start == std::string::npos) return {};
    return line.substr(start, line.find_first_of(" \t", start) - start);
}

// Where the kernels' modules are, one folder per kernel release.
constexpr std::string_view modules_folder = "/usr/lib/modules/";

// The absolute programs a unit file and its drop-ins run (Exec lines, prefixes such as '-' dropped).
void unit_programs(const Tree& tree, const std::string& name, const std::string& file, std::vector<std::string>& programs) {
    for (const auto& f : unit_files(tree, name, file)) {
        std::istringstream in(read_file(tree.host(f)));
        for (std::string line; std::getline(in, line);) {
            const size_t eq = line.find('=');
            if (eq == std::string::npos) continue;
            const std::string key = line.substr(0, line.find_last_not_of(" \t", eq - 1) + 1);
            if (std::find(std::begin(exec_keys), std::end(exec_keys), key) == std::end(exec_keys)) continue;
            std::string value = line.substr(eq + 1);
            const size_t start = value.find_first_not_of(" \t-@:+!");
            if (start == std::string::npos) continue;
            value = value.substr(start, value.find_first_of(" \t", start) - start);
            if (value.starts_with('/')) {
                programs.push_back(value);
                continue;
            }
            for (const char* dir : command_path)  // a bare name: where systemd looks for it
                if (std::string found = tree_regular_file(tree, std::string(dir) + "/" + value); !found.empty()) {
                    programs.push_back(found);
                    break;
                }
        }
    }
}

}  // namespace

std::vector<std::string> boot_read_ahead(const Tree& tree) {
    if (!runs_systemd(tree)) return {};
    std::vector<std::string> list;
    std::set<std::string> seen;
    auto add = [&](const std::string& canonical) {
        if (canonical.empty() || canonical.starts_with("/etc/") || canonical.starts_with("/var/") || canonical.starts_with("/home/") ||
            canonical.starts_with("/root/"))
            return;
        if (seen.insert(canonical).second) list.push_back(canonical);
    };

    // 0. systemd with its libraries: PID 1 maps them the moment it starts, and cairn-init starts
    // the read-ahead only a fraction of a second before that.
    for (const auto& file : loaded_files(tree, {systemd_paths::systemd})) add(file);

    // 1. What systemd and the early services read: their configuration, the modules' indexes.
    for (const char* folder : read_ahead_folders) {
        std::string canonical;
        try {
            canonical = tree.resolve(folder, "read-ahead");
        } catch (const Error&) {
            continue;
        }
        for (const auto& [path, meta] : tree.entries_under(canonical))
            if (S_ISREG(meta.mode)) add(path);
    }
    for (const char* file : read_ahead_files) add(tree_regular_file(tree, file));
    for (const auto& line : boot_module_lines(tree)) add(line.substr(0, line.find(' ')));  // the boot's modules (imager/early_boot.hpp)
    for (const auto& [path, meta] : tree.entries_under(modules_folder)) {
        if (!S_ISREG(meta.mode)) continue;
        const std::string name = path.substr(path.rfind('/') + 1);
        if (path.find('/', modules_folder.size()) == path.rfind('/') && name.starts_with("modules.") &&
            (name.ends_with(".bin") || name == "modules.softdep"))
            add(path);
    }

    // 2. The programs of the units the boot starts, with their libraries, in the order of the boot:
    // the boot's targets in turn, each with what its .wants/.requires folders link (and what
    // those services' own folders link), a socket with its service.
    std::vector<std::string> programs;  // systemd's own came first
    std::set<std::string> units_seen;
    std::function<void(const std::string&)> visit = [&](const std::string& unit) {
        if (!units_seen.insert(unit).second) return;
        if (unit.ends_with(".service"))
            if (auto file = unit_file(tree, unit)) unit_programs(tree, unit, *file, programs);
        for (const auto& name : linked_units(tree, unit)) {
            if (name.ends_with(".socket")) {  // what it starts: NAME.service (NAME@.service for Accept=yes)
                const std::string stem = name.substr(0, name.size() - std::string(".socket").size());
                visit(stem + ".service");
                visit(stem + "@.service");
            } else if (name.ends_with(".service")) {
                visit(name);
            }  // a target, mount, timer or path: a boot target comes in its turn; the others start nothing at boot here
        }
    };
    for (const char* target : boot_targets) visit(target);
    for (size_t i = 0, n = programs.size(); i < n; ++i)
        if (std::string interpreter = script_interpreter(tree, programs[i]); !interpreter.empty()) programs.push_back(interpreter);
    for (const auto& file : loaded_files(tree, programs)) add(file);
    return list;
}

size_t add_boot_read_ahead(Tree& tree) {
    const std::vector<std::string> list = boot_read_ahead(tree);
    std::string text;
    for (const auto& path : list) text += path + "\n";
    tree.add_file(initrd::read_ahead_list, text, Meta{0, 0, 0644}, "the boot's read-ahead list");
    return list.size();
}

}  // namespace cairn::imager
