// The stages of `cairn build` (the pipeline's order is in imager/build.cpp).
#include "imager/build_stages.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <memory>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/units.hpp"
#include "common/version.hpp"
#include "imager/archive.hpp"
#include "imager/deb.hpp"
#include "imager/disk_formats.hpp"
#include "imager/elf.hpp"
#include "imager/esp.hpp"
#include "imager/filesystem.hpp"
#include "imager/initrd.hpp"
#include "imager/measure.hpp"
#include "imager/dpkg.hpp"
#include "imager/packages.hpp"
#include "imager/apt.hpp"
#include "imager/provisioning.hpp"
#include "imager/attestation_agent.hpp"
#include "imager/early_boot.hpp"
#include "imager/read_ahead.hpp"
#include "imager/sbom.hpp"
#include "imager/systemd.hpp"
#include "imager/ssh.hpp"
#include "imager/uki.hpp"
#include "imager/update.hpp"
#include "partitions/gpt.hpp"
#include "updater/bundle.hpp"

namespace cairn::imager {

using nlohmann::json;
using partitions::Role;

namespace {

uint32_t resolve_id(const Tree& tree, const std::optional<Id>& id, bool user, const std::string& where) {
    if (!id) return 0;
    if (id->number) return *id->number;
    auto found = user ? tree.lookup_user(id->name) : tree.lookup_group(id->name);
    if (!found)
        fail(where + "." + (user ? "owner" : "group") + ": no " + (user ? "user" : "group") + " '" + id->name + "' in the image's " +
             (user ? "/etc/passwd" : "/etc/group") + " (add it in an earlier step, or give a number)");
    return *found;
}

Meta step_meta(const Tree& tree, const Step& s, uint32_t default_mode) {
    return Meta{resolve_id(tree, s.owner, true, s.where), resolve_id(tree, s.group, false, s.where), s.mode.value_or(default_mode)};
}

uint32_t host_mode(const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) fail_errno(p.string());
    return st.st_mode & 07777;
}

// A digest of a host directory: names, kinds, modes, link targets and contents, in sorted order.
std::string tree_digest(const fs::path& dir) {
    std::vector<fs::path> paths;
    for (auto& e : fs::recursive_directory_iterator(dir)) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    Sha256 h;
    for (const auto& p : paths) {
        struct stat st {};
        ::lstat(p.c_str(), &st);
        std::string rel = p.lexically_relative(dir).string();  // never through a link
        h.update(rel).update("\0", 1).update(std::to_string(st.st_mode));
        if (S_ISLNK(st.st_mode)) h.update(fs::read_symlink(p).string());
        else if (S_ISREG(st.st_mode)) h.update(sha256_file_hex(p));
        h.update("\n", 1);
    }
    return to_hex(h.final());
}

// Copies a host directory into the tree at `dest`: root-owned, with the host's permission bits.
void add_host_tree(Tree& tree, const fs::path& dir, const std::string& dest, const std::string& where) {
    if (!fs::is_directory(dir)) fail(where + ".source: " + dir.string() + " is not a directory");
    std::vector<fs::directory_entry> entries;
    for (auto& e : fs::recursive_directory_iterator(dir)) entries.push_back(e);
    std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.path() < b.path(); });
    for (const auto& e : entries) {
        std::string image = image_join(dest, e.path().lexically_relative(dir).string(), where);  // a link is itself, not its target
        struct stat st {};
        if (::lstat(e.path().c_str(), &st) != 0) fail_errno(where + ": " + e.path().string());
        Meta meta{0, 0, static_cast<uint32_t>(st.st_mode & 07777)};
        if (S_ISDIR(st.st_mode)) tree.add_directory(image, meta, where);
        else if (S_ISLNK(st.st_mode)) tree.add_symlink(image, fs::read_symlink(e.path()).string(), meta, where);
        else if (S_ISREG(st.st_mode)) tree.add_file_copy(image, e.path(), meta, where);
        else fail(where + ": " + e.path().string() + ": device nodes, FIFOs and sockets are not supported in the root tree");
    }
}

struct KernelResult {
    std::string package, version, architecture, release;
    fs::path deb;
    std::string sha256;
};

