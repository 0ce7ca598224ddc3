#include "imager/tree.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <fnmatch.h>
#include <functional>
#include <set>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/elf.hpp"

namespace cairn::imager {

namespace {

std::vector<std::string> split(std::string_view path) {
    std::vector<std::string> parts;
    size_t i = 0;
    while (i < path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        if (j > i) parts.emplace_back(path.substr(i, j - i));
        i = j + 1;
    }
    return parts;
}

std::string parent_of(const std::string& canonical) {
    size_t slash = canonical.rfind('/');
    return slash == 0 ? "/" : canonical.substr(0, slash);
}

std::string child(const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; }

}  // namespace

bool is_clean_relative_path(std::string_view path) {
    if (path.empty() || path.front() == '/') return false;
    size_t i = 0;
    while (i <= path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        std::string_view part = path.substr(i, j - i);
        if (part.empty() || part == "." || part == "..") return false;
        i = j + 1;
    }
    return true;
}

std::string image_join(std::string_view base, std::string_view relative, const std::string& what) {
    std::string out = "/";
    for (const auto& part : split(base)) {
        if (part == "..") fail(what + ": path '" + std::string(base) + "' must not contain '..'");
        if (part != ".") out = child(out, part);
    }
    for (const auto& part : split(relative)) {
        if (part == "..") fail(what + ": path '" + std::string(relative) + "' must not contain '..'");
        if (part != ".") out = child(out, part);
    }
    return out;
}

Tree::Tree(fs::path staging) : staging_(std::move(staging)) {
    fs::create_directories(staging_);
    ::chmod(staging_.c_str(), 0755);
    meta_["/"] = Meta{0, 0, S_IFDIR | 0755};
}

fs::path Tree::host(std::string_view canonical) const {
    if (canonical == "/") return staging_;
    return staging_ / std::string(canonical.substr(1));
}

std::string Tree::resolve(std::string_view image_path, const std::string& what) const {
    std::deque<std::string> pending;
    for (auto& p : split(image_path)) pending.push_back(p);
    std::string current = "/";
    int hops = 0;
    while (!pending.empty()) {
        std::string part = pending.front();
        pending.pop_front();
        if (part == ".") continue;
        if (part == "..") {
            current = parent_of(current);
            continue;
        }
        std::string next = child(current, part);
        if (pending.empty()) return next;  // the last component is not followed
        struct stat st {};
        if (::lstat(host(next).c_str(), &st) != 0) {
            current = next;  // missing: make_parents creates it
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            if (++hops > 40) fail(what + ": too many symbolic links resolving '" + std::string(image_path) + "' in the image");
            std::error_code ec;
            std::string target = fs::read_symlink(host(next), ec).string();
            if (ec) fail(what + ": reading link " + next + " in the image: " + ec.message());
            auto target_parts = split(target);
            for (auto it = target_parts.rbegin(); it != target_parts.rend(); ++it) pending.push_front(*it);
            if (!target.empty() && target[0] == '/') current = "/";
            continue;
        }
        if (!S_ISDIR(st.st_mode)) fail(what + ": '" + next + "' in the image is not a directory (resolving '" + std::string(image_path) + "')");
        current = next;
    }
    return current;
}

void Tree::make_parents(std::string_view canonical, const std::string& what) {
    std::string dir = parent_of(std::string(canonical));
    std::vector<std::string> missing;
    while (dir != "/") {
        struct stat st {};
        if (::lstat(host(dir).c_str(), &st) == 0) {
            if (!S_ISDIR(st.st_mode)) fail(what + ": '" + dir + "' in the image is not a directory");
            break;
        }
        missing.push_back(dir);
        dir = parent_of(dir);
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
        if (::mkdir(host(*it).c_str(), 0755) != 0 && errno != EEXIST) fail_errno(what + ": creating " + *it + " in the image");
        meta_[*it] = Meta{0, 0, S_IFDIR | 0755};
    }
}

void Tree::remove(std::string_view canonical, bool also_directory, const std::string& what) {
    fs::path p = host(canonical);
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        if (!also_directory) return;
        remove_tree(p);
        std::string prefix = std::string(canonical) + "/";
        for (auto it = meta_.lower_bound(prefix); it != meta_.end() && it->first.starts_with(prefix);) it = meta_.erase(it);
    } else if (::unlink(p.c_str()) != 0) {
        fail_errno(what + ": replacing " + std::string(canonical) + " in the image");
    }
    meta_.erase(std::string(canonical));
}

