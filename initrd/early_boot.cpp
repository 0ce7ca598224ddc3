#include "initrd/early_boot.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "initrd/read_ahead.hpp"

namespace cairn::initrd {

namespace {

// "kernel/fs/fuse/fuse.ko" -> "fuse", "efi-pstore.ko.xz" -> "efi_pstore": the name modprobe reads.
std::string module_name(std::string path) {
    path = path.substr(path.rfind('/') + 1);
    path = path.substr(0, path.find(".ko"));
    std::replace(path.begin(), path.end(), '-', '_');
    return path;
}

// A regular file's text, at most 1 MiB of it ("" for anything else): what cairn-init reads here may
// be on the data partition (the /etc overlay's upper layer), which is not verified, so a FIFO, a
// device or a huge file there must neither block nor exhaust the boot.
std::string read_small_file(const std::string& path) {
    constexpr size_t limit = 1 << 20;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return {};
    std::string text;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) <= limit) {
        text.resize(size_t(st.st_size));
        size_t done = 0;
        for (ssize_t n; done < text.size() && (n = ::read(fd, text.data() + done, text.size() - done)) > 0;) done += size_t(n);
        text.resize(done);
    }
    ::close(fd);
    return text;
}

bool is_mount_point(const std::string& path) {
    struct stat here {}, parent {};
    if (::stat(path.c_str(), &here) != 0 || ::stat((path + "/..").c_str(), &parent) != 0) return false;
    return here.st_dev != parent.st_dev || here.st_ino == parent.st_ino;  // "/" is its own parent
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

bool under_api(const std::string& path) {
    for (const char* api : {"/dev", "/proc", "/sys", "/run"})
        if (path == api || path.starts_with(std::string(api) + "/")) return true;
    return false;
}

// Where a path of the running system is now: the initrd's own API filesystems (switch_root moves
// them into the root), or under `root`.
std::string now_at(const std::string& path, const std::string& root) { return under_api(path) ? path : root + path; }

}  // namespace

std::set<std::string> modules_with_settings(const std::vector<std::string>& folders, const std::string& cmdline) {
    std::set<std::string> names;
    auto add = [&](std::string name) {
        std::replace(name.begin(), name.end(), '-', '_');
        if (!name.empty()) names.insert(name);
    };
    for (const auto& folder : folders) {
        DIR* dir = ::opendir(folder.c_str());
        if (!dir) continue;
        while (const dirent* e = ::readdir(dir)) {
            const std::string file = e->d_name;
            if (!file.ends_with(".conf")) continue;
            std::istringstream lines(read_small_file(folder + "/" + file));
            for (std::string line; std::getline(lines, line);) {
                std::istringstream words(line);
                std::string command, name;
                if (!(words >> command >> name) || command.starts_with('#')) continue;
                add(name);
                if (command == "alias" || command == "softdep")  // what they lead to, too
                    for (std::string w; words >> w;)
                        if (!w.ends_with(':')) add(w);
            }
        }
        ::closedir(dir);
    }
    std::istringstream words(cmdline);
    for (std::string w; words >> w;) {
        const size_t eq = w.find('=');
        const std::string key = w.substr(0, eq);
        if ((key == "modprobe.blacklist" || key == "module_blacklist") && eq != std::string::npos) {
            std::istringstream list(w.substr(eq + 1));
            for (std::string name; std::getline(list, name, ',');) add(name);
        } else if (const size_t dot = key.find('.'); dot != std::string::npos && eq != std::string::npos) {
            add(key.substr(0, dot));
        }
    }
    return names;
}

EarlyModules load_boot_modules(const std::string& root, const std::string& release, const std::set<std::string>& skip) noexcept try {
    EarlyModules result;
    struct stat top {};
    if (::stat(root.c_str(), &top) != 0) return result;
    const std::string prefix = "/usr/lib/modules/" + release + "/";
    std::istringstream lines(read_small_file(root + boot_modules_list));
    for (std::string line; std::getline(lines, line);) {
        std::istringstream words(line);
        std::string path;
        if (!(words >> path) || !path.starts_with(prefix) || path.find("/../") != std::string::npos) continue;  // another kernel's
        const std::string name = module_name(path);
        if (exists("/sys/module/" + name)) {
            ++result.already;  // loaded, or built in
            continue;
        }
        bool ready = !skip.count(name);
        for (std::string need; ready && words >> need;) ready = exists("/sys/module/" + need);
        struct stat st {};
        const int fd = ready ? open_regular((root + path).c_str(), top.st_dev, st) : -1;
        const bool ok = fd >= 0 && (::syscall(SYS_finit_module, fd, "", 0) == 0 || errno == EEXIST);
        if (fd >= 0) ::close(fd);
        ++(ok ? result.loaded : result.left);
    }
    return result;
} catch (...) {
    return {};
}