// The kernel package: its modules go into the tree, its vmlinuz to `vmlinuz`. A metapackage
// (linux-image-cloud-amd64) is followed to the linux-image-* package it depends on.
KernelResult add_kernel(Tree& tree, const Recipe::Kernel& k, const fs::path& cache, const fs::path& vmlinuz) {
    fs::path deb = k.deb.empty() ? fetch_deb(k.package, cache, k.where + ".package") : k.deb;
    for (int depth = 0; depth < 3; ++depth) {
        DebInfo info = read_deb_info(deb);
        KernelResult result{info.package, info.version, info.architecture, "", deb, sha256_file_hex(deb)};
        ExtractOptions options;
        options.map = [](const std::string& name) -> std::optional<std::string> {
            if (name.starts_with("lib/modules/") || name.starts_with("usr/lib/modules/") || name == "lib/modules" || name == "usr/lib/modules")
                return "/" + name;
            return std::nullopt;
        };
        options.divert = [&](const std::string& name, archive* a) {
            if (!name.starts_with("boot/vmlinuz-")) return;
            result.release = name.substr(std::string("boot/vmlinuz-").size());
            copy_entry_data(a, vmlinuz, deb.string() + ": " + name);
        };
        extract_deb(deb, tree, options);
        if (result.release.empty()) {
            // A metapackage (it holds only documentation): follow its first linux-image-* dependency.
            std::string next;
            for (size_t pos = 0; pos < info.depends.size();) {
                size_t end = info.depends.find_first_of(",|", pos);
                std::string dep = info.depends.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
                dep.erase(0, dep.find_first_not_of(' '));
                dep = dep.substr(0, dep.find_first_of(" ("));
                if (dep.starts_with("linux-image-")) { next = dep; break; }
                if (end == std::string::npos) break;
                pos = end + 1;
            }
            if (next.empty()) fail(k.where + ": " + deb.filename().string() + " holds no /boot/vmlinuz-* and depends on no linux-image-* package");
            deb = fetch_deb(next, cache, k.where + ".package");
            continue;
        }
        return result;
    }
    fail(k.where + ": too many metapackages before a kernel");
}

void apply_step(Tree& tree, const Step& s, const fs::path& cache, json& inputs) {
    using K = Step::Kind;
    json input = {{"step", s.where}, {"type", std::string(step_kind_name(s.kind))}};
    switch (s.kind) {
        case K::Tree:
            add_host_tree(tree, s.source, s.path, s.where);
            input["source"] = s.source.string();
            input["sha256"] = tree_digest(s.source);
            break;
        case K::Tar: {
            ArchiveReader a = open_archive_file(s.source);
            ExtractOptions o;
            o.dest = s.path;
            extract_into(a.get(), tree, o, s.source.string());
            input["source"] = s.source.string();
            input["sha256"] = sha256_file_hex(s.source);
            break;
        }
        case K::Deb: {
            fs::path deb = s.package.empty() ? s.source : fetch_deb(s.package, cache, s.where + ".package");
            ExtractOptions o;
            o.dest = s.path;
            DebInfo info = extract_deb(deb, tree, o);
            input["package"] = info.package;
            input["version"] = info.version;
            input["architecture"] = info.architecture;
            input["source"] = deb.filename().string();
            input["sha256"] = sha256_file_hex(deb);
            break;
        }
        case K::HostFile: {
            if (!fs::is_regular_file(s.source)) fail(s.where + ".source: " + s.source.string() + " is not a regular file");
            tree.add_file_copy(s.path, s.source, step_meta(tree, s, host_mode(s.source)), s.where);
            input["source"] = s.source.string();
            input["sha256"] = sha256_file_hex(s.source);
            break;
        }
        case K::HostExec: {
            if (!fs::is_regular_file(s.source)) fail(s.where + ".source: " + s.source.string() + " is not a regular file");
            json libs = json::array();
            for (const auto& lib : add_host_executable(tree, s.source, s.path, step_meta(tree, s, host_mode(s.source)), s.where))
                libs.push_back({{"path", lib.string()}, {"sha256", sha256_file_hex(lib)}});
            input["source"] = s.source.string();
            input["sha256"] = sha256_file_hex(s.source);
            input["libraries"] = libs;
            break;
        }
        case K::File: {
            Meta meta = step_meta(tree, s, 0644);
            if (s.content) {
                tree.add_file(s.path, *s.content, meta, s.where);
                input["sha256"] = to_hex(sha256(*s.content));
            } else {
                if (!fs::is_regular_file(s.source)) fail(s.where + ".source: " + s.source.string() + " is not a regular file");
                tree.add_file_copy(s.path, s.source, meta, s.where);
                input["source"] = s.source.string();
                input["sha256"] = sha256_file_hex(s.source);
            }
            input["path"] = s.path;
            break;
        }
        case K::Directory:
            tree.add_directory(s.path, step_meta(tree, s, 0755), s.where);
            input["path"] = s.path;
            break;
        case K::Symlink:
            tree.add_symlink(s.path, s.target, step_meta(tree, s, 0777), s.where);
            input["path"] = s.path;
            break;
    }
    inputs.push_back(std::move(input));
}

