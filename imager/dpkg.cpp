#include "imager/dpkg.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <map>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "imager/archive.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

namespace {

// "libc6 (>= 2.36), foo:any | bar" -> {{"libc6"}, {"foo", "bar"}}
std::vector<std::vector<std::string>> relation_groups(const std::string& field) {
    std::vector<std::vector<std::string>> groups;
    std::stringstream all(field);
    std::string group;
    while (std::getline(all, group, ',')) {
        std::vector<std::string> alternatives;
        std::stringstream alts(group);
        std::string alt;
        while (std::getline(alts, alt, '|')) {
            std::string name = trim(alt);
            name = name.substr(0, name.find_first_of(" \t\n(:["));
            if (!name.empty()) alternatives.push_back(name);
        }
        if (!alternatives.empty()) groups.push_back(std::move(alternatives));
    }
    return groups;
}

std::string tail_of(const RunResult& r) {
    std::string text = r.out + (r.out.empty() || r.out.ends_with('\n') ? "" : "\n") + r.err;
    std::string lines = last_lines(text, 4);
    std::replace(lines.begin(), lines.end(), '\n', ' ');
    return lines;
}

// Hard-links (or copies, across filesystems) `from` to `to`.
void link_or_copy(const fs::path& from, const fs::path& to) {
    if (::link(from.c_str(), to.c_str()) == 0) return;
    std::error_code ec;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) fail("copying " + from.string() + " to " + to.string() + ": " + ec.message());
}

void remove_if_there(const fs::path& p) {
    std::error_code ec;
    fs::remove(p, ec);
    if (ec) fail("removing " + p.string() + ": " + ec.message());
}

}  // namespace

std::vector<std::string> essential_closure(const std::vector<DebInfo>& debs) {
    std::map<std::string, const DebInfo*> by_name;
    std::map<std::string, std::string> provider;  // virtual name -> first package providing it
    for (const auto& d : debs) by_name.emplace(d.package, &d);
    for (const auto& d : debs)
        for (const auto& g : relation_groups(d.provides))
            if (!g.empty()) provider.emplace(g.front(), d.package);
    std::set<std::string> chosen;
    std::deque<std::string> pending;
    for (const auto& d : debs)
        if (d.essential && chosen.insert(d.package).second) pending.push_back(d.package);
    while (!pending.empty()) {
        const DebInfo* d = by_name.at(pending.front());
        pending.pop_front();
        for (const std::string* field : {&d->pre_depends, &d->depends}) {
            for (const auto& alternatives : relation_groups(*field)) {
                for (const auto& a : alternatives) {
                    std::string name = by_name.count(a) ? a : (provider.count(a) ? provider.at(a) : "");
                    if (name.empty()) continue;
                    if (chosen.insert(name).second) pending.push_back(name);
                    break;
                }
            }
        }
    }
    return {chosen.begin(), chosen.end()};
}

bool StatusEntry::installed() const { return status.size() >= 10 && status.ends_with(" installed"); }