void Tree::add_directory(std::string_view image_path, Meta meta, const std::string& what) {
    std::string path = resolve(image_path, what);
    meta.mode = S_IFDIR | (meta.mode & 07777);
    if (path == "/") {
        meta_["/"] = meta;
        return;
    }
    make_parents(path, what);
    struct stat st {};
    if (::lstat(host(path).c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) remove(path, false, what);
    if (::mkdir(host(path).c_str(), 0755) != 0 && errno != EEXIST) fail_errno(what + ": creating " + path + " in the image");
    meta_[path] = meta;
}

void Tree::move_in(const Tree& other, const std::string& what) {
    for (const auto& [path, meta] : other.entries()) {  // sorted: a directory before what it holds
        if (path == "/") continue;
        if (S_ISDIR(meta.mode)) {
            // A link to a directory here (merged /usr's /lib) stays: what the directory holds goes
            // where it leads, as extract_deb's keep_directory_symlinks does.
            struct stat st {};
            if (::lstat(host(resolve(path, what)).c_str(), &st) == 0 && S_ISLNK(st.st_mode)) continue;
            add_directory(path, meta, what);
            continue;
        }
        const std::string to = resolve(path, what);
        make_parents(to, what);
        remove(to, true, what);
        if (::rename(other.host(path).c_str(), host(to).c_str()) != 0) fail_errno(what + ": moving " + path + " into the image");
        meta_[to] = meta;
    }
}

void Tree::add_file(std::string_view image_path, std::string_view content, Meta meta, const std::string& what) {
    std::string path = resolve(image_path, what);
    make_parents(path, what);
    remove(path, true, what);
    UniqueFd fd = open_file(host(path), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pwrite_exact(fd.get(), content.data(), content.size(), 0, host(path).string());
    meta.mode = S_IFREG | (meta.mode & 07777);
    meta_[path] = meta;
}

void Tree::add_file_copy(std::string_view image_path, const fs::path& source, Meta meta, const std::string& what) {
    std::string path = resolve(image_path, what);
    make_parents(path, what);
    remove(path, true, what);
    std::error_code ec;
    fs::copy_file(source, host(path), fs::copy_options::overwrite_existing, ec);
    if (ec) fail(what + ": copying " + source.string() + " to " + path + " in the image: " + ec.message());
    ::chmod(host(path).c_str(), 0644);
    meta.mode = S_IFREG | (meta.mode & 07777);
    meta_[path] = meta;
}

void Tree::add_symlink(std::string_view image_path, const std::string& target, Meta meta, const std::string& what) {
    std::string path = resolve(image_path, what);
    make_parents(path, what);
    remove(path, false, what);
    struct stat st {};
    if (::lstat(host(path).c_str(), &st) == 0)
        fail(what + ": cannot put a symbolic link at " + path + ": a directory is there");
    if (::symlink(target.c_str(), host(path).c_str()) != 0) fail_errno(what + ": creating link " + path + " in the image");
    meta.mode = S_IFLNK | 0777;
    meta_[path] = meta;
}

void Tree::add_hardlink(std::string_view image_path, std::string_view existing_image_path, const std::string& what) {
    std::string path = resolve(image_path, what);
    std::string existing = resolve(existing_image_path, what);
    auto m = meta(existing);
    if (!m) fail(what + ": hard link " + path + " points to " + existing + ", which is not in the image");
    if (path == existing) return;  // both names lead to the same entry (through a link in the image)
    make_parents(path, what);
    remove(path, true, what);
    if (::link(host(existing).c_str(), host(path).c_str()) != 0) fail_errno(what + ": creating hard link " + path + " in the image");
    meta_[path] = *m;
}

Tree::Entries Tree::entries_under(std::string_view folder) const {
    std::string prefix(folder);
    if (!prefix.ends_with('/')) prefix += '/';
    std::string past = prefix;
    past.back() = '/' + 1;  // the first path after every one that starts with `prefix`
    return {meta_.upper_bound(prefix), meta_.lower_bound(past)};
}

std::optional<Meta> Tree::meta(std::string_view canonical) const {
    auto it = meta_.find(std::string(canonical));
    if (it == meta_.end()) return std::nullopt;
    return it->second;
}

namespace {

std::optional<uint32_t> lookup_id(const fs::path& file, const std::string& name) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        std::vector<std::string> fields;
        std::stringstream ss(line);
        std::string field;
        while (std::getline(ss, field, ':')) fields.push_back(field);
        if (fields.size() >= 3 && fields[0] == name) {
            try {
                return static_cast<uint32_t>(std::stoul(fields[2]));
            } catch (...) {
                return std::nullopt;
            }
        }
    }
    return std::nullopt;
}

}  // namespace