// Every program in the finished tree can be loaded: a deb step brings a package, not what it
// depends on, so a program without its libraries would only fail on the device.
// The canonical image paths of every file dpkg installed (its info/*.list files).
std::set<std::string> dpkg_owned_paths(const Tree& tree) {
    std::set<std::string> owned;
    std::error_code ec;
    const fs::path info = tree.staging() / "var/lib/dpkg/info";
    for (auto it = fs::directory_iterator(info, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        if (it->path().extension() != ".list") continue;
        std::istringstream lines(read_file(it->path()));
        for (std::string line; std::getline(lines, line);) {
            if (line.empty() || line == "/." || line[0] != '/') continue;
            try {
                owned.insert(tree.resolve(line, "dpkg"));
            } catch (const Error&) {  // a path through a link that leaves the tree: not a file here
            }
        }
    }
    return owned;
}

// A program from a Debian package is dpkg's business: its dependencies were resolved by apt, and
// what it may lack is optional (a plugin's library that only a Recommends brings).
void fail_on_missing_libraries(const Tree& tree, const Recipe& recipe) {
    auto missing = missing_libraries(tree);
    if (missing.empty()) return;
    const std::set<std::string> packaged = dpkg_owned_paths(tree);
    std::erase_if(missing, [&](const MissingLibraries& m) { return packaged.count(m.path) > 0; });
    if (missing.empty()) return;
    std::string list;
    for (const auto& m : missing) {
        std::string needs;
        if (!m.interpreter.empty()) needs = m.interpreter + " (its interpreter)";
        for (const auto& lib : m.libraries) needs += (needs.empty() ? "" : ", ") + lib;
        list += (list.empty() ? "" : "; ") + m.path + " needs " + needs;
    }
    fail(recipe.file.string() + ": rootfs: the image lacks shared libraries its programs need: " + list +
         " (add the packages that hold them as deb steps, or host programs as host-exec steps, which bring their libraries)");
}

std::vector<uint8_t> verity_salt(const std::string& seed, const std::string& label) {
    Digest d = hmac_sha256(seed, "cairn:verity-salt:" + label);
    return {d.begin(), d.end()};
}


std::string attributes_text(uint64_t attrs) {
    std::string out;
    for (int bit = 0; bit < 64; ++bit)
        if (attrs >> bit & 1) out += (out.empty() ? "" : ",") + std::to_string(bit);
    return out;
}

}  // namespace