std::vector<StatusEntry> parse_dpkg_status(std::string_view text, const std::string& what) {
    if (text.size() > max_status_bytes) fail(what + ": larger than " + std::to_string(max_status_bytes) + " bytes");
    std::vector<StatusEntry> entries;
    std::vector<std::vector<std::vector<std::string>>> needs;  // per entry: groups of alternatives
    std::map<std::string, std::vector<size_t>> provided;        // installed real or virtual name -> entries
    auto value = [](const ControlField* f) {
        std::string v = f ? f->first : "";
        if (f)
            for (const auto& l : f->more) v += " " + l;
        return v;
    };
    for (const auto& para : control_paragraphs(text)) {
        const ControlField* name = find_field(para, "Package");
        if (!name || name->first.empty()) {
            if (find_field(para, "Status")) fail(what + ": a paragraph with a Status has no Package");
            continue;
        }
        StatusEntry e;
        e.name = name->first;
        e.status = value(find_field(para, "Status"));
        e.version = value(find_field(para, "Version"));
        if (e.installed() && e.version.empty()) fail(what + ": package '" + e.name + "' has no Version");
        e.architecture = value(find_field(para, "Architecture"));
        e.maintainer = value(find_field(para, "Maintainer"));
        std::string source = value(find_field(para, "Source"));  // "glibc (2.36-9+deb12u4)" or "glibc"
        if (size_t open = source.find('('); open != std::string::npos) {
            size_t close = source.find(')', open);
            if (close != std::string::npos) e.source_version = trim(std::string_view(source).substr(open + 1, close - open - 1));
            source = trim(std::string_view(source).substr(0, open));
        }
        e.source = source;
        auto groups = relation_groups(value(find_field(para, "Pre-Depends")));
        for (auto& g : relation_groups(value(find_field(para, "Depends")))) groups.push_back(std::move(g));
        if (e.installed()) {
            provided[e.name].push_back(entries.size());
            for (const auto& g : relation_groups(value(find_field(para, "Provides"))))
                for (const auto& p : g) provided[p].push_back(entries.size());
        }
        entries.push_back(std::move(e));
        needs.push_back(std::move(groups));
    }
    for (size_t i = 0; i < entries.size(); ++i) {
        std::set<std::string> names;
        for (const auto& group : needs[i]) {
            for (const auto& alternative : group) {
                auto it = provided.find(alternative);
                if (it == provided.end()) continue;
                names.insert(entries[it->second.front()].name);
                break;
            }
        }
        names.erase(entries[i].name);
        entries[i].depends.assign(names.begin(), names.end());
    }
    return entries;
}

void tame_installed_tree(const fs::path& staging) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(staging / "etc/ssh", ec))
        if (e.path().filename().string().starts_with("ssh_host_")) remove_if_there(e.path());
    // Empty, not missing: systemd then makes an ID on boot without treating it as a first boot.
    if (fs::exists(staging / "etc/machine-id", ec) && ::truncate((staging / "etc/machine-id").c_str(), 0) != 0)
        fail_errno("emptying " + (staging / "etc/machine-id").string());
    for (const char* p : {"var/lib/dbus/machine-id", "var/cache/ldconfig/aux-cache", "var/log/dpkg.log", "var/log/alternatives.log",
                          "var/log/apt/history.log", "var/log/apt/term.log", "var/log/apt/eipp.log.xz"})
        remove_if_there(staging / p);
    for (const char* dir : {"var/lib/dpkg", "var/cache/debconf"})
        for (const auto& e : fs::directory_iterator(staging / dir, ec))
            if (e.path().filename().string().ends_with("-old")) remove_if_there(e.path());
}