std::optional<uint32_t> Tree::lookup_user(const std::string& name) const {
    return lookup_id(host(resolve("/etc/passwd", "/etc/passwd")), name);
}

std::optional<uint32_t> Tree::lookup_group(const std::string& name) const {
    return lookup_id(host(resolve("/etc/group", "/etc/group")), name);
}

void Tree::sync_with_staging(bool owners_from_disk) {
    std::map<std::string, Meta> synced;
    synced["/"] = meta_["/"];
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(staging_, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        // lexically: fs::relative would follow a link to a folder (/bin -> usr/bin) and name it /usr/bin
        std::string canonical = "/" + it->path().lexically_relative(staging_).string();
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) continue;
        auto known = meta_.find(canonical);
        if (known != meta_.end() && (known->second.mode & S_IFMT) == (st.st_mode & S_IFMT)) synced[canonical] = known->second;
        else if (owners_from_disk) synced[canonical] = Meta{st.st_uid, st.st_gid, static_cast<uint32_t>(st.st_mode & (S_IFMT | 07777))};
        else synced[canonical] = Meta{0, 0, static_cast<uint32_t>(st.st_mode & (S_IFMT | 07777))};
    }
    if (ec) fail("reading the root tree " + staging_.string() + ": " + ec.message());
    meta_ = std::move(synced);
}

std::vector<std::string> Tree::apply_metadata(int64_t epoch, const fs::path& work_dir, std::optional<bool> as_root) const {
    const bool root = as_root.value_or(::geteuid() == 0);
    const timespec times[2] = {{epoch, 0}, {epoch, 0}};
    std::string db;
    for (const auto& [path, m] : meta_) {
        fs::path p = host(path);
        if (root) {
            if (::lchown(p.c_str(), m.uid, m.gid) != 0) fail_errno("setting the owner of " + path + " in the image");
            if (!S_ISLNK(m.mode) && ::chmod(p.c_str(), m.mode & 07777) != 0) fail_errno("setting the mode of " + path + " in the image");
        } else {
            struct stat st {};
            if (::lstat(p.c_str(), &st) != 0) fail_errno("reading " + p.string());
            char line[160];
            std::snprintf(line, sizeof line, "dev=%llx,ino=%llu,mode=%llo,uid=%u,gid=%u,nlink=%llu,rdev=0\n",
                          static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino),
                          static_cast<unsigned long long>(m.mode), m.uid, m.gid, static_cast<unsigned long long>(st.st_nlink));
            db += line;
        }
        if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) fail_errno("setting the time of " + path + " in the image");
    }
    if (root) return {};
    fs::path file = work_dir / "fakeroot.db";
    write_file_atomic(file, db);
    return {"fakeroot", "-i", file.string(), "--"};
}

