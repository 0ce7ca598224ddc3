#include "imager/build.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/progress.hpp"
#include "common/subprocess.hpp"
#include "common/units.hpp"
#include "common/version.hpp"
#include "imager/archive.hpp"
#include "imager/deb.hpp"
#include "imager/disk_formats.hpp"
#include "imager/elf.hpp"
#include "imager/esp.hpp"
#include "imager/provisioning.hpp"
#include "imager/ssh.hpp"
#include "imager/update.hpp"
#include "imager/filesystem.hpp"
#include "imager/initrd.hpp"
#include "imager/recipe.hpp"
#include "imager/tree.hpp"
#include "imager/uki.hpp"
#include "imager/verity.hpp"
#include "partitions/gpt.hpp"
#include "partitions/layout.hpp"
#include "updater/bundle.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using nlohmann::json;
using partitions::Role;

namespace {

int64_t build_epoch(const BuildOptions& o) {
    if (o.epoch) return *o.epoch;
    if (const char* e = std::getenv("SOURCE_DATE_EPOCH"); e && *e) {
        char* end = nullptr;
        long long v = std::strtoll(e, &end, 10);
        if (*end || v < 0) fail("SOURCE_DATE_EPOCH: '" + std::string(e) + "' is not a number of seconds");
        return v;
    }
    return static_cast<int64_t>(std::time(nullptr));
}

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
        std::string rel = fs::relative(p, dir).string();
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
        std::string image = image_join(dest, fs::relative(e.path(), dir).string(), where);
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
    std::string package, version, release;
    fs::path deb;
    std::string sha256;
};

