#include "imager/initrd.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/cpio.hpp"
#include "imager/kernel_modules.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

std::vector<std::string> default_initrd_modules() { return {"virtio_pci", "virtio_blk", "dm_verity", "erofs", "overlay", "efivarfs"}; }

std::vector<std::string> module_closure(const fs::path& modules_dir, const std::vector<std::string>& names, const std::string& what) {
    const KernelModules k = read_kernel_modules(modules_dir, what);

    std::vector<std::string> order;
    std::set<std::string> done;
    // Depth first: a module's dependencies before the module.
    std::function<void(const std::string&)> visit = [&](const std::string& path) {
        if (!done.insert(path).second) return;
        if (auto m = k.loadable.find(module_name(path)); m != k.loadable.end())
            for (const auto& d : m->second.depends) visit(d);
        order.push_back(path);
    };
    for (const auto& requested : names) {
        std::string name = requested;
        std::replace(name.begin(), name.end(), '-', '_');
        auto it = k.loadable.find(name);
        if (it == k.loadable.end()) {
            if (k.builtin.count(name)) continue;
            fail(what + ": no kernel module '" + requested + "' in " + modules_dir.string());
        }
        visit(it->second.path);
    }
    return order;
}

fs::path find_cairn_program(const std::string& name, const std::string& build_folder) {
    std::string env_name = name;
    for (char& c : env_name) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (const char* env = std::getenv(env_name.c_str()); env && *env) {
        if (!fs::is_regular_file(env)) fail(env_name + ": " + std::string(env) + " is not a file");
        return env;
    }
    std::error_code ec;
    const fs::path self = own_directory();
    for (const fs::path& candidate : {self / ".." / build_folder / name, self / "../lib/cairn" / name, self / name})
        if (fs::is_regular_file(candidate, ec)) return fs::canonical(candidate);
    fail(name + " not found beside " + self.string() + " (build it: make " + name + "; or set " + env_name + ")");
}

size_t build_initrd(const InitrdSpec& spec, const fs::path& out, const fs::path& work, int64_t epoch) {
    Tree tree(work / "initrd");
    const std::string what = spec.where;
    // Merged /usr, as on the build host, so that a library reached as /lib/... and /usr/lib/... is stored once.
    for (const char* dir : {"/usr/bin", "/usr/sbin", "/usr/lib"}) tree.add_directory(dir, Meta{0, 0, 0755}, what);
    for (const char* link : {"bin", "sbin", "lib"}) tree.add_symlink("/" + std::string(link), "usr/" + std::string(link), Meta{}, what);
    add_cairn_program(tree, spec.cairn_init, "/init", Meta{0, 0, 0755}, what + ": cairn-init");
    for (const char* tool : {"mkfs.ext4", "e2fsck", "resize2fs", "sfdisk"}) {
        auto host = find_program(tool);
        if (!host) fail(what + ": " + tool + " not found on the build host (it goes into the initrd; see scripts/install-deps)");
        add_host_executable(tree, *host, "/usr/sbin/" + std::string(tool), Meta{0, 0, 0755}, what + ": " + tool);
    }

    const fs::path modules_dir = spec.root_tree / "lib/modules" / spec.kernel_release;
    std::vector<std::string> modules = module_closure(modules_dir, spec.modules, what + ".initrd_modules");
    std::string list;
    for (const auto& m : modules) {
        std::string image_path = "/lib/modules/" + spec.kernel_release + "/" + m;
        tree.add_file_copy(image_path, modules_dir / m, Meta{0, 0, 0644}, what);
        list += image_path + "\n";
    }
    tree.add_file("/etc/cairn/initrd-modules", list, Meta{0, 0, 0644}, what);

    if (spec.debug_shell) {
        fs::path busybox = spec.root_tree / "bin/busybox";
        if (!fs::is_regular_file(busybox)) busybox = spec.root_tree / "usr/bin/busybox";
        if (!fs::is_regular_file(busybox)) fail(what + ".debug: a debug initrd needs /bin/busybox in the root tree (add busybox-static)");
        tree.add_file_copy("/bin/busybox", busybox, Meta{0, 0, 0755}, what);
        tree.add_symlink("/bin/sh", "busybox", Meta{}, what);
    }
    for (const char* dir : {"/dev", "/proc", "/sys", "/run", "/sysroot"}) tree.add_directory(dir, Meta{0, 0, 0755}, what);

    std::vector<CpioEntry> entries;
    for (const auto& [path, meta] : tree.entries()) {
        if (path == "/") continue;
        CpioEntry e;
        e.path = path.substr(1);
        e.mode = meta.mode;
        e.uid = meta.uid;
        e.gid = meta.gid;
        if (S_ISREG(meta.mode)) e.source = tree.host(path);
        if (S_ISLNK(meta.mode)) e.target = fs::read_symlink(tree.host(path)).string();
        entries.push_back(std::move(e));
    }
    write_initrd(out, std::move(entries), "gzip", epoch);
    remove_tree(tree.staging());
    return modules.size();
}

}  // namespace cairn::imager