std::vector<fs::path> add_host_executable(Tree& tree, const fs::path& executable, std::string_view image_path, Meta meta,
                                          const std::string& what) {
    std::vector<fs::path> files;
    try {
        files = elf::closure(executable);
    } catch (const Error& e) {
        fail(what + ": " + e.what());
    }
    // The executable's own link chain is not copied: it goes to `image_path` as one file.
    std::vector<fs::path> own = elf::link_chain(executable);
    std::map<fs::path, std::string> copied;  // host file -> where it went
    std::vector<fs::path> libraries;
    for (const auto& f : files) {
        if (std::find(own.begin(), own.end(), f) != own.end()) continue;
        // A library the tree already holds (a Debian package installed it) stays as it is.
        if (tree.meta(tree.resolve(f.string(), what))) {
            if (!fs::is_symlink(f)) libraries.push_back(f);
            continue;
        }
        if (fs::is_symlink(f)) {
            tree.add_symlink(f.string(), fs::read_symlink(f).string(), Meta{0, 0, 0777}, what);
            continue;
        }
        fs::path real = fs::canonical(f);
        if (auto it = copied.find(real); it != copied.end()) {
            tree.add_hardlink(f.string(), it->second, what);
            continue;
        }
        struct stat st {};
        if (::stat(f.c_str(), &st) != 0) fail_errno(what + ": " + f.string());
        tree.add_file_copy(f.string(), f, Meta{0, 0, static_cast<uint32_t>(st.st_mode & 07777)}, what);
        copied[real] = f.string();
        libraries.push_back(f);
    }
    tree.add_file_copy(image_path, executable, meta, what);
    return libraries;
}

std::vector<fs::path> add_cairn_program(Tree& tree, const fs::path& program, std::string_view image_path, Meta meta,
                                        const std::string& what) {
    std::vector<fs::path> libraries = add_host_executable(tree, program, image_path, meta, what);
    const fs::path staged = tree.host(tree.resolve(image_path, what));
    try {
        run_checked({"objcopy", "--strip-debug", staged.string()});
    } catch (const Error& e) {
        fail(what + ": removing the debug sections of " + program.string() + ": " + e.what());
    }
    return libraries;
}

std::string tree_regular_file(const Tree& tree, std::string path) {
    for (int hops = 0; hops < 40; ++hops) {
        std::string canonical;
        try {
            canonical = tree.resolve(path, "looking up " + path);
        } catch (const Error&) {
            return {};
        }
        const fs::path host = tree.host(canonical);
        struct stat st {};
        if (::lstat(host.c_str(), &st) != 0) return {};
        if (S_ISREG(st.st_mode)) return canonical;
        if (!S_ISLNK(st.st_mode)) return {};
        std::error_code ec;
        const std::string target = fs::read_symlink(host, ec).string();
        if (ec) return {};
        path = target.starts_with('/') ? target : parent_of(canonical) + "/" + target;
    }
    return {};
}

