// What an image's kernel offers, read from the indexes depmod writes in lib/modules/<release>:
// its modules by name (loadable, built in, aliases) and the device nodes whose opening loads one.
#pragma once

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace cairn::imager {

// "kernel/fs/fuse/fuse.ko.xz" -> "fuse"; '-' read as '_', as modprobe reads names.
std::string module_name(const std::string& path);

struct KernelModules {
    struct Loadable {
        std::string path;                 // relative to the modules folder
        std::vector<std::string> depends;  // paths of the modules it needs
    };
    std::map<std::string, Loadable> loadable;  // modules.dep, by name
    std::set<std::string> builtin;             // modules.builtin
    std::vector<std::string> aliases;          // modules.alias and modules.builtin.alias (patterns)
    std::set<std::string> with_softdeps;       // modules.softdep: modules modprobe loads others with
    // Whether `modprobe NAME` finds something: a module of that name, loadable or built in, or an
    // alias that matches it.
    bool has(const std::string& name) const;
};

// Reads modules_dir's indexes. Throws Error "<what>: .../modules.dep is missing ..." when the
// kernel's modules were not indexed; the other files are optional.
KernelModules read_kernel_modules(const std::filesystem::path& modules_dir, const std::string& what);

// modules.devname's text ("fuse fuse c10:229") as tmpfiles.d(5) lines, the ones
// `kmod static-nodes --format=tmpfiles` writes: "c! /dev/fuse 0600 - - - 10:229", a folder's
// "d /dev/net 0755 - - -" before a node in it. Malformed lines are skipped, as kmod skips them, and
// so are names that would leave /dev (absolute, or with a ".." part).
std::string static_nodes_tmpfiles(const std::string& devname);

}  // namespace cairn::imager