std::vector<InstalledPackage> install_packages(const fs::path& staging_in, const PackageLock& lock, const std::vector<fs::path>& debs,
                                               const InstallOptions& options) {
    const std::string& where = options.where;
    if (::geteuid() != 0)
        fail(where + ": installing Debian packages needs root (dpkg runs the maintainer scripts as root, in a bubblewrap sandbox "
                     "rooted at the image tree); run cairn as root");
    auto bwrap = find_program("bwrap");
    if (!bwrap) fail(where + ": bwrap not found: installing Debian packages needs bubblewrap (apt-get install bubblewrap)");
    if (debs.size() != lock.packages.size()) fail(where + ": " + std::to_string(debs.size()) + " .deb files for " + std::to_string(lock.packages.size()) + " locked packages");
    const fs::path staging = fs::absolute(staging_in);
    std::error_code ec;
    if (fs::exists(staging, ec) && !fs::is_empty(staging, ec)) fail(where + ": " + staging.string() + " is not empty: packages go into an empty tree first");

    // The packages' control data, and which of them form the Essential closure.
    std::vector<DebInfo> infos;
    for (size_t i = 0; i < debs.size(); ++i) {
        DebInfo info = read_deb_info(debs[i]);
        const auto& p = lock.packages[i];
        if (info.package != p.name || info.version != p.version)
            fail(where + ": " + debs[i].string() + " holds " + info.package + " " + info.version + ", not the locked " + p.name + " " + p.version);
        infos.push_back(std::move(info));
    }
    std::vector<std::string> essential = essential_closure(infos);
    if (essential.empty()) fail(where + ": the package set has no Essential package (dpkg and a shell must be in it)");
    std::set<std::string> essential_set(essential.begin(), essential.end());

    // The work folder lives under /tmp, which the sandbox covers with a tmpfs: the mount points
    // for the .debs and apt's temporary files are made in that tmpfs, never in the tree.
    TempDir work("/tmp", "cairn-dpkg-");
    const fs::path pool = work.path() / "debs", tmp = work.path() / "tmp", apt = work.path() / "apt";
    for (const auto& d : {pool, tmp, apt / "etc/apt/apt.conf.d", apt / "etc/apt/preferences.d", apt / "etc/apt/sources.list.d",
                          apt / "state/lists/partial", apt / "cache/archives/partial", apt / "log"})
        fs::create_directories(d);
    std::vector<fs::path> phase_b, phase_c;
    for (size_t i = 0; i < debs.size(); ++i) {
        fs::path in_pool = pool / debs[i].filename();
        link_or_copy(debs[i], in_pool);
        (essential_set.count(infos[i].package) ? phase_b : phase_c).push_back(in_pool);
    }

    // 1. Merged /usr and an empty dpkg database.
    Tree tree(staging);
    const Meta dir{0, 0, S_IFDIR | 0755};
    for (const char* d : {"/usr", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/etc", "/var", "/var/lib", "/var/lib/dpkg",
                          "/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/triggers", "/dev", "/proc", "/sys", "/run"})
        tree.add_directory(d, dir, where);
    tree.add_directory("/tmp", Meta{0, 0, S_IFDIR | 01777}, where);
    for (const char* d : {"bin", "sbin", "lib", "lib64"}) tree.add_symlink(std::string("/") + d, std::string("usr/") + d, Meta{0, 0, 0777}, where);
    const Meta file{0, 0, S_IFREG | 0644};
    tree.add_file("/var/lib/dpkg/status", "", file, where);
    tree.add_file("/var/lib/dpkg/available", "", file, where);
    tree.add_file("/var/lib/dpkg/arch", options.architecture + "\n", file, where);

    // openssh-server's postinst makes the host keys that are missing, which tame_installed_tree
    // then removes (each device makes its own on its first boot): empty placeholders stand in for
    // them while it runs, and go with them. RSA, ECDSA and Ed25519 key generation took 0.9 s.
    if (find_locked(lock, "openssh-server")) {
        tree.add_directory("/etc/ssh", dir, where);
        for (const char* key : {"rsa", "ecdsa", "ed25519"})
            tree.add_file(std::string("/etc/ssh/ssh_host_") + key + "_key", "", Meta{0, 0, S_IFREG | 0600}, where);
    }

    // 2. The Essential closure's files, so that its maintainer scripts find a shell and tools.
    ExtractOptions extract;
    extract.keep_directory_symlinks = true;
    for (const auto& d : phase_b) extract_deb(d, tree, extract);
    tree.apply_metadata(options.epoch, work.path(), true);
    tree.add_file("/usr/sbin/policy-rc.d", "#!/bin/sh\n# cairn: services do not start while the image is built\nexit 101\n",
                  Meta{0, 0, S_IFREG | 0755}, where);
    ::chmod((staging / "usr/sbin/policy-rc.d").c_str(), 0755);

    // 3. dpkg in the sandbox.
    std::vector<std::string> sandbox{bwrap->string(), "--bind", staging.string(), "/", "--dev", "/dev", "--proc", "/proc",
                                     "--tmpfs", "/tmp", "--tmpfs", "/run", "--ro-bind", pool.string(), pool.string(),
                                     "--bind", tmp.string(), tmp.string(), "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                                     "--unshare-net", "--die-with-parent", "--clearenv", "--chdir", "/",
                                     "--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin", "--setenv", "DEBIAN_FRONTEND", "noninteractive",
                                     "--setenv", "DEBCONF_NONINTERACTIVE_SEEN", "true", "--setenv", "LC_ALL", "C.UTF-8",
                                     "--setenv", "HOME", "/root", "--setenv", "SOURCE_DATE_EPOCH", std::to_string(options.epoch)};
    const std::vector<std::string> dpkg_options{"--force-unsafe-io", "--force-confold", "--log=/dev/null"};
    std::vector<std::string> argv = sandbox;
    argv.push_back("dpkg");
    argv.insert(argv.end(), dpkg_options.begin(), dpkg_options.end());
    argv.insert(argv.end(), {"--install", "--force-depends"});
    for (const auto& d : phase_b) argv.push_back(d.string());
    RunResult b = run(argv);
    if (b.exit_code != 0) fail(where + ": dpkg --install of the Essential packages failed in the image tree: " + tail_of(b));

    // 4. The rest through apt, which knows nothing but these files and the tree's status.
    if (!phase_c.empty()) {
        const std::string a = apt.string();
        const std::string conf = "Dir \"" + a + "/\";\nDir::State \"" + a + "/state/\";\nDir::State::status \"" + staging.string() +
                                 "/var/lib/dpkg/status\";\nDir::Cache \"" + a + "/cache/\";\nDir::Log \"" + a + "/log/\";\nDir::Etc \"" + a +
                                 "/etc/apt/\";\nDir::Etc::SourceList \"" + a + "/etc/apt/sources.list\";\nDir::Etc::SourceParts \"" + a +
                                 "/etc/apt/sources.list.d/\";\nAPT::Architecture \"" + options.architecture + "\";\nAPT::Architectures \"" +
                                 options.architecture + "\";\nAPT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n"
                                 "Debug::NoLocking \"true\";\npkgCacheGen::ForceEssential \",\";\nDpkg::Use-Pty \"false\";\n"
                                 "APT::Keep-Downloaded-Packages \"true\";\n";
        if (staging.string().find_first_of("\"\n;{}") != std::string::npos) fail(where + ": " + staging.string() + ": the path holds a quote, brace or ';'");
        write_file_atomic(apt / "apt.conf", conf);
        std::vector<std::string> c{"apt-get", "install", "-y", "-q", "-o", "Dir::Bin::dpkg=" + bwrap->string()};
        // apt runs Dir::Bin::dpkg followed by DPkg::Options, then its own arguments: bwrap's
        // arguments, then dpkg and dpkg's options.
        for (size_t i = 1; i < sandbox.size(); ++i) c.insert(c.end(), {"-o", "DPkg::Options::=" + sandbox[i]});
        c.insert(c.end(), {"-o", "DPkg::Options::=dpkg"});
        for (const auto& o : dpkg_options) c.insert(c.end(), {"-o", "DPkg::Options::=" + o});
        for (const auto& d : phase_c) c.push_back(d.string());
        RunResult r = run(c, {.extra_env = {"APT_CONFIG=" + (apt / "apt.conf").string(), "TMPDIR=" + tmp.string(), "LC_ALL=C.UTF-8", "LANGUAGE="}});
        if (r.exit_code != 0) fail(where + ": apt-get install in the image tree failed: " + tail_of(r));
    }
    remove_if_there(staging / "usr/sbin/policy-rc.d");
    tame_installed_tree(staging);

    // The tree's dpkg database must say: exactly the lock, every package configured.
    std::vector<std::string> others;
    std::vector<StatusEntry> status;
    for (auto& e : parse_dpkg_status(read_file(staging / "var/lib/dpkg/status"), (staging / "var/lib/dpkg/status").string())) {
        if (e.configured()) status.push_back(std::move(e));
        else others.push_back(e.name + ": " + e.status);
    }
    std::sort(status.begin(), status.end(), [](const StatusEntry& x, const StatusEntry& y) { return x.name < y.name; });
    if (!others.empty()) fail(where + ": packages not configured in the image tree: " + others.front() + (others.size() > 1 ? ", ..." : ""));
    std::vector<InstalledPackage> installed;
    for (const auto& s : status) {
        const LockedPackage* p = find_locked(lock, s.name);
        if (!p) fail(where + ": the image tree has " + s.name + " " + s.version + " installed, which is not in the lock");
        if (p->version != s.version) fail(where + ": the image tree has " + s.name + " " + s.version + " installed, the lock says " + p->version);
        installed.push_back({s.name, s.version, s.architecture, p->sha256, p->size, p->local});
    }
    for (const auto& p : lock.packages)
        if (!std::any_of(status.begin(), status.end(), [&](const StatusEntry& s) { return s.name == p.name; }))
            fail(where + ": locked package " + p.name + " " + p.version + " is not installed in the image tree");
    return installed;
}

}  // namespace cairn::imager
