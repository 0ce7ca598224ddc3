#include "imager/kernel_modules.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

std::string module_name(const std::string& path) {
    std::string name = fs::path(path).filename().string();
    name = name.substr(0, name.find(".ko"));
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
}

bool KernelModules::has(const std::string& name) const {
    std::string normal = name;
    std::replace(normal.begin(), normal.end(), '-', '_');
    if (loadable.count(normal) || builtin.count(normal)) return true;
    return std::any_of(aliases.begin(), aliases.end(), [&](const std::string& a) {
        return ::fnmatch(a.c_str(), name.c_str(), 0) == 0 || ::fnmatch(a.c_str(), normal.c_str(), 0) == 0;
    });
}

KernelModules read_kernel_modules(const fs::path& modules_dir, const std::string& what) {
    KernelModules k;
    std::ifstream dep(modules_dir / "modules.dep");
    if (!dep) fail(what + ": " + (modules_dir / "modules.dep").string() + " is missing (the kernel's modules were not indexed)");
    std::string line;
    while (std::getline(dep, line)) {
        const size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        KernelModules::Loadable m{line.substr(0, colon), {}};
        std::istringstream deps(line.substr(colon + 1));
        for (std::string d; deps >> d;) m.depends.push_back(d);
        k.loadable[module_name(m.path)] = std::move(m);
    }
    std::ifstream builtin(modules_dir / "modules.builtin");
    while (std::getline(builtin, line))
        if (!line.empty()) k.builtin.insert(module_name(line));
    // "alias fs-fuse fuse": the pattern is the second word.
    for (const char* file : {"modules.alias", "modules.builtin.alias"}) {
        std::ifstream aliases(modules_dir / file);
        while (std::getline(aliases, line)) {
            std::istringstream words(line);
            std::string keyword, pattern;
            if (words >> keyword >> pattern && keyword == "alias") k.aliases.push_back(pattern);
        }
    }
    // "softdep libcrc32c pre: crc32c"
    std::ifstream softdeps(modules_dir / "modules.softdep");
    while (std::getline(softdeps, line)) {
        std::istringstream words(line);
        std::string keyword, name;
        if (words >> keyword >> name && keyword == "softdep") k.with_softdeps.insert(module_name(name));
    }
    return k;
}

std::string static_nodes_tmpfiles(const std::string& devname) {
    std::string out;
    std::istringstream lines(devname);
    for (std::string line; std::getline(lines, line);) {
        std::istringstream words(line);
        std::string module, node, spec;
        if (line.empty() || line[0] == '#' || !(words >> module >> node >> spec)) continue;
        unsigned major = 0, minor = 0;
        char type = 0;
        if (std::sscanf(spec.c_str(), "%c%u:%u", &type, &major, &minor) != 3 || (type != 'c' && type != 'b')) continue;
        // A node under /dev only: no absolute name, no way up out of it.
        if (node[0] == '/' || ("/" + node + "/").find("/../") != std::string::npos) continue;
        if (const size_t slash = node.rfind('/'); slash != std::string::npos) out += "d /dev/" + node.substr(0, slash) + " 0755 - - -\n";
        out += std::string(1, type) + "! /dev/" + node + " 0600 - - - " + std::to_string(major) + ":" + std::to_string(minor) + "\n";
    }
    return out;
}

}  // namespace cairn::imager