std::vector<BootMount> parse_boot_mounts(const std::string& text) {
    std::vector<BootMount> mounts;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        std::vector<std::string> fields;
        std::istringstream in(line);
        for (std::string f; std::getline(in, f, '\t');) fields.push_back(f);
        if (fields.size() == 5 && line.ends_with('\t')) fields.emplace_back();
        if (fields.size() != 6 || !fields[3].starts_with('/') || fields[1].empty() || fields[2].empty()) continue;
        BootMount m{fields[0], fields[1], fields[2], fields[3], fields[4] == "-" ? "" : fields[4], {}};
        std::istringstream conditions(fields[5]);
        for (std::string c; conditions >> c;) m.conditions.push_back(c);
        mounts.push_back(std::move(m));
    }
    return mounts;
}

MountArguments mount_arguments(const std::string& options) {
    struct Flag {
        const char* name;
        unsigned long set, clear;
    };
    static const Flag flags[] = {
        {"ro", MS_RDONLY, 0},           {"rw", 0, MS_RDONLY},          {"nosuid", MS_NOSUID, 0},           {"suid", 0, MS_NOSUID},
        {"nodev", MS_NODEV, 0},         {"dev", 0, MS_NODEV},          {"noexec", MS_NOEXEC, 0},           {"exec", 0, MS_NOEXEC},
        {"sync", MS_SYNCHRONOUS, 0},    {"async", 0, MS_SYNCHRONOUS},  {"dirsync", MS_DIRSYNC, 0},         {"noatime", MS_NOATIME, 0},
        {"atime", 0, MS_NOATIME},       {"nodiratime", MS_NODIRATIME, 0}, {"diratime", 0, MS_NODIRATIME}, {"relatime", MS_RELATIME, 0},
        {"norelatime", 0, MS_RELATIME}, {"strictatime", MS_STRICTATIME, 0}, {"lazytime", MS_LAZYTIME, 0}, {"nolazytime", 0, MS_LAZYTIME},
        {"mand", MS_MANDLOCK, 0},       {"nomand", 0, MS_MANDLOCK},    {"silent", MS_SILENT, 0},           {"loud", 0, MS_SILENT},
    };
    static const char* userspace_only[] = {"defaults", "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "group", "_netdev"};
    MountArguments result;
    std::istringstream in(options);
    for (std::string o; std::getline(in, o, ',');) {
        if (o.empty() || o.starts_with("x-") || o.starts_with("comment=") ||
            std::find_if(std::begin(userspace_only), std::end(userspace_only), [&](const char* u) { return o == u; }) != std::end(userspace_only))
            continue;
        const auto f = std::find_if(std::begin(flags), std::end(flags), [&](const Flag& x) { return o == x.name; });
        if (f != std::end(flags)) {
            result.flags = (result.flags & ~f->clear) | f->set;
            continue;
        }
        result.data += (result.data.empty() ? "" : ",") + o;
    }
    return result;
}

bool conditions_hold(const BootMount& m, const std::string& root) {
    for (const auto& c : m.conditions) {
        if (c.starts_with("!symlink:")) {
            struct stat st {};
            if (::lstat(now_at(c.substr(9), root).c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return false;
        } else if (c.starts_with('!')) {
            if (exists(now_at(c.substr(1), root))) return false;
        } else if (!exists(now_at(c, root))) {
            return false;
        }
    }
    return true;
}

size_t mount_boot_filesystems(const std::string& root) noexcept try {
    size_t mounted = 0;
    for (const BootMount& m : parse_boot_mounts(read_small_file(root + boot_mounts_list))) {
        if (m.unit != "-") {
            const std::string admin = root + "/etc/systemd/system/" + m.unit;
            if (exists(admin) || exists(admin + ".d")) continue;  // the administrator's say
        }
        // Only on the API filesystems and on the root's own /tmp: a mount point reached through
        // /var, /etc, /home or /root would be looked up on the data partition, where a planted
        // symbolic link could send the mount anywhere.
        if (!under_api(m.where) && m.where != "/tmp") continue;
        if (m.where.find("/..") != std::string::npos || !conditions_hold(m, root)) continue;
        const std::string where = now_at(m.where, root);
        ::mkdir(where.c_str(), 0755);  // as systemd makes a missing mount point (EEXIST, or EROFS on the root: then it fails below)
        if (is_mount_point(where)) continue;
        const MountArguments a = mount_arguments(m.options);
        if (::mount(m.source.c_str(), where.c_str(), m.type.c_str(), a.flags, a.data.empty() ? nullptr : a.data.c_str()) == 0) ++mounted;
    }
    return mounted;
} catch (...) {
    return 0;
}

}  // namespace cairn::initrd