// The kernel package: its modules go into the tree, its vmlinuz to `vmlinuz`. A metapackage
// (linux-image-cloud-amd64) is followed to the linux-image-* package it depends on.
KernelResult add_kernel(Tree& tree, const Recipe::Kernel& k, const fs::path& cache, const fs::path& vmlinuz) {
    fs::path deb = k.deb.empty() ? fetch_deb(k.package, cache, k.where + ".package") : k.deb;
    for (int depth = 0; depth < 3; ++depth) {
        DebInfo info = read_deb_info(deb);
        KernelResult result{info.package, info.version, "", deb, sha256_file_hex(deb)};
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
        // Debian runs depmod in the package's postinst; maintainer scripts never run here.
        std::string modules = tree.resolve("/lib/modules/" + result.release, k.where);
        if (fs::exists(tree.host(modules))) run_checked({"depmod", "-b", tree.staging().string(), result.release});
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
void check_libraries(const Tree& tree, const Recipe& recipe) {
    const auto missing = missing_libraries(tree);
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

struct SlotRoot {
    char slot;
    std::string root_label, verity_label;
    verity::Params params;
    verity::Result result;
    fs::path hash_file;
};

std::string attributes_text(uint64_t attrs) {
    std::string out;
    for (int bit = 0; bit < 64; ++bit)
        if (attrs >> bit & 1) out += (out.empty() ? "" : ",") + std::to_string(bit);
    return out;
}

json build(const BuildOptions& options, const fs::path& work) {
    const int64_t epoch = build_epoch(options);
    Recipe recipe = load_recipe(options.recipe);
    for (const auto& w : recipe.warnings) std::fprintf(stderr, "cairn: warning: %s\n", w.c_str());
    if (options.debug) {
        if (!recipe.boot.enabled) fail(options.recipe.string() + ": --debug needs a [boot] section (there is nothing to boot)");
        recipe.boot.debug = true;
    }
    if (options.version) {
        if (auto problem = updater::version_problem(*options.version))
            fail("--image-version: '" + *options.version + "' is not a version (" + *problem + ")");
        recipe.version = *options.version;
    }
    partitions::Layout layout = partitions::plan(recipe.layout);
    const fs::path cache = options.cache.empty() ? default_cache_dir() : options.cache;
    const std::vector<char> slots = layout.slots();

    std::error_code ec;

    const int steps = 5 + (recipe.kernel.enabled ? 1 : 0) + (recipe.rootfs.verity ? 1 : 0) + (recipe.boot.enabled ? 2 : 0);
    Progress progress(steps, options.progress);

    // 1. The root tree.
    progress.step("Assembling the root tree (" + std::to_string(recipe.rootfs.steps.size()) + " steps)");
    Tree tree(work / "tree");
    json inputs = json::array();
    inputs.push_back({{"recipe", options.recipe.string()}, {"sha256", sha256_file_hex(options.recipe)}});
    for (const auto& s : recipe.rootfs.steps) apply_step(tree, s, cache, inputs);

    // 2. The kernel.
    json kernel_json = nullptr;
    if (recipe.kernel.enabled) {
        progress.step("Adding the kernel (" + (recipe.kernel.deb.empty() ? recipe.kernel.package : recipe.kernel.deb.filename().string()) + ")");
        KernelResult k = add_kernel(tree, recipe.kernel, cache, work / outputs::vmlinuz);
        kernel_json = {{"package", k.package}, {"version", k.version}, {"release", k.release}, {"vmlinuz", outputs::vmlinuz},
                       {"vmlinuz_sha256", sha256_file_hex(work / outputs::vmlinuz)}};
        inputs.push_back({{"step", "kernel"}, {"type", "deb"}, {"package", k.package}, {"version", k.version},
                          {"source", k.deb.filename().string()}, {"sha256", k.sha256}});
    }
    tree.sync_with_staging();

    // 2b. The initrd, while the kernel's modules are at hand in the tree.
    json initrd_json = nullptr;
    const fs::path initrd_image = work / outputs::initrd;
    if (recipe.boot.enabled) {
        progress.step("Building the initrd");
        InitrdSpec spec;
        spec.cairn_init = find_cairn_program("cairn-init", "initrd");
        spec.root_tree = tree.staging();
        spec.kernel_release = kernel_json["release"];
        spec.modules = recipe.boot.initrd_modules.empty() ? default_initrd_modules() : recipe.boot.initrd_modules;
        spec.debug_shell = recipe.boot.debug;
        spec.where = recipe.boot.where;
        size_t modules = build_initrd(spec, initrd_image, work, epoch);
        initrd_json = {{"file", outputs::initrd}, {"modules", modules}, {"size", fs::file_size(initrd_image)},
                       {"sha256", sha256_file_hex(initrd_image)}, {"cairn_init_sha256", sha256_file_hex(spec.cairn_init)}};
    }
    // os-release from the recipe's name and the version this build is (--image-version included);
    // one a package brought along in /usr/lib is replaced too.
    const std::string os_release = os_release_text(recipe);
    tree.add_file("/etc/os-release", os_release, Meta{0, 0, 0644}, recipe.file.string() + ": os-release");
    if (auto m = tree.meta(tree.resolve("/usr/lib/os-release", "os-release")); m && S_ISREG(m->mode))
        tree.add_file("/usr/lib/os-release", os_release, Meta{0, 0, 0644}, recipe.file.string() + ": os-release");

    // 2c. The firewall, SSH, and what takes updates: the updater, its bus, the trust anchor, release.json.
    if (recipe.firewall.enabled) add_firewall_files(tree, recipe);
    if (recipe.provisioning.enabled) {
        progress.note("Adding the provisioning agent");
        add_provisioning_files(tree, recipe);
    }
    if (recipe.ssh.enabled) {
        progress.note("Adding sshd");
        for (json& in : add_ssh_files(tree, recipe, cache, work)) inputs.push_back(std::move(in));
    }
    json update_json = nullptr;
    if (recipe.update.enabled) {
        progress.note("Adding the updater");
        // From what went in, not from where it was: host paths (the recipe's folder, step locations)
        // stay out, so a build elsewhere or by someone else gives the same id and the same root.
        json content = json::array();
        for (const json& in : inputs) {
            json c = in;
            for (const char* host_key : {"recipe", "step", "source"}) c.erase(host_key);
            content.push_back(c);
        }
        std::string build_id = to_hex(sha256(content.dump() + "\n" + recipe.version + "\n" + std::to_string(epoch))).substr(0, 16);
        json release = add_update_files(tree, recipe, build_id, epoch);
        update_json = {{"compatible", recipe.compatible}, {"version", recipe.version}, {"build_id", build_id}, {"etc", release["etc"]},
                       {"trust_anchor", read_file(recipe.update.trust_anchor)}};  // what `cairn bundle` checks signers against
    }

    check_libraries(tree, recipe);

    // 3. The root filesystem.
    const partitions::Partition& root_part = layout.get(slots.empty() ? "root" : "root_a");
    progress.step("Making the " + recipe.rootfs.filesystem + " root filesystem (" + std::to_string(tree.entries().size()) + " entries)");
    RootfsOptions fs_options;
    fs_options.filesystem = recipe.rootfs.filesystem;
    fs_options.compression = recipe.rootfs.compression;
    fs_options.uuid = Uuid::derive(recipe.seed, "cairn:rootfs-uuid");
    fs_options.epoch = epoch;
    fs_options.max_size = root_part.size;
    fs_options.partition = root_part.label;
    fs_options.where = recipe.file.string();
    fs_options.runner = tree.apply_metadata(epoch, work);
    for (const auto& [path, meta] : tree.entries())
        if (S_ISDIR(meta.mode)) fs_options.directories.push_back(path);
    const fs::path rootfs_image = work / outputs::rootfs;
    const uint64_t rootfs_size = make_root_filesystem(tree.staging(), rootfs_image, fs_options);
    remove_tree(tree.staging());

    // 4. Verity for each slot: its own salt, so each slot has its own root hash and PARTUUIDs.
    std::vector<SlotRoot> roots;
    for (const auto& p : layout.partitions) {
        if (p.role != Role::Root) continue;
        SlotRoot r;
        r.slot = p.slot;
        r.root_label = p.label;
        r.verity_label = p.slot ? partitions::label_for(Role::RootVerity, p.slot) : "root_verity";
        roots.push_back(r);
    }
    if (recipe.rootfs.verity) {
        progress.step("Computing dm-verity hash trees (" + std::to_string(roots.size()) + " slots)");
        UniqueFd data = open_file(rootfs_image, O_RDONLY);
        for (auto& r : roots) {
            r.params.data_blocks = rootfs_size / 4096;
            r.params.salt = verity_salt(recipe.seed, r.root_label);
            r.params.uuid = Uuid::derive(recipe.seed, "cairn:verity-uuid:" + r.root_label);
            r.hash_file = work / (r.root_label + ".verity");
            UniqueFd hash = open_file(r.hash_file, O_RDWR | O_CREAT | O_TRUNC, 0644);
            r.result = verity::format(data.get(), 0, hash.get(), 0, r.params, 0,
                                      [&](uint64_t done, uint64_t total) { progress.fraction(done, total); });
            const auto& vp = layout.get(r.verity_label);
            if (r.result.hash_size > vp.size)
                fail(recipe.file.string() + ": rootfs: the verity hash tree (" + format_size(r.result.hash_size) + ") does not fit in partition " + vp.label + " (" +
                     format_size(vp.size) + "); make root-verity larger or leave its size out (auto)");
            // Discoverable Partitions: the root and its verity partition are named by the root hash.
            layout.get(r.root_label).uuid = Uuid::from_bytes(r.result.root_hash.data());
            layout.get(r.verity_label).uuid = Uuid::from_bytes(r.result.root_hash.data() + 16);
        }
    }

    // 5. Unified kernel images (one per slot: the command line carries the slot's root hash, so
    // the signature covers the root filesystem), then the EFI System Partitions that hold them.
    std::map<char, fs::path> ukis;
    json uki_json = json::object();
    if (recipe.boot.enabled) {
        progress.step("Making and signing the unified kernel images");
        SigningKey key{recipe.boot.key, recipe.boot.cert, recipe.boot.key_passphrase};
        for (const auto& r : roots) {
            std::string cmdline = "cairn.slot=" + std::string(1, r.slot ? r.slot : 'a') + " cairn.disk=" + layout.disk_guid.str();
            if (recipe.rootfs.verity) cmdline += " cairn.roothash=" + to_hex(r.result.root_hash);
            else cmdline += " cairn.verity=off";
            cmdline += " cairn.rootfs=" + recipe.rootfs.filesystem;
            if (recipe.boot.log_mount != "/var/log") cmdline += " cairn.log=" + recipe.boot.log_mount;
            if (recipe.boot.init != "/sbin/init") cmdline += " cairn.init=" + recipe.boot.init;
            if (recipe.boot.debug) cmdline += " cairn.debug=shell";
            cmdline += " panic=10";
            if (!recipe.boot.cmdline.empty()) cmdline += " " + recipe.boot.cmdline;
            UkiParts parts;
            parts.kernel = work / outputs::vmlinuz;
            parts.initrd = initrd_image;
            parts.cmdline = cmdline;
            parts.os_release = os_release;
            parts.uname = kernel_json["release"];
            std::string name = "uki_" + std::string(1, r.slot ? r.slot : 'a') + ".efi";
            fs::path unsigned_uki = work / (name + ".unsigned");
            assemble_uki(parts, unsigned_uki);
            sign_pe(unsigned_uki, work / name, key, epoch);
            fs::remove(unsigned_uki);
            ukis[r.slot] = work / name;
            uki_json[std::string(1, r.slot ? r.slot : '-')] = {{"file", name}, {"cmdline", cmdline}, {"sha256", sha256_file_hex(work / name)}};
        }
    }
    progress.step("Making the EFI System Partitions");
    std::map<std::string, fs::path> esp_images;
    std::vector<fs::path> bundle_esps;
    for (const auto& p : layout.partitions) {
        if (p.role != Role::Esp) continue;
        Digest id = hmac_sha256(recipe.seed, "cairn:esp-volume-id:" + p.label);
        std::string label = p.label;
        std::transform(label.begin(), label.end(), label.begin(), ::toupper);
        fs::path image = work / (p.label + ".vfat");
        std::vector<std::pair<std::string, fs::path>> files;
        if (auto it = ukis.find(p.slot); it != ukis.end()) files.push_back({"EFI/BOOT/BOOTX64.EFI", it->second});
        make_esp(image, p.size, label.substr(0, 11), uint32_t(id[0]) << 24 | uint32_t(id[1]) << 16 | uint32_t(id[2]) << 8 | id[3], files, epoch);
        esp_images[p.label] = image;
        // For bundles: the same ESP made just big enough for its UKI. Written at the start of the
        // partition, it is a complete FAT filesystem of its own size.
        if (recipe.update.enabled && p.slot && ukis.count(p.slot)) {
            uint64_t uki_size = fs::file_size(ukis[p.slot]);
            uint64_t size = (uki_size + uki_size / 16 + (2 << 20) + (1 << 20) - 1) / (1 << 20) * (1 << 20);
            const std::string name = p.label + ".img";
            make_esp(work / name, std::min<uint64_t>(size, p.size), label.substr(0, 11),
                     uint32_t(id[0]) << 24 | uint32_t(id[1]) << 16 | uint32_t(id[2]) << 8 | id[3], files, epoch);
            update_json["esp"][std::string(1, p.slot)] = {{"file", name}, {"sha256", sha256_file_hex(work / name)}};
            bundle_esps.push_back(work / name);
        }
    }

    // 6. The disk.
    progress.step("Writing " + std::string(outputs::disk) + " (" + format_size(layout.disk_size) + ", sparse)");
    const fs::path disk = work / outputs::disk;
    {
        UniqueFd fd = open_file(disk, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (::ftruncate(fd.get(), static_cast<off_t>(layout.disk_size)) != 0) fail_errno("sizing " + disk.string());
        UniqueFd root_fd = open_file(rootfs_image, O_RDONLY);
        for (const auto& r : roots) {
            const auto& p = layout.get(r.root_label);
            copy_sparse(root_fd.get(), 0, fd.get(), p.offset, rootfs_size, rootfs_image.string());
            if (!recipe.rootfs.verity) continue;
            UniqueFd hash_fd = open_file(r.hash_file, O_RDONLY);
            copy_sparse(hash_fd.get(), 0, fd.get(), layout.get(r.verity_label).offset, r.result.hash_size, r.hash_file.string());
        }
        for (const auto& [label, image] : esp_images) {
            UniqueFd esp = open_file(image, O_RDONLY);
            copy_sparse(esp.get(), 0, fd.get(), layout.get(label).offset, fs::file_size(image), image.string());
        }
        for (const auto& p : layout.partitions) {
            if (!partitions::formats_on_first_boot(p.role)) continue;
            const std::string marker = partitions::blank_marker(p.uuid);
            pwrite_exact(fd.get(), marker.data(), marker.size(), p.offset, disk.string() + " (" + p.label + ")");
        }
        if (::fsync(fd.get()) != 0) fail_errno("syncing " + disk.string());
    }
    partitions::write_gpt(disk, partitions::to_gpt(layout));

    // 7. The manifest, then everything into place.
    progress.step("Writing the manifest");
    json manifest;
    manifest["format"] = 1;
    manifest["cairn_version"] = cairn::version();
    manifest["debug"] = recipe.boot.debug;  // a root shell on the console: `cairn bundle` refuses it without --allow-debug
    manifest["update"] = update_json;
    manifest["recipe"] = {{"name", recipe.name}, {"version", recipe.version}, {"compatible", recipe.compatible}, {"file", options.recipe.string()}};
    manifest["source_date_epoch"] = epoch;
    manifest["disk"] = {{"file", outputs::disk}, {"size", layout.disk_size}, {"guid", layout.disk_guid.str()}};
    json parts = json::array();
    for (const auto& p : layout.partitions) {
        json j = {{"label", p.label}, {"role", std::string(partitions::role_name(p.role))}, {"type", p.type.str()}, {"uuid", p.uuid.str()},
                  {"offset", p.offset}, {"size", p.size}, {"attributes", attributes_text(p.attributes)}};
        if (p.slot) j["slot"] = std::string(1, p.slot);
        parts.push_back(j);
    }
    manifest["partitions"] = parts;
    manifest["rootfs"] = {{"filesystem", recipe.rootfs.filesystem}, {"compression", recipe.rootfs.compression}, {"image", outputs::rootfs},
                          {"size", rootfs_size}, {"sha256", sha256_file_hex(rootfs_image)}, {"uuid", fs_options.uuid.str()}};
    json slots_json = json::object();
    for (const auto& r : roots) {
        json s = {{"root", r.root_label}, {"filesystem", recipe.rootfs.filesystem}, {"filesystem_size", rootfs_size}};
        if (const auto* esp = layout.find(partitions::label_for(Role::Esp, r.slot))) s["esp"] = esp->label;
        if (recipe.rootfs.verity) {
            s["verity"] = {{"partition", r.verity_label}, {"artifact", r.hash_file.filename().string()}, {"root_hash", to_hex(r.result.root_hash)},
                           {"salt", to_hex(r.params.salt)}, {"uuid", r.params.uuid.str()}, {"hash_algorithm", "sha256"},
                           {"data_block_size", r.params.data_block_size}, {"hash_block_size", r.params.hash_block_size},
                           {"data_blocks", r.params.data_blocks}, {"hash_size", r.result.hash_size},
                           {"sha256", sha256_file_hex(r.hash_file)}};
        }
        slots_json[r.slot ? std::string(1, r.slot) : std::string("-")] = s;
    }
    manifest["slots"] = slots_json;
    manifest["kernel"] = kernel_json;
    manifest["initrd"] = initrd_json;
    manifest["uki"] = recipe.boot.enabled ? uki_json : json(nullptr);
    manifest["inputs"] = inputs;

    // A manifest from an earlier build goes first: until the new one lands, the folder does not
    // look finished.
    fs::remove(options.out_dir / outputs::manifest, ec);
    std::vector<fs::path> artifacts = {disk, rootfs_image};
    for (const auto& r : roots)
        if (recipe.rootfs.verity) artifacts.push_back(r.hash_file);
    if (recipe.kernel.enabled) artifacts.push_back(work / outputs::vmlinuz);
    if (recipe.boot.enabled) artifacts.push_back(initrd_image);
    for (const auto& [slot, uki] : ukis) artifacts.push_back(uki);
    for (const auto& esp : bundle_esps) artifacts.push_back(esp);

    // --format: disk.raw converted into the other VM disk formats asked for (disk.qcow2, disk.vhdx,
    // disk.vmdk), moved into place with the rest and listed in the manifest. (To become a stage.)
    // One from an earlier build that this one does not write would not match the new disk.raw: it goes.
    manifest["disk"]["formats"] = write_disk_formats(disk, options.formats, work, [&](const std::string& line) { progress.note(line); });
    for (const auto& f : manifest["disk"]["formats"]) artifacts.push_back(work / f["file"].get<std::string>());
    for (DiskFormat f : all_disk_formats)
        if (f != DiskFormat::Raw) fs::remove(options.out_dir / ("disk." + std::string(disk_format_name(f))), ec);

    for (const auto& a : artifacts) {
        fs::rename(a, options.out_dir / a.filename(), ec);
        if (ec) fail("moving " + a.filename().string() + " into " + options.out_dir.string() + ": " + ec.message());
    }
    write_file_atomic(options.out_dir / outputs::manifest, manifest.dump(2) + "\n");
    return manifest;
}


// The output folder's lock: an flock on DIR/.cairn-build.lock, taken at once or not at all,
// and removed when the build ends (while still held). A build that opened the file just before
// the holder removed it would lock a file no longer in the folder: after taking the lock, the
// name must still lead to the locked file, else it tries again with the new one. The descriptor
// is O_CLOEXEC: programs the build starts do not hold the lock.
class OutputLock {
public:
    explicit OutputLock(const fs::path& out_dir) : file_(out_dir / build_lock) {
        for (int attempt = 0;; ++attempt) {
            fd_ = open_file(file_, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
                if (errno == EWOULDBLOCK)
                    fail(out_dir.string() + ": another cairn build is writing into this folder (it holds " + file_.string() +
                         "); wait for it to finish, or build into another folder");
                fail_errno("locking " + file_.string());
            }
            struct stat held {}, named {};
            if (::fstat(fd_.get(), &held) == 0 && ::stat(file_.c_str(), &named) == 0 && held.st_dev == named.st_dev && held.st_ino == named.st_ino)
                return;
            if (attempt == 10) fail(file_.string() + ": the lock file keeps changing under this build");
        }
    }
    ~OutputLock() { ::unlink(file_.c_str()); }  // before the descriptor closes: nobody else holds the lock yet
    OutputLock(const OutputLock&) = delete;
    OutputLock& operator=(const OutputLock&) = delete;

private:
    fs::path file_;
    UniqueFd fd_;
};

// Temporary folders of builds that were killed outright. Called under the lock, so none of
// them belongs to a running build.
void sweep_stale(const fs::path& out_dir, bool verbose) {
    std::error_code ec;
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(out_dir, ec))
        if (e.path().filename().string().starts_with(".cairn-build-") && e.is_directory(ec) && !e.is_symlink(ec)) stale.push_back(e.path());
    for (const auto& p : stale) {
        remove_tree(p);
        if (verbose) std::fprintf(stderr, "cairn: removed %s, left by a build that was stopped\n", p.c_str());
    }
}

// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD for the calling thread while it lives.
class BlockedSignals {
public:
    BlockedSignals() {
        sigemptyset(&set_);
        for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set_, s);
        ::pthread_sigmask(SIG_BLOCK, &set_, &old_);
        // An ignored SIGCHLD (inherited through exec) would neither be reported nor leave the child to wait for.
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGCHLD, &dfl, &old_chld_);
    }
    ~BlockedSignals() {
        ::sigaction(SIGCHLD, &old_chld_, nullptr);
        ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    BlockedSignals(const BlockedSignals&) = delete;
    BlockedSignals& operator=(const BlockedSignals&) = delete;
    const sigset_t& set() const { return set_; }
    const sigset_t& old() const { return old_; }

private:
    sigset_t set_, old_;
    struct sigaction old_chld_ {};
};

// Runs build() in a child process in its own process group and waits for it, or for SIGINT or
// SIGTERM: then the group is killed, nothing writes into `work` any more, and it is removed.
json supervise(const BuildOptions& options, TempDir& work) {
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) fail_errno("pipe for the build");
    UniqueFd error_read(ends[0]), error_write(ends[1]);
    BlockedSignals blocked;
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) fail_errno("fork for the build");
    if (child == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(2);
        error_read.reset();
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        ::signal(SIGHUP, SIG_DFL);
        ::pthread_sigmask(SIG_SETMASK, &blocked.old(), nullptr);
        int code = 0;
        try {
            build(options, work.path());
        } catch (const std::exception& e) {
            std::string message = e.what();
            (void)!::write(error_write.get(), message.data(), message.size());
            code = 2;
        } catch (...) {
            code = 2;
        }
        std::fflush(nullptr);
        ::_exit(code);
    }
    ::setpgid(child, child);
    error_write.reset();
    int status = 0;
    for (;;) {
        siginfo_t info {};
        const int sig = ::sigwaitinfo(&blocked.set(), &info);
        if (sig < 0) continue;  // EINTR
        if (sig == SIGCHLD) {
            // Has it exited? Looked at without reaping it, so that its pid, the group's id, stays
            // taken until the group is killed below.
            siginfo_t exited {};
            if (::waitid(P_PID, static_cast<id_t>(child), &exited, WEXITED | WNOHANG | WNOWAIT) == 0 && exited.si_pid == child) break;
            continue;
        }
        // SIGINT, SIGTERM or SIGHUP: stop everything the build runs, then clean up.
        ::kill(-child, SIGKILL);
        ::kill(child, SIGKILL);
        while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        const std::string removed = work.path().string();
        remove_tree(work.path());
        throw BuildInterrupted("build interrupted, removed " + removed, sig);
    }
    // A program the build started and left behind (none should) goes with the group.
    ::kill(-child, SIGKILL);
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    std::string message;
    char buffer[4096];
    for (ssize_t n; (n = ::read(error_read.get(), buffer, sizeof buffer)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        message.append(buffer, static_cast<size_t>(n));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return json::parse(read_file(options.out_dir / outputs::manifest));
    if (!message.empty()) fail(message);
    if (WIFSIGNALED(status)) fail("the build process was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")");
    fail("the build process failed (exit status " + std::to_string(WEXITSTATUS(status)) + ")");
}

}  // namespace

json build_image(const BuildOptions& options) {
    std::error_code ec;
    const bool created = !fs::exists(options.out_dir, ec);
    try {
        fs::create_directories(options.out_dir, ec);
        if (ec) fail(options.out_dir.string() + ": cannot create the output directory: " + ec.message());
        OutputLock lock(options.out_dir);
        sweep_stale(options.out_dir, options.progress);
        TempDir work(options.out_dir, ".cairn-build-");
        return supervise(options, work);
    } catch (...) {
        if (created) fs::remove(options.out_dir, ec);  // only a folder this build made, and only when empty
        throw;
    }
}

}  // namespace cairn::imager
