#include "imager/packages.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/apt.hpp"
#include "imager/elf.hpp"
#include "imager/initrd.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

namespace {

// The other spelling of a path under merged /usr: /lib/x -> /usr/lib/x and back.
std::string other_spelling(const std::string& path) { return path.rfind("/usr/", 0) == 0 ? path.substr(4) : "/usr" + path; }

// The packages that hold `files` on the build host, by path ("" for a file dpkg does not know),
// with one dpkg-query call (each call reads every package's file list: one per file took most of
// a build's time). dpkg records paths as packaged: with merged /usr a library may be known
// under /usr/lib/... or /lib/..., so both spellings are asked.
std::map<std::string, std::string> host_packages_of(const std::set<std::string>& files) {
    if (files.empty()) return {};
    std::vector<std::string> argv = {"dpkg-query", "-S"};
    for (const auto& f : files) {
        argv.push_back(f);
        argv.push_back(other_spelling(f));
    }
    std::map<std::string, std::string> owner;  // as dpkg spells the path -> package
    RunResult r = run(argv);  // exit 1 when some path is unknown: the others are still listed
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
        // "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6", "a, b: /path"; "diversion by ..." lines skipped.
        if (line.rfind("diversion ", 0) == 0) continue;
        const size_t sep = line.find(": /");
        if (sep == std::string::npos) continue;
        std::string package = line.substr(0, sep);
        package = package.substr(0, package.find(','));  // "a, b: path": the first
        package = package.substr(0, package.find(':'));  // the architecture
        owner.emplace(line.substr(sep + 2), package);
    }
    std::map<std::string, std::string> result;
    for (const auto& f : files) {
        auto it = owner.find(f);
        if (it == owner.end()) it = owner.find(other_spelling(f));
        result[f] = it == owner.end() ? "" : it->second;
    }
    return result;
}

}  // namespace

std::vector<std::string> cairn_packages(const Recipe& recipe) {
    std::vector<std::pair<const char*, const char*>> programs;  // program, folder it is built in
    if (recipe.firewall.enabled) programs.push_back({"cairn-firewall", "firewall"});
    if (recipe.update.enabled) {
        programs.push_back({"cairn-updated", "updater"});
        programs.push_back({"cairnctl", "cairnctl"});
    }
    if (recipe.provisioning.enabled) {
        programs.push_back({"cairn-provisiond", "provisioning"});
        programs.push_back({"cairnctl", "cairnctl"});
        programs.push_back({"cairnctl-provision", "cairnctl"});
    }
    std::map<std::string, std::string> needed_by;  // library (canonical host path) -> a program that needs it
    for (const auto& [name, folder] : programs) {
        const fs::path program = find_cairn_program(name, folder);
        std::vector<fs::path> files;
        try {
            files = elf::closure(program);
        } catch (const Error& e) {
            fail(recipe.file.string() + ": " + name + ": " + e.what());
        }
        const auto own = elf::link_chain(program);
        for (const auto& f : files) {
            if (std::find(own.begin(), own.end(), f) != own.end()) continue;
            std::error_code ec;
            const fs::path real = fs::canonical(f, ec);
            needed_by.emplace((ec ? f : real).string(), name);
        }
    }
    std::set<std::string> libraries;
    for (const auto& [library, program] : needed_by) libraries.insert(library);
    std::set<std::string> packages;
    for (const auto& [library, package] : host_packages_of(libraries)) {
        if (package.empty())
            fail(recipe.file.string() + ": " + needed_by[library] + " needs " + library +
                 ", which no Debian package on the build host holds; a Debian image gets its libraries from packages");
        packages.insert(package);
    }
    if (recipe.provisioning.enabled) {
        packages.insert("libtss2-tcti-device0");  // loaded with dlopen: no ELF closure finds it
        packages.insert("iproute2");             // its start script waits for a default route
    }
    if (recipe.update.enabled) packages.insert("dbus");
    if (recipe.ssh.enabled) packages.insert("openssh-server");
    return {packages.begin(), packages.end()};
}

PackageRequest package_request(const Recipe& recipe) {
    const Recipe::Packages& p = recipe.rootfs.packages;
    PackageRequest request;
    request.base = p.base;
    request.packages = p.names;
    for (const auto& name : cairn_packages(recipe))
        if (std::none_of(p.names.begin(), p.names.end(), [&](const std::string& n) { return n.substr(0, n.find_first_of("=:")) == name; }))
            request.packages.push_back(name);
    request.local_debs = p.debs;
    request.sources = p.sources;
    request.where = p.where;
    return request;
}

LockResult lock_recipe(const Recipe& recipe, const fs::path& cache, const std::optional<fs::path>& lock_file, bool update) {
    const Recipe::Packages& p = recipe.rootfs.packages;
    if (!p.enabled()) fail(recipe.file.string() + ": the recipe installs no Debian packages ([rootfs] base, packages or debs): nothing to lock");
    LockResult result;
    result.file = lock_file.value_or(p.lock);
    const PackageRequest request = package_request(recipe);
    std::error_code ec;
    const bool exists = fs::exists(result.file, ec);
    if (exists && !update) {
        PackageLock old = parse_lock(read_file(result.file), result.file);
        if (old.request_digest == request_digest(request)) {
            result.lock = old;
            result.change = LockResult::Change::unchanged;
            return result;
        }
    }
    result.lock = resolve_packages(request, cache);
    result.change = exists ? LockResult::Change::updated : LockResult::Change::created;
    if (result.file.has_parent_path()) {  // its folder is made, as `cairn build -o DIR` makes DIR
        fs::create_directories(result.file.parent_path(), ec);
        if (ec) fail(result.file.string() + ": cannot make its folder: " + ec.message());
    }
    write_file_atomic(result.file, lock_text(result.lock));
    return result;
}

PackageLock lock_for_build(const Recipe& recipe, const PackageRequest& request, const fs::path& cache, const std::optional<fs::path>& lock_file,
                           bool* from_file) {
    const fs::path file = lock_file.value_or(recipe.rootfs.packages.lock);
    std::error_code ec;
    if (lock_file || fs::exists(file, ec)) {
        PackageLock lock = parse_lock(read_file(file), file);
        if (lock.request_digest != request_digest(request))
            fail(file.string() + ": this lock was made for another package request (the recipe's [rootfs] base, packages, debs or sources, "
                                 "or what its [update], [ssh], [firewall] and [provisioning] need, changed since): run `cairn lock " +
                 recipe.file.string() + "` to bring it up to date");
        if (from_file) *from_file = true;
        return lock;
    }
    if (from_file) *from_file = false;
    return resolve_packages(request, cache);
}

}  // namespace cairn::imager