namespace stages {

void packages(BuildContext& c) {
    const Recipe::Packages& p = c.recipe.rootfs.packages;
    if (::geteuid() != 0)
        fail(p.where + ": installing Debian packages runs their maintainer scripts as root in a sandbox: build as root (sudo cairn build ...)");
    const PackageRequest request = package_request(c.recipe);
    bool from_file = false;
    const PackageLock lock = lock_for_build(c.recipe, request, c.cache, c.options.lock, &from_file);
    c.progress->note(std::to_string(lock.packages.size()) + " packages, " +
                     (from_file ? "as locked in " + c.options.lock.value_or(p.lock).string() : std::string("resolved by apt (no lock file)")));
    const std::vector<fs::path> debs = fetch_packages(lock, request, c.cache);
    InstallOptions o;
    o.epoch = c.epoch;
    o.where = p.where;
    install_packages(c.tree.staging(), lock, debs, o);
    c.tree.sync_with_staging(true);
    for (const auto& l : lock.packages) c.deb_sha256[{l.name, l.architecture}] = l.sha256;
    const fs::path lock_copy = c.work / "packages.lock";
    write_file_atomic(lock_copy, lock_text(lock));
    c.artifacts.push_back(lock_copy);
    c.packages = {{"count", lock.packages.size()}, {"lock", "packages.lock"}, {"from_lock_file", from_file},
                  {"lock_sha256", sha256_file_hex(lock_copy)}};
    c.inputs.push_back({{"type", "packages"}, {"count", lock.packages.size()}, {"sha256", sha256_file_hex(lock_copy)}});
}

void root_tree(BuildContext& c) {
    c.inputs.push_back({{"recipe", c.options.recipe.string()}, {"sha256", sha256_file_hex(c.options.recipe)}});
    for (const auto& s : c.recipe.rootfs.steps) apply_step(c.tree, s, c.cache, c.inputs);
    c.systemd = runs_systemd(c.tree);
}

void staging(BuildContext& c) {
    if (::geteuid() != 0) return;  // an ordinary user cannot mount; the tree stays on the disk
    const partitions::Partition* root = c.layout.find(c.layout.slots().empty() ? "root" : "root_a");
    const bool compressed = c.recipe.rootfs.filesystem == "erofs" && c.recipe.rootfs.compression != "none";
    auto size = staging_tmpfs_size(memory_available(), root ? root->size : 0, compressed);
    if (!size) return;
    // This process is the build's own child (imager/build.hpp): the mount ends with it.
    const fs::path dir = c.tree.staging().parent_path();
    mount_private_tmpfs(dir, *size);
    fs::create_directories(c.tree.staging());
    if (::chmod(c.tree.staging().c_str(), 0755) != 0) fail_errno(c.tree.staging().string());
}

// The kernel package's download (when not cached) and unpacking (xz, 100 MB of modules) need
// nothing from the packages: they run in a thread of their own while dpkg works, into a tree
// beside the staging tree (same filesystem), which the kernel stage moves in after the packages
// and the recipe's steps, as if it unpacked the package there itself.
void kernel_ahead(BuildContext& c) {
    const Recipe::Kernel k = c.recipe.kernel;
    const fs::path cache = c.cache, vmlinuz = c.work / outputs::vmlinuz, dir = c.tree.staging().parent_path() / "kernel";
    c.kernel_ahead = std::async(std::launch::async, [k, cache, vmlinuz, dir] {
        Tree tree(dir);
        KernelResult r = add_kernel(tree, k, cache, vmlinuz);
        return KernelAhead{r.package, r.version, r.architecture, r.release, r.sha256, r.deb, std::move(tree)};
    });
}

void kernel(BuildContext& c) {
    const fs::path vmlinuz = c.work / outputs::vmlinuz;
    KernelAhead k = c.kernel_ahead.get();
    c.tree.move_in(k.tree, c.recipe.kernel.where);
    remove_tree(k.tree.staging());
    // Debian runs depmod in the package's postinst; maintainer scripts never run here.
    const std::string modules = c.tree.resolve("/lib/modules/" + k.release, c.recipe.kernel.where);
    if (fs::exists(c.tree.host(modules))) run_checked({"depmod", "-b", c.tree.staging().string(), k.release});
    c.kernel = {{"package", k.package}, {"version", k.version}, {"release", k.release}, {"vmlinuz", outputs::vmlinuz},
                {"vmlinuz_sha256", sha256_file_hex(vmlinuz)}};
    c.inputs.push_back({{"step", "kernel"}, {"type", "deb"}, {"package", k.package}, {"version", k.version},
                        {"architecture", k.architecture}, {"source", k.deb.filename().string()}, {"sha256", k.sha256}});
    c.artifacts.push_back(vmlinuz);
    c.tree.sync_with_staging();  // depmod's files
}

// While the kernel's modules are at hand in the tree.
void initrd(BuildContext& c) {
    const fs::path image = c.work / outputs::initrd;
    InitrdSpec spec;
    spec.cairn_init = find_cairn_program("cairn-init", "initrd");
    spec.root_tree = c.tree.staging();
    spec.kernel_release = c.kernel["release"];
    spec.modules = c.recipe.boot.initrd_modules.empty() ? default_initrd_modules() : c.recipe.boot.initrd_modules;
    spec.debug_shell = c.recipe.boot.debug;
    spec.where = c.recipe.boot.where;
    size_t modules = build_initrd(spec, image, c.work, c.epoch);
    c.initrd = {{"file", outputs::initrd}, {"modules", modules}, {"size", fs::file_size(image)},
                {"sha256", sha256_file_hex(image)}, {"cairn_init_sha256", sha256_file_hex(spec.cairn_init)}};
    c.artifacts.push_back(image);
}

void device_files(BuildContext& c) {
    const Recipe& recipe = c.recipe;
    // os-release from the recipe's name and the version this build is (--image-version included);
    // one a deb step brought along in /usr/lib is replaced too. A dpkg-installed one (base-files)
    // stays as the package has it, so that `dpkg --verify` finds nothing changed: /etc/os-release,
    // read first by everyone, is the image's.
    c.os_release = os_release_text(recipe);
    c.tree.add_file("/etc/os-release", c.os_release, Meta{0, 0, 0644}, recipe.file.string() + ": os-release");
    if (auto m = c.tree.meta(c.tree.resolve("/usr/lib/os-release", "os-release")); m && S_ISREG(m->mode) && c.packages.is_null())
        c.tree.add_file("/usr/lib/os-release", c.os_release, Meta{0, 0, 0644}, recipe.file.string() + ": os-release");

    // The firewall, SSH, and what takes updates: the updater, its bus, the trust anchor, release.json.
    if (recipe.firewall.enabled) add_firewall_files(c.tree, recipe);
    if (recipe.provisioning.enabled) {
        c.progress->note("Adding the provisioning agent");
        add_provisioning_files(c.tree, recipe);
    }
    if (recipe.attestation.enabled && recipe.attestation.agent) {
        c.progress->note("Adding the attestation agent");
        add_attestation_agent_files(c.tree, recipe);
    }
    if (recipe.ssh.enabled) {
        c.progress->note("Adding sshd");
        for (json& in : add_ssh_files(c.tree, recipe, c.cache, c.work)) c.inputs.push_back(std::move(in));
    }
    // From what went in, not from where it was: host paths (the recipe's folder, step locations)
    // stay out, so a build elsewhere or by someone else gives the same id and the same root.
    json content = json::array();
    for (const json& in : c.inputs) {
        json item = in;
        for (const char* host_key : {"recipe", "step", "source"}) item.erase(host_key);
        content.push_back(item);
    }
    if (!recipe.update.config.empty()) content.push_back({{"update_config", sha256_file_hex(recipe.update.config)}});
    c.build_id = to_hex(sha256(content.dump() + "\n" + recipe.version + "\n" + std::to_string(c.epoch))).substr(0, 16);
    if (recipe.update.enabled) {
        c.progress->note("Adding the updater");
        json release = add_update_files(c.tree, recipe, c.build_id, c.epoch);
        c.update = {{"compatible", recipe.compatible}, {"version", recipe.version}, {"build_id", c.build_id}, {"etc", release["etc"]},
                    {"trust_anchor", read_file(recipe.update.trust_anchor)}};  // what `cairn bundle` checks signers against
    }
    if (c.systemd) {
        c.progress->note("Adding the systemd units");
        add_systemd_units(c.tree, recipe, c.kernel.is_null() ? std::string() : c.kernel["release"].get<std::string>());
    }
}

void check_libraries(BuildContext& c) { fail_on_missing_libraries(c.tree, c.recipe); }

void sbom(BuildContext& c) {
    sbom::Bom bom;
    bom.image = {c.recipe.name, c.recipe.version, c.build_id, c.epoch, cairn::version(), "debian-12"};
    // Debian packages: those dpkg installed (its status file, with their .debs' sha256 from the
    // lock), then those unpacked by deb steps, the kernel and sshd's.
    const auto& locked = c.deb_sha256;
    std::set<std::string> listed;
    std::error_code ec;
    if (fs::exists(c.tree.staging() / "var/lib/dpkg/status", ec)) {
        for (auto& p : sbom::read_installed_packages(c.tree.staging())) {
            if (auto it = locked.find({p.name, p.architecture}); it != locked.end()) p.sha256 = it->second;
            listed.insert(p.name);
            bom.packages.push_back(std::move(p));
        }
    }
    for (const json& in : c.inputs) {
        if (!in.contains("package") || !in.contains("version") || !in.contains("sha256")) continue;
        sbom::DebPackage p;
        p.name = in["package"];
        if (!listed.insert(p.name).second) continue;
        p.version = in["version"];
        p.architecture = in.value("architecture", "amd64");
        p.sha256 = in["sha256"];
        p.license = sbom::read_package_license(c.tree.staging(), p.name);
        bom.packages.push_back(std::move(p));
    }
    // Cairn's own programs, as they are in the image.
    for (const char* path : {update_paths::firewall, update_paths::updated, provisioning_paths::agent, update_paths::cairnctl,
                             provisioning_paths::cli, attestation_paths::agent, attestation_paths::cli}) {
        auto m = c.tree.meta(path);
        if (!m || !S_ISREG(m->mode)) continue;
        bom.programs.push_back({fs::path(path).filename().string(), path, cairn::version(), sha256_file_hex(c.tree.host(path))});
    }
    if (c.initrd.is_object())
        bom.programs.push_back({"cairn-init", "/init (initrd)", cairn::version(), c.initrd["cairn_init_sha256"].get<std::string>()});
    // The files the recipe adds.
    for (const json& in : c.inputs) {
        if (in.contains("path") && in.contains("sha256") && in["path"].is_string()) bom.files.push_back({in["path"], in["sha256"]});
        if (in.contains("libraries"))  // a host-exec step's libraries, from the build host
            for (const json& lib : in["libraries"]) bom.files.push_back({lib["path"], lib["sha256"]});
    }
    const fs::path file = c.work / sbom::output_name;
    write_file_atomic(file, sbom::to_cyclonedx_text(bom));
    c.sbom = {{"file", sbom::output_name}, {"format", "CycloneDX 1.5"}, {"packages", bom.packages.size()}, {"sha256", sha256_file_hex(file)}};
    c.artifacts.push_back(file);
}

void image_var(BuildContext& c) {
    const size_t seeded = move_var_to_factory(c.tree.staging());
    c.tree.sync_with_staging(true);
    c.progress->note("/var of the packages: " + std::to_string(seeded) + " entries seeded on the device from " + systemd_paths::factory_var);
}

void early_boot(BuildContext& c) {
    if (!c.systemd) return;
    const EarlyBootLists lists = add_early_boot(c.tree);
    c.progress->note("Early boot: cairn-init loads " + std::to_string(lists.modules) + " modules (" + initrd::boot_modules_list + ") and mounts " +
                     std::to_string(lists.mounts) + " filesystems (" + initrd::boot_mounts_list + ") for systemd");
}

void read_ahead(BuildContext& c) {
    if (!c.systemd) return;  // known once the packages are in
    const size_t files = add_boot_read_ahead(c.tree);
    c.progress->note("Read-ahead at boot: " + std::to_string(files) + " files (" + initrd::read_ahead_list + ")");
}

void root_filesystem(BuildContext& c) {
    const partitions::Partition& root_part = c.layout.get(c.layout.slots().empty() ? "root" : "root_a");
    RootfsOptions o;
    o.filesystem = c.recipe.rootfs.filesystem;
    o.compression = c.recipe.rootfs.compression;
    o.uuid = Uuid::derive(c.recipe.seed, "cairn:rootfs-uuid");
    o.epoch = c.epoch;
    o.max_size = root_part.size;
    o.partition = root_part.label;
    o.where = c.recipe.file.string();
    o.runner = c.tree.apply_metadata(c.epoch, c.work);
    for (const auto& [path, meta] : c.tree.entries())
        if (S_ISDIR(meta.mode)) o.directories.push_back(path);
    c.rootfs_image = c.work / outputs::rootfs;
    c.rootfs_size = make_root_filesystem(c.tree.staging(), c.rootfs_image, o);
    c.rootfs_uuid = o.uuid;
    c.artifacts.push_back(c.rootfs_image);
    remove_staging(c.tree.staging().parent_path());  // the tree and the tmpfs it is on (staging)
}

// Each slot its own salt, so each slot has its own root hash and PARTUUIDs.
void verity(BuildContext& c) {
    UniqueFd data = open_file(c.rootfs_image, O_RDONLY);
    for (auto& r : c.roots) {
        r.params.data_blocks = c.rootfs_size / 4096;
        r.params.salt = verity_salt(c.recipe.seed, r.root_label);
        r.params.uuid = Uuid::derive(c.recipe.seed, "cairn:verity-uuid:" + r.root_label);
        r.hash_file = c.work / (r.root_label + ".verity");
        UniqueFd hash = open_file(r.hash_file, O_RDWR | O_CREAT | O_TRUNC, 0644);
        r.result = verity::format(data.get(), 0, hash.get(), 0, r.params, 0,
                                  [&](uint64_t done, uint64_t total) { c.progress->fraction(done, total); });
        const auto& vp = c.layout.get(r.verity_label);
        if (r.result.hash_size > vp.size)
            fail(c.recipe.file.string() + ": rootfs: the verity hash tree (" + format_size(r.result.hash_size) + ") does not fit in partition " + vp.label + " (" +
                 format_size(vp.size) + "); make root-verity larger or leave its size out (auto)");
        // Discoverable Partitions: the root and its verity partition are named by the root hash.
        c.layout.get(r.root_label).uuid = Uuid::from_bytes(r.result.root_hash.data());
        c.layout.get(r.verity_label).uuid = Uuid::from_bytes(r.result.root_hash.data() + 16);
        c.artifacts.push_back(r.hash_file);
    }
}

// One per slot: the command line carries the slot's root hash, so the signature covers the root
// filesystem.
void ukis(BuildContext& c) {
    const Recipe& recipe = c.recipe;
    const SigningKey key{recipe.boot.key, recipe.boot.cert, recipe.boot.key_passphrase};
    struct Made {
        char slot;
        std::string name, cmdline;
    };
    // Each slot's UKI is assembled (objcopy) and signed in a thread of its own: they share
    // nothing but their inputs, and the results are recorded in slot order afterwards.
    std::vector<std::future<Made>> making;
    for (const auto& r : c.roots) {
        std::string cmdline = "cairn.slot=" + std::string(1, r.slot ? r.slot : 'a') + " cairn.disk=" + c.layout.disk_guid.str();
        if (recipe.rootfs.verity) cmdline += " cairn.roothash=" + to_hex(r.result.root_hash);
        else cmdline += " cairn.verity=off";
        cmdline += " cairn.rootfs=" + recipe.rootfs.filesystem;
        if (recipe.boot.log_mount != "/var/log") cmdline += " cairn.log=" + recipe.boot.log_mount;
        if (recipe.boot.init != "/sbin/init") cmdline += " cairn.init=" + recipe.boot.init;
        if (recipe.boot.debug) cmdline += " cairn.debug=shell";
        // cairn-init mounted every partition: systemd must not mount partitions it finds by type.
        if (c.systemd) cmdline += " systemd.gpt_auto=0";
        cmdline += " panic=10";
        if (!recipe.boot.cmdline.empty()) cmdline += " " + recipe.boot.cmdline;
        UkiParts parts;
        parts.kernel = c.work / outputs::vmlinuz;
        parts.initrd = c.work / outputs::initrd;
        parts.cmdline = cmdline;
        parts.os_release = c.os_release;
        parts.uname = c.kernel["release"];
        Made made{r.slot, "uki_" + std::string(1, r.slot ? r.slot : 'a') + ".efi", cmdline};
        making.push_back(std::async(std::launch::async, [parts, made, key, work = c.work, epoch = c.epoch] {
            const fs::path unsigned_uki = work / (made.name + ".unsigned");
            assemble_uki(parts, unsigned_uki);
            sign_pe(unsigned_uki, work / made.name, key, epoch);
            fs::remove(unsigned_uki);
            return made;
        }));
    }
    std::vector<Made> made;
    for (auto& m : making) made.push_back(m.get());  // every thread ends before an error goes on
    for (const auto& m : made) {
        const fs::path file = c.work / m.name;
        c.ukis[m.slot] = file;
        c.uki[std::string(1, m.slot ? m.slot : '-')] = {{"file", m.name}, {"cmdline", m.cmdline}, {"sha256", sha256_file_hex(file)}};
        c.artifacts.push_back(file);
    }
}

// What a good boot of each slot measures, from its signed UKI; with [attestation] the document is
// signed, and goes beside the build's output and onto every ESP (the command line, which the PCRs
// cover, holds the root hash: the document cannot live in the root filesystem).
void reference(BuildContext& c) {
    const Recipe& recipe = c.recipe;
    attestation::ReferenceDocument& doc = c.reference;
    doc.image = recipe.name;
    doc.version = recipe.version;
    doc.uki_signer_certificate = certificate_sha256(recipe.boot.cert);
    const std::vector<std::string> phases = pcrphase_words(c.tree);
    std::string words;
    for (const auto& w : phases) words += (words.empty() ? "" : ", ") + w;
    c.progress->note(phases.empty() ? "PCR 11: the stub's value only (no systemd-pcrphase in the image)"
                                    : "PCR 11: the stub's value, then after systemd-pcrphase's " + words);
    for (const auto& r : c.roots) {
        const char slot = r.slot ? r.slot : 'a';  // the command line of an image without slots names a
        doc.slots.push_back(measure_uki(c.ukis.at(r.slot), std::string(1, slot), c.kernel["release"], phases));
    }
    if (!recipe.attestation.enabled) return;
    const std::string text = attestation::to_json(doc);
    const fs::path file = c.work / outputs::reference, sig = c.work / outputs::reference_sig;
    write_file_atomic(file, text);
    write_file_atomic(sig, sign_reference(text, recipe, c.epoch));
    c.reference_files = {{esp_reference, file}, {esp_reference_sig, sig}};
    c.artifacts.push_back(file);
    c.artifacts.push_back(sig);
}

void esps(BuildContext& c) {
    for (const auto& p : c.layout.partitions) {
        if (p.role != Role::Esp) continue;
        Digest id = hmac_sha256(c.recipe.seed, "cairn:esp-volume-id:" + p.label);
        const uint32_t volume_id = uint32_t(id[0]) << 24 | uint32_t(id[1]) << 16 | uint32_t(id[2]) << 8 | id[3];
        std::string label = p.label;
        std::transform(label.begin(), label.end(), label.begin(), ::toupper);
        std::vector<std::pair<std::string, fs::path>> files;
        if (auto it = c.ukis.find(p.slot); it != c.ukis.end()) {
            files.push_back({"EFI/BOOT/BOOTX64.EFI", it->second});
            files.insert(files.end(), c.reference_files.begin(), c.reference_files.end());
        }
        if (c.recipe.update.enabled && p.slot && c.ukis.count(p.slot)) {
            // An ESP that updates write: made just big enough for its UKI (a complete FAT
            // filesystem of its own size at the start of the partition), and the same image goes
            // into the disk, so that a fresh device holds what an update writes and an update
            // from a server finds the unchanged parts of the UKI where the next one puts them.
            uint64_t uki_size = fs::file_size(c.ukis[p.slot]);
            uint64_t size = (uki_size + uki_size / 16 + (2 << 20) + (1 << 20) - 1) / (1 << 20) * (1 << 20);
            const std::string name = p.label + ".img";
            make_esp(c.work / name, std::min<uint64_t>(size, p.size), label.substr(0, 11), volume_id, files, c.epoch);
            c.esp_images[p.label] = c.work / name;
            c.update["esp"][std::string(1, p.slot)] = {{"file", name}, {"sha256", sha256_file_hex(c.work / name)}};
            c.artifacts.push_back(c.work / name);
            continue;
        }
        fs::path image = c.work / (p.label + ".vfat");
        make_esp(image, p.size, label.substr(0, 11), volume_id, files, c.epoch);
        c.esp_images[p.label] = image;
    }
}

// The roots go into disk.raw as soon as the root filesystem is made, and the kernel starts
// writing them out (sync_file_range: no waiting) while verity, the UKIs and the ESPs are made;
// the disk stage adds the rest and waits for all of it (fsync).
void disk_roots(BuildContext& c) {
    c.disk = c.work / outputs::disk;
    UniqueFd fd = open_file(c.disk, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (::ftruncate(fd.get(), static_cast<off_t>(c.layout.disk_size)) != 0) fail_errno("sizing " + c.disk.string());
    UniqueFd root_fd = open_file(c.rootfs_image, O_RDONLY);
    for (const auto& r : c.roots)
        copy_sparse(root_fd.get(), 0, fd.get(), c.layout.get(r.root_label).offset, c.rootfs_size, c.rootfs_image.string());
    // Starting the write-out blocks while the device's queue is full: a thread of its own does it.
    c.disk_writeback = std::async(std::launch::async, [fd = std::make_shared<UniqueFd>(std::move(fd)), disk = c.disk] {
        if (::sync_file_range(fd->get(), 0, 0, SYNC_FILE_RANGE_WRITE) != 0) fail_errno("writing out " + disk.string());
    });
}

void disk(BuildContext& c) {
    c.disk_writeback.get();
    {
        UniqueFd fd = open_file(c.disk, O_RDWR);
        for (const auto& r : c.roots) {
            if (!c.recipe.rootfs.verity) continue;
            UniqueFd hash_fd = open_file(r.hash_file, O_RDONLY);
            copy_sparse(hash_fd.get(), 0, fd.get(), c.layout.get(r.verity_label).offset, r.result.hash_size, r.hash_file.string());
        }
        for (const auto& [label, image] : c.esp_images) {
            UniqueFd esp = open_file(image, O_RDONLY);
            copy_sparse(esp.get(), 0, fd.get(), c.layout.get(label).offset, fs::file_size(image), image.string());
        }
        for (const auto& p : c.layout.partitions) {
            if (!partitions::formats_on_first_boot(p.role)) continue;
            const std::string marker = partitions::blank_marker(p.uuid);
            pwrite_exact(fd.get(), marker.data(), marker.size(), p.offset, c.disk.string() + " (" + p.label + ")");
        }
        if (::fsync(fd.get()) != 0) fail_errno("syncing " + c.disk.string());
    }
    partitions::write_gpt(c.disk, partitions::to_gpt(c.layout));
    c.artifacts.insert(c.artifacts.begin(), c.disk);
}

void disk_formats(BuildContext& c) {
    c.disk_formats = write_disk_formats(c.disk, c.options.formats, c.work, [&](const std::string& line) { c.progress->note(line); });
    for (const auto& f : c.disk_formats) c.artifacts.push_back(c.work / f["file"].get<std::string>());
}

void manifest(BuildContext& c) {
    const Recipe& recipe = c.recipe;
    json& m = c.manifest;
    m["format"] = 1;
    m["cairn_version"] = cairn::version();
    m["debug"] = recipe.boot.debug;  // a root shell on the console: `cairn bundle` refuses it without --allow-debug
    m["update"] = c.update;
    m["recipe"] = {{"name", recipe.name}, {"version", recipe.version}, {"compatible", recipe.compatible}, {"file", c.options.recipe.string()}};
    m["source_date_epoch"] = c.epoch;
    m["disk"] = {{"file", outputs::disk}, {"size", c.layout.disk_size}, {"guid", c.layout.disk_guid.str()}, {"formats", c.disk_formats}};
    json parts = json::array();
    for (const auto& p : c.layout.partitions) {
        json j = {{"label", p.label}, {"role", std::string(partitions::role_name(p.role))}, {"type", p.type.str()}, {"uuid", p.uuid.str()},
                  {"offset", p.offset}, {"size", p.size}, {"attributes", attributes_text(p.attributes)}};
        if (p.slot) j["slot"] = std::string(1, p.slot);
        parts.push_back(j);
    }
    m["partitions"] = parts;
    m["rootfs"] = {{"filesystem", recipe.rootfs.filesystem}, {"compression", recipe.rootfs.compression}, {"image", outputs::rootfs},
                   {"size", c.rootfs_size}, {"sha256", sha256_file_hex(c.rootfs_image)}, {"uuid", c.rootfs_uuid.str()}};
    json slots = json::object();
    for (const auto& r : c.roots) {
        json s = {{"root", r.root_label}, {"filesystem", recipe.rootfs.filesystem}, {"filesystem_size", c.rootfs_size}};
        if (const auto* esp = c.layout.find(partitions::label_for(Role::Esp, r.slot))) s["esp"] = esp->label;
        if (recipe.rootfs.verity) {
            s["verity"] = {{"partition", r.verity_label}, {"artifact", r.hash_file.filename().string()}, {"root_hash", to_hex(r.result.root_hash)},
                           {"salt", to_hex(r.params.salt)}, {"uuid", r.params.uuid.str()}, {"hash_algorithm", "sha256"},
                           {"data_block_size", r.params.data_block_size}, {"hash_block_size", r.params.hash_block_size},
                           {"data_blocks", r.params.data_blocks}, {"hash_size", r.result.hash_size},
                           {"sha256", sha256_file_hex(r.hash_file)}};
        }
        slots[r.slot ? std::string(1, r.slot) : std::string("-")] = s;
    }
    m["slots"] = slots;
    m["kernel"] = c.kernel;
    m["initrd"] = c.initrd;
    m["uki"] = recipe.boot.enabled ? c.uki : json(nullptr);
    // What a good boot of each slot measures (attestation/reference.hpp), and where the signed
    // document is ([attestation]; null without).
    m["reference"] = recipe.boot.enabled ? json::parse(attestation::to_json(c.reference)) : json(nullptr);
    m["reference_document"] = c.reference_files.empty()
                                  ? json(nullptr)
                                  : json{{"file", outputs::reference}, {"signature", outputs::reference_sig},
                                         {"esp", {"/" + std::string(esp_reference), "/" + std::string(esp_reference_sig)}},
                                         {"sha256", sha256_file_hex(c.reference_files[0].second)}};
    m["sbom"] = c.sbom;
    m["packages"] = c.packages;
    m["inputs"] = c.inputs;
}

void publish(BuildContext& c) {
    // A manifest from an earlier build goes first: until the new one lands, the folder does not
    // look finished.
    std::error_code ec;
    fs::remove(c.options.out_dir / outputs::manifest, ec);
    // A converted disk from an earlier build that this one does not write would not match the
    // new disk.raw: it goes.
    for (DiskFormat f : all_disk_formats)
        if (f != DiskFormat::Raw) fs::remove(c.options.out_dir / ("disk." + std::string(disk_format_name(f))), ec);
    for (const auto& a : c.artifacts) {
        fs::rename(a, c.options.out_dir / a.filename(), ec);
        if (ec) fail("moving " + a.filename().string() + " into " + c.options.out_dir.string() + ": " + ec.message());
    }
    write_file_atomic(c.options.out_dir / outputs::manifest, c.manifest.dump(2) + "\n");
}

}  // namespace stages

}  // namespace cairn::imager