namespace {

// The host path of the regular file an image path leads to; empty when there is none.
fs::path tree_file(const Tree& tree, const std::string& path) {
    const std::string canonical = tree_regular_file(tree, path);
    return canonical.empty() ? fs::path() : tree.host(canonical);
}

// The directories the image's /etc/ld.so.conf names, following `include` lines (globs of
// file names in one directory, relative to the including file).
std::vector<std::string> image_ld_so_conf(const Tree& tree) {
    std::vector<std::string> dirs;
    std::set<std::string> read;
    std::function<void(const std::string&)> parse = [&](const std::string& conf) {
        const fs::path host = tree_file(tree, conf);
        if (host.empty() || !read.insert(host.string()).second) return;
        std::istringstream in(read_file(host));
        for (std::string line; std::getline(in, line);) {
            line = line.substr(0, line.find('#'));
            std::istringstream words(line);
            std::string word;
            if (!(words >> word) || word == "hwcap") continue;
            if (word == "include") {
                for (std::string pattern; words >> pattern;) {
                    if (!pattern.starts_with('/')) pattern = parent_of(conf) + "/" + pattern;
                    const std::string dir = parent_of(pattern), glob = pattern.substr(pattern.rfind('/') + 1);
                    std::vector<std::string> names;
                    std::error_code ec;
                    std::string canonical;
                    try {
                        canonical = tree.resolve(dir, "ld.so.conf");
                    } catch (const Error&) {
                        continue;
                    }
                    for (const auto& e : fs::directory_iterator(tree.host(canonical), ec)) {
                        const std::string name = e.path().filename().string();
                        if (::fnmatch(glob.c_str(), name.c_str(), FNM_PERIOD) == 0) names.push_back(name);
                    }
                    std::sort(names.begin(), names.end());
                    for (const auto& name : names) parse(child(dir, name));
                }
                continue;
            }
            word = word.substr(0, word.find('='));  // old "dir=type" syntax
            while (word.size() > 1 && word.back() == '/') word.pop_back();
            if (word.starts_with('/') && std::find(dirs.begin(), dirs.end(), word) == dirs.end()) dirs.push_back(word);
        }
    };
    parse("/etc/ld.so.conf");
    return dirs;
}

// A DT_RPATH or DT_RUNPATH element with $ORIGIN, $LIB and $PLATFORM expanded; empty when it is
// relative (ld.so ignores those).
std::string expand_search_path(std::string element, const std::string& origin) {
    for (const auto& [token, value] : {std::pair<std::string, std::string>{"ORIGIN", origin}, {"LIB", "lib/x86_64-linux-gnu"}, {"PLATFORM", "x86_64"}}) {
        for (const std::string& form : {"${" + token + "}", "$" + token}) {
            for (size_t at; (at = element.find(form)) != std::string::npos;) element.replace(at, form.size(), value);
        }
    }
    return element.starts_with('/') ? element : std::string();
}

// Where ld.so in the image looks for the DT_NEEDED names of an object (`info`, found in the folder
// `origin`), in order: its DT_RPATH (when it has no DT_RUNPATH) and DT_RUNPATH, then `extra`, the
// image's ld.so.conf folders (`conf`) and the default folders. Relative elements come out empty.
std::vector<std::string> library_search_dirs(const elf::Info& info, const std::string& origin, const std::vector<std::string>& extra,
                                             const std::vector<std::string>& conf) {
    static const std::vector<std::string> defaults = {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib", "/lib64", "/usr/lib64"};
    std::vector<std::string> dirs;
    if (info.runpath.empty())
        for (const auto& e : info.rpath) dirs.push_back(expand_search_path(e, origin));
    for (const auto& e : info.runpath) dirs.push_back(expand_search_path(e, origin));
    dirs.insert(dirs.end(), extra.begin(), extra.end());
    dirs.insert(dirs.end(), conf.begin(), conf.end());
    dirs.insert(dirs.end(), defaults.begin(), defaults.end());
    return dirs;
}

// The canonical path of the library `name` (no '/') in the first of `dirs` that has it; empty when none does.
std::string find_library(const Tree& tree, const std::vector<std::string>& dirs, const std::string& name) {
    for (const auto& dir : dirs)
        if (!dir.empty())
            if (std::string found = tree_regular_file(tree, dir + "/" + name); !found.empty()) return found;
    return {};
}

}  // namespace

std::vector<std::string> loaded_files(const Tree& tree, const std::vector<std::string>& programs) {
    const std::vector<std::string> conf = image_ld_so_conf(tree);
    std::vector<std::string> order;
    std::set<std::string> seen;
    auto add = [&](const std::string& canonical) {
        if (!canonical.empty() && seen.insert(canonical).second) order.push_back(canonical);
    };
    for (const auto& program : programs) add(tree_regular_file(tree, program));
    for (size_t next = 0; next < order.size(); ++next) {
        const std::string object = order[next];  // a copy: `add` grows `order`
        elf::Info info;
        try {
            info = elf::read_info(tree.host(object));
        } catch (const Error&) {
            continue;
        }
        if (!info.is_elf || !info.is_64 || info.machine != EM_X86_64 || !info.is_dynamic) continue;
        if (!info.interpreter.empty()) add(tree_regular_file(tree, info.interpreter));
        const std::vector<std::string> dirs = library_search_dirs(info, parent_of(object), {}, conf);
        for (const auto& name : info.needed) {
            if (name.find('/') == std::string::npos)
                add(find_library(tree, dirs, name));
            else if (name.starts_with('/'))
                add(tree_regular_file(tree, name));
        }
    }
    return order;
}

std::vector<MissingLibraries> missing_libraries(const Tree& tree) {
    struct Object {
        std::string path;
        elf::Info info;
    };
    std::vector<Object> objects;
    for (const auto& [path, meta] : tree.entries()) {
        if (!S_ISREG(meta.mode) || path.starts_with("/lib/modules/") || path.starts_with("/usr/lib/modules/")) continue;
        elf::Info info;
        try {
            info = elf::read_info(tree.host(path));
        } catch (const Error&) {
            continue;  // not an ELF file ld.so would load either
        }
        if (!info.is_elf || !info.is_64 || info.machine != EM_X86_64 || !info.is_dynamic) continue;
        objects.push_back({path, std::move(info)});
    }
    std::vector<std::string> any_rpath;
    for (const auto& o : objects)
        for (const auto& element : o.info.rpath)
            if (auto dir = expand_search_path(element, parent_of(o.path)); !dir.empty()) any_rpath.push_back(dir);
    const std::vector<std::string> conf = image_ld_so_conf(tree);

    std::vector<MissingLibraries> result;
    for (const auto& o : objects) {
        MissingLibraries m{o.path, {}, {}};
        if (!o.info.interpreter.empty() && tree_file(tree, o.info.interpreter).empty()) m.interpreter = o.info.interpreter;
        const std::vector<std::string> dirs = library_search_dirs(o.info, parent_of(o.path), any_rpath, conf);
        for (const auto& name : o.info.needed) {
            const bool found = name.find('/') != std::string::npos ? !name.starts_with('/') || !tree_file(tree, name).empty()
                                                                   : !find_library(tree, dirs, name).empty();
            if (!found) m.libraries.push_back(name);
        }
        if (!m.interpreter.empty() || !m.libraries.empty()) result.push_back(std::move(m));
    }
    return result;
}

std::optional<uint64_t> staging_tmpfs_size(uint64_t memory_available, uint64_t root_size, bool compressed) {
    const uint64_t half = memory_available / 2;
    if (root_size == 0 || half / (compressed ? 3 : 1) < root_size) return std::nullopt;
    return half;
}

uint64_t memory_available() {
    std::ifstream in("/proc/meminfo");
    for (std::string key; in >> key;) {
        uint64_t kib = 0;
        in >> kib;
        if (key == "MemAvailable:") return kib * 1024;
        in.ignore(256, '\n');
    }
    return 0;
}

void mount_private_tmpfs(const fs::path& dir, uint64_t size) {
    if (::unshare(CLONE_NEWNS) != 0) fail_errno("a mount namespace for the staging tree " + dir.string());
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail_errno("making the mounts private for the staging tree " + dir.string());
    const std::string options = "mode=0755,size=" + std::to_string(size);
    if (::mount("cairn-tree", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) fail_errno("mounting a tmpfs on " + dir.string());
}

void remove_staging(const fs::path& dir) {
    struct stat here {}, parent {};
    if (::lstat(dir.c_str(), &here) == 0 && ::lstat(dir.parent_path().c_str(), &parent) == 0 && here.st_dev != parent.st_dev &&
        ::umount2(dir.c_str(), MNT_DETACH) != 0)
        fail_errno("unmounting the staging tree " + dir.string());
    remove_tree(dir);
}

}  // namespace cairn::imager
