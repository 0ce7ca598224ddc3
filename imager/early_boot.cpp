#include "imager/early_boot.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "imager/kernel_modules.hpp"
#include "imager/systemd.hpp"

namespace cairn::imager {

namespace {

const Meta file_meta{0, 0, 0644}, dir_meta{0, 0, 0755};

constexpr std::string_view modules_folder = "/usr/lib/modules/";

// Filesystems without a device: what cairn-init may mount for the image's init.
constexpr const char* virtual_types[] = {"tmpfs", "hugetlbfs", "mqueue", "configfs", "fusectl", "debugfs", "tracefs", "securityfs"};

constexpr const char* api_folders[] = {"/dev", "/proc", "/sys", "/run"};

// systemd 252's PID 1 loads these itself when it starts (src/core/kmod-setup.c), on its own
// critical path: autofs4 for automount units, ip_tables for its firewall helpers.
constexpr const char* pid1_modules[] = {"autofs4", "ip_tables"};

constexpr const char* dropin_text =
    "# Cairn: cairn-init loads the modules every boot of this image loads (/usr/lib/cairn/boot-modules)\n"
    "# before systemd starts; a module already there needs no modprobe.\n"
    "[Unit]\n"
    "ConditionPathExists=!/sys/module/%i\n";

// The values of `key` in `section` of a unit's files, in order; an empty assignment drops the ones
// before it, as systemd reads list settings.
std::vector<std::string> unit_values(const Tree& tree, const std::vector<std::string>& files, const std::string& section, const std::string& key) {
    std::vector<std::string> values;
    for (const auto& f : files) {
        std::istringstream lines(read_file(tree.host(f)));
        std::string current;
        for (std::string line; std::getline(lines, line);) {
            const size_t start = line.find_first_not_of(" \t");
            if (start == std::string::npos || line[start] == '#' || line[start] == ';') continue;
            line = line.substr(start);
            if (line.front() == '[') {
                current = line.substr(1, line.find(']') - 1);
                continue;
            }
            const size_t eq = line.find('=');
            if (current != section || eq == std::string::npos) continue;
            std::string k = line.substr(0, eq);
            k.erase(k.find_last_not_of(" \t") + 1);
            if (k != key) continue;
            std::string v = line.substr(eq + 1);
            v.erase(0, v.find_first_not_of(" \t"));
            v.erase(v.find_last_not_of(" \t\r") + 1);
            if (v.empty())
                values.clear();
            else
                values.push_back(v);
        }
    }
    return values;
}

// The name systemd gives the unit `default.target` leads to (graphical.target on Debian).
std::string default_target(const Tree& tree) {
    for (const char* folder : {systemd_paths::admin_units, systemd_paths::units}) {
        const std::string file = tree_regular_file(tree, std::string(folder) + "/default.target");
        if (!file.empty()) return file.substr(file.rfind('/') + 1);
    }
    return "multi-user.target";
}

// One mount unit as a line for cairn-init, or nullopt when it is not one cairn-init may do.
std::optional<initrd::BootMount> as_boot_mount(const Tree& tree, const std::string& name, const std::vector<std::string>& files) {
    auto last = [&](const std::string& section, const std::string& key) {
        const auto v = unit_values(tree, files, section, key);
        return v.empty() ? std::string() : v.back();
    };
    initrd::BootMount m;
    m.unit = name;
    m.type = last("Mount", "Type");
    m.source = last("Mount", "What");
    m.where = last("Mount", "Where");
    m.options = last("Mount", "Options");
    // cairn-init mounts only on the API filesystems and on /tmp (initrd/early_boot.hpp says why).
    const bool api = m.where == "/tmp" || std::any_of(std::begin(api_folders), std::end(api_folders),
                                                      [&](const char* f) { return m.where.starts_with(std::string(f) + "/"); });
    if (!api || m.where.find("/..") != std::string::npos ||
        std::find(std::begin(virtual_types), std::end(virtual_types), m.type) == std::end(virtual_types) || m.source.empty() ||
        !m.where.starts_with('/') || m.where.find_first_of(" \t%") != std::string::npos || m.source.find_first_of(" \t%") != std::string::npos)
        return std::nullopt;
    // "%%" is a '%'; any other specifier is systemd's to expand.
    std::string options;
    for (size_t i = 0; i < m.options.size(); ++i) {
        if (m.options[i] == '%') {
            if (i + 1 >= m.options.size() || m.options[i + 1] != '%') return std::nullopt;
            ++i;
        }
        if (m.options[i] == ' ' || m.options[i] == '\t') return std::nullopt;
        options += m.options[i];
    }
    m.options = options;
    // Conditions and assertions: only those cairn-init can check, or that hold for it.
    for (const auto& f : files) {
        std::istringstream lines(read_file(tree.host(f)));
        for (std::string line; std::getline(lines, line);) {
            line.erase(0, line.find_first_not_of(" \t"));
            if (!line.starts_with("Condition") && !line.starts_with("Assert")) continue;
            const size_t eq = line.find('=');
            if (eq == std::string::npos) continue;
            std::string key = line.substr(0, eq), value = line.substr(eq + 1);
            key.erase(key.find_last_not_of(" \t") + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            value.erase(value.find_last_not_of(" \t\r") + 1);
            if (value.empty()) continue;  // a reset: the vendor's conditions above it still counted, conservatively
            if (value.starts_with('|')) return std::nullopt;
            if (key == "ConditionPathExists" && value.find_first_of(" \t%") == std::string::npos)
                m.conditions.push_back(value);
            else if (key == "ConditionPathIsSymbolicLink" && value.starts_with('!') && value.find_first_of(" \t%") == std::string::npos)
                m.conditions.push_back("!symlink:" + value.substr(1));
            else if (key == "ConditionCapability" && !value.starts_with('!'))
                continue;  // cairn-init has every capability
            else if (key == "ConditionVirtualization" && value.starts_with('!') && value != "!vm" && value != "!qemu" && value != "!kvm")
                continue;  // cairn-init runs outside any container and user namespace
            else
                return std::nullopt;
        }
    }
    return m;
}

// The module names modules-load.d files list (/etc/modules-load.d, /usr/lib/modules-load.d), as
// modprobe reads them ('-' as '_').
std::vector<std::string> modules_load_d_names(const Tree& tree) {
    std::vector<std::string> names;
    for (const char* folder : {"/etc/modules-load.d", "/usr/lib/modules-load.d"}) {
        for (const auto& [path, meta] : tree.entries_under(folder)) {
            if (!path.ends_with(".conf")) continue;
            const std::string file = tree_regular_file(tree, path);
            if (file.empty()) continue;
            std::istringstream in(read_file(tree.host(file)));
            for (std::string line; std::getline(in, line);) {
                std::istringstream words(line);
                std::string word;
                if (words >> word && word[0] != '#' && word[0] != ';') names.push_back(module_name(word));
            }
        }
    }
    return names;
}

}  // namespace

std::vector<std::string> boot_units(const Tree& tree) {
    std::vector<std::string> order;
    if (!runs_systemd(tree)) return order;
    std::set<std::string> seen;
    std::vector<std::string> queue = {default_target(tree)};
    for (size_t i = 0; i < queue.size(); ++i) {
        const std::string name = queue[i];
        if (!seen.insert(name).second) continue;
        const auto file = unit_file(tree, name);
        if (!file) continue;  // masked or missing
        order.push_back(name);
        for (const auto& linked : linked_units(tree, name)) queue.push_back(linked);
        const auto files = unit_files(tree, name, *file);
        for (const char* key : {"Wants", "Requires", "BindsTo", "Upholds"})
            for (const auto& value : unit_values(tree, files, "Unit", key)) {
                std::istringstream words(value);
                for (std::string w; words >> w;)
                    if (w.find('%') == std::string::npos && w.find('/') == std::string::npos) queue.push_back(w);
            }
    }
    return order;
}

std::vector<std::string> boot_module_lines(const Tree& tree) {
    std::vector<std::string> lines;
    if (!runs_systemd(tree)) return lines;
    std::vector<std::string> names(std::begin(pid1_modules), std::end(pid1_modules));
    for (const auto& unit : boot_units(tree))
        if (unit.starts_with("modprobe@") && unit.ends_with(".service") && unit.size() > 17) names.push_back(module_name(unit.substr(9, unit.size() - 17)));
    for (const auto& name : modules_load_d_names(tree)) names.push_back(name);

    for (const auto& [folder, meta] : tree.entries_under(modules_folder)) {
        if (!S_ISDIR(meta.mode) || folder.find('/', modules_folder.size()) != std::string::npos) continue;
        const std::string dir = folder;  // a structured binding: clang-14 (the fuzz build) cannot capture one
        KernelModules k;
        try {
            k = read_kernel_modules(tree.host(dir), "early boot");
        } catch (const Error&) {
            continue;  // not indexed: nothing modprobe could load either
        }
        std::set<std::string> listed;
        auto add = [&](const std::string& file) {
            const std::string name = module_name(file);
            if (k.with_softdeps.count(name) || !listed.insert(name).second) return;
            const auto& m = k.loadable.at(name);
            std::string line = dir + "/" + m.path;
            for (auto d = m.depends.rbegin(); d != m.depends.rend(); ++d) line += " " + module_name(*d);
            lines.push_back(line);
        };
        for (const auto& name : names) {
            const auto m = k.loadable.find(name);
            if (m == k.loadable.end()) continue;  // built in, or not this kernel's
            // What it needs first, as modprobe loads them: modules.dep lists the nearest last.
            for (auto d = m->second.depends.rbegin(); d != m->second.depends.rend(); ++d)
                if (k.loadable.count(module_name(*d))) add(*d);
            add(m->second.path);
        }
    }
    return lines;
}

std::vector<initrd::BootMount> boot_mounts(const Tree& tree) {
    std::vector<initrd::BootMount> mounts;
    if (!runs_systemd(tree)) return mounts;
    for (const auto& unit : boot_units(tree)) {
        if (!unit.ends_with(".mount")) continue;
        if (auto m = as_boot_mount(tree, unit, unit_files(tree, unit, *unit_file(tree, unit)))) mounts.push_back(std::move(*m));
    }
    mounts.push_back({"-", "bpf", "bpf", "/sys/fs/bpf", "nosuid,nodev,noexec,mode=700", {}});
    return mounts;
}

EarlyBootLists add_early_boot(Tree& tree) {
    EarlyBootLists counts;
    if (!runs_systemd(tree)) return counts;
    const std::string what = "early boot lists";
    std::string modules, mounts;
    for (const auto& line : boot_module_lines(tree)) {
        modules += line + "\n";
        ++counts.modules;
    }
    for (const auto& m : boot_mounts(tree)) {
        std::string conditions;
        for (const auto& c : m.conditions) conditions += (conditions.empty() ? "" : " ") + c;
        mounts += m.unit + "\t" + m.type + "\t" + m.source + "\t" + m.where + "\t" + (m.options.empty() ? "-" : m.options) + "\t" + conditions + "\n";
        ++counts.mounts;
    }
    const std::string folder = std::string(initrd::boot_modules_list).substr(0, std::string(initrd::boot_modules_list).rfind('/'));
    if (!tree.meta(tree.resolve(folder, what))) tree.add_directory(folder, dir_meta, what);
    tree.add_file(initrd::boot_modules_list, modules, file_meta, what);
    tree.add_file(initrd::boot_mounts_list, mounts, file_meta, what);
    if (counts.modules > 0 && unit_file(tree, "modprobe@.service")) {
        const std::string dropins = std::string(systemd_paths::admin_units) + "/modprobe@.service.d";
        if (!tree.meta(tree.resolve(dropins, what))) tree.add_directory(dropins, dir_meta, what);
        tree.add_file(dropins + "/cairn-early-boot.conf", dropin_text, file_meta, what);
    }
    return counts;
}

}  // namespace cairn::imager
