#include "imager/apt.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "imager/deb.hpp"

namespace cairn::imager {

namespace {

std::vector<std::string> lines_of(std::string_view text) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < text.size()) {
        size_t j = text.find('\n', i);
        if (j == std::string_view::npos) j = text.size();
        out.emplace_back(trim_end(text.substr(i, j - i)));
        i = j + 1;
    }
    return out;
}

// The sources apt reads: (name in the private state, text). The host's sources.list as
// "sources.list", its parts and a recipe's file under "sources.list.d/".
std::vector<std::pair<std::string, std::string>> source_files(const PackageRequest& request) {
    std::vector<std::pair<std::string, std::string>> files;
    if (!request.sources.empty()) {
        std::string ext = request.sources.extension().string();
        if (ext != ".sources" && ext != ".list")
            fail(request.where + ": sources file " + request.sources.string() +
                 " must end in .sources (deb822) or .list (one-line format), as apt reads them");
        std::error_code ec;
        if (!fs::is_regular_file(request.sources, ec)) fail(request.where + ": sources file " + request.sources.string() + " does not exist");
        files.emplace_back("sources.list.d/recipe" + ext, read_file(request.sources));
        return files;
    }
    std::error_code ec;
    if (fs::is_regular_file("/etc/apt/sources.list", ec)) files.emplace_back("sources.list", read_file("/etc/apt/sources.list"));
    std::vector<fs::path> parts;
    for (const auto& e : fs::directory_iterator("/etc/apt/sources.list.d", ec)) {
        std::string ext = e.path().extension().string();
        if ((ext == ".list" || ext == ".sources") && e.is_regular_file()) parts.push_back(e.path());
    }
    std::sort(parts.begin(), parts.end());
    for (const auto& p : parts) files.emplace_back("sources.list.d/" + p.filename().string(), read_file(p));
    return files;
}

std::string sources_digest(const std::vector<std::pair<std::string, std::string>>& files, const std::string& architecture) {
    Sha256 h;
    h.update("cairn apt state 1\n" + architecture + "\n");
    for (const auto& [name, text] : files) h.update(name + "\n" + std::to_string(text.size()) + "\n").update(text);
    return to_hex(h.final());
}

void check_conf_value(const std::string& value, const std::string& what) {
    if (value.find_first_of("\"\n{};") != std::string::npos)
        fail(what + ": '" + value + "' cannot be written into an apt configuration (it holds a quote, brace, ';' or line end)");
}

// The private apt state of one sources digest, held under an exclusive flock while it exists.
class AptState {
public:
    AptState(const fs::path& cache, const PackageRequest& request) {
        if (request.architecture.empty()) fail(request.where + ": no architecture");
        check_conf_value(request.architecture, request.where);
        auto files = source_files(request);
        dir_ = fs::absolute(cache) / "apt" / sources_digest(files, request.architecture).substr(0, 16);
        check_conf_value(dir_.string(), request.where);
        fs::create_directories(dir_);
        lock_ = open_file(dir_ / "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (::flock(lock_.get(), LOCK_EX) != 0) fail_errno("locking " + (dir_ / "lock").string());
        for (const char* d : {"etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d", "var/lib/apt/lists/partial",
                              "var/cache/apt/archives/partial", "var/lib/dpkg", "var/log/apt"})
            fs::create_directories(dir_ / d);
        // apt drops to the _apt user for downloads: it must reach the lists (else it warns and downloads as root).
        ::chmod(dir_.parent_path().c_str(), 0755);
        ::chmod(dir_.c_str(), 0755);
        // The sources, as apt will read them: stale ones from an earlier version of this state go.
        for (const auto& e : fs::directory_iterator(dir_ / "etc/apt/sources.list.d")) fs::remove(e.path());
        fs::remove(dir_ / "etc/apt/sources.list");
        for (const auto& [name, text] : files) write_file_atomic(dir_ / "etc/apt" / name, text);
        write_file_atomic(dir_ / "var/lib/dpkg/status", "");
        const std::string d = dir_.string();
        std::string conf = "// Written by cairn: a private apt state (see imager/apt.hpp).\n"
                           "Dir \"" + d + "/\";\n"
                           "Dir::State \"" + d + "/var/lib/apt/\";\n"
                           "Dir::State::status \"" + d + "/var/lib/dpkg/status\";\n"
                           "Dir::Cache \"" + d + "/var/cache/apt/\";\n"
                           "Dir::Log \"" + d + "/var/log/apt/\";\n"
                           "Dir::Etc \"" + d + "/etc/apt/\";\n"
                           "Dir::Etc::SourceList \"" + d + "/etc/apt/sources.list\";\n"
                           "Dir::Etc::SourceParts \"" + d + "/etc/apt/sources.list.d/\";\n"
                           "Dir::Etc::Trusted \"/etc/apt/trusted.gpg\";\n"
                           "Dir::Etc::TrustedParts \"/etc/apt/trusted.gpg.d/\";\n"
                           "APT::Architecture \"" + request.architecture + "\";\n"
                           "APT::Architectures \"" + request.architecture + "\";\n"
                           "APT::Install-Recommends \"false\";\n"
                           "APT::Install-Suggests \"false\";\n"
                           "Acquire::Languages \"none\";\n"
                           "Debug::NoLocking \"true\";\n"
                           "pkgCacheGen::ForceEssential \",\";\n";
        write_file_atomic(dir_ / "apt.conf", conf);
    }

    RunOptions options() const { return {.extra_env = {"APT_CONFIG=" + (dir_ / "apt.conf").string(), "LC_ALL=C.UTF-8", "LANGUAGE="}}; }

private:
    fs::path dir_;
    UniqueFd lock_;
};

std::string apt_output(const RunResult& r) { return r.out + (r.out.empty() || r.out.ends_with('\n') ? "" : "\n") + r.err; }

// apt's "E: " lines joined with "; " (the last line when there are none).
std::string error_lines(std::string_view output) {
    std::string joined;
    for (const auto& line : lines_of(output))
        if (line.starts_with("E: ")) joined += (joined.empty() ? "" : "; ") + line.substr(3);
    return joined.empty() ? trim(last_lines(output, 1)) : joined;
}

bool is_local_deb_argument(const std::string& a) { return a.find('/') != std::string::npos; }

}  // namespace

std::string deb_file_name(std::string_view name, std::string_view version, std::string_view architecture) {
    std::string v;
    for (char c : version) v += c == ':' ? std::string("%3a") : std::string(1, c);
    return std::string(name) + "_" + v + "_" + std::string(architecture) + ".deb";
}

std::vector<std::string> apt_arguments(const PackageRequest& request) {
    std::vector<std::string> args{"?essential"};
    if (request.base == "minbase" || request.base == "required") {
        args.push_back("?priority(required)");
    } else if (request.base == "important") {
        args.push_back("?priority(required)");
        args.push_back("?priority(important)");
    } else if (!request.base.empty() && request.base != "essential") {
        fail(request.where + ": unknown base set '" + request.base + "' (Cairn knows essential, minbase, required and important)");
    }
    args.push_back("usr-is-merged");
    for (const auto& p : request.packages) {
        if (p.empty() || p[0] == '-' || is_local_deb_argument(p))
            fail(request.where + ": '" + p + "' is not a package name (local .debs are listed apart)");
        args.push_back(p);
    }
    for (const auto& d : request.local_debs) {
        if (d.extension() != ".deb") fail(request.where + ": local package " + d.string() + " is not a .deb file");
        args.push_back(fs::absolute(d).lexically_normal().string());
    }
    return args;
}

std::string request_digest(const PackageRequest& request) {
    Sha256 h;
    h.update("cairn package request 1\nbase " + request.base + "\narch " + request.architecture + "\n");
    for (const auto& p : request.packages) h.update("package " + p + "\n");
    for (const auto& d : request.local_debs) h.update("local " + d.filename().string() + "\n");
    h.update("sources " + sources_digest(source_files(request), request.architecture) + "\n");
    return to_hex(h.final());
}

std::vector<SimulatedInstall> parse_simulation(std::string_view output) {
    std::vector<SimulatedInstall> out;
    for (const auto& line : lines_of(output)) {
        if (!line.starts_with("Inst ")) continue;
        // Inst NAME [OLD] (VERSION ARCHIVE... [ARCH]) [BROKEN...]
        size_t name_end = line.find(' ', 5);
        size_t open = line.find(" (", 5);
        size_t close = open == std::string::npos ? std::string::npos : line.find(')', open);
        if (name_end == std::string::npos || open == std::string::npos || close == std::string::npos)
            fail("apt-get printed an install line Cairn cannot read: '" + line + "'");
        std::string inner = line.substr(open + 2, close - open - 2);
        size_t version_end = inner.find(' ');
        size_t arch_open = inner.rfind('[');
        if (version_end == std::string::npos || arch_open == std::string::npos || inner.back() != ']')
            fail("apt-get printed an install line Cairn cannot read: '" + line + "'");
        out.push_back({line.substr(5, name_end - 5), inner.substr(0, version_end), inner.substr(arch_open + 1, inner.size() - arch_open - 2)});
    }
    return out;
}

std::vector<PrintedUri> parse_print_uris(std::string_view output) {
    std::vector<PrintedUri> out;
    for (const auto& line : lines_of(output)) {
        if (!line.starts_with('\'')) continue;
        size_t close = line.find('\'', 1);
        if (close == std::string::npos) fail("apt-get printed a download line Cairn cannot read: '" + line + "'");
        PrintedUri u;
        u.url = line.substr(1, close - 1);
        std::istringstream rest(line.substr(close + 1));
        std::string size, hash;
        rest >> u.filename >> size >> hash;
        try {
            size_t used = 0;
            u.size = std::stoull(size, &used);
            if (used != size.size()) throw std::invalid_argument(size);
        } catch (const std::exception&) {
            fail("apt-get printed a download line Cairn cannot read (size): '" + line + "'");
        }
        if (u.filename.empty()) fail("apt-get printed a download line Cairn cannot read: '" + line + "'");
        if (hash.starts_with("SHA256:")) u.sha256 = hash.substr(7);
        else if (!hash.empty()) fail("apt-get printed a " + hash.substr(0, hash.find(':')) + " hash, not SHA256, for " + u.filename);
        out.push_back(std::move(u));
    }
    return out;
}

std::string apt_failure(std::string_view output) {
    auto lines = lines_of(output);
    // The solver's explanation: the lines after "The following packages have unmet dependencies:".
    std::vector<std::string> unmet;
    bool in_unmet = false;
    for (const auto& line : lines) {
        if (line.starts_with("The following packages have unmet dependencies")) {
            in_unmet = true;
            continue;
        }
        if (!in_unmet) continue;
        if (line.starts_with("E: ") || line.starts_with("W: ") || trim(line).empty()) break;
        unmet.push_back(trim(line));
    }
    if (!unmet.empty()) {
        std::string joined;
        bool conflict = false;
        for (const auto& u : unmet) {
            joined += (joined.empty() ? "" : "; ") + u;
            if (u.find("Conflicts:") != std::string::npos || u.find("Breaks:") != std::string::npos) conflict = true;
        }
        return (conflict ? "conflicting packages: " : "apt cannot satisfy the dependencies: ") + joined;
    }
    std::vector<std::string> errors;
    for (const auto& line : lines)
        if (line.starts_with("E: ")) errors.push_back(line.substr(3));
    for (const auto& e : errors) {
        const std::string locate = "Unable to locate package ";
        if (e.starts_with(locate)) return "unknown package '" + e.substr(locate.size()) + "' (no package of that name in the sources)";
        if (e.starts_with("Package '") && e.ends_with("' has no installation candidate")) {
            std::string name = e.substr(9, e.size() - 9 - 31);
            // "Package X is a virtual package provided by:" then "  provider version" lines.
            std::vector<std::string> providers;
            bool in_list = false;
            for (const auto& line : lines) {
                if (line.find(" is a virtual package provided by:") != std::string::npos) {
                    in_list = true;
                    continue;
                }
                if (!in_list) continue;
                if (!line.starts_with("  ")) break;
                providers.push_back(trim(line).substr(0, trim(line).find(' ')));
            }
            std::string text = "package '" + name + "' has no installation candidate";
            if (providers.empty()) return text + " (it is known, but no source offers a version of it)";
            std::string list;
            for (size_t i = 0; i < providers.size() && i < 5; ++i) list += (i ? ", " : "") + providers[i];
            if (providers.size() > 5) list += ", ...";
            return text + " (a virtual package: name one of its providers: " + list + ")";
        }
        if (e.starts_with("Version '") && e.find("' for '") != std::string::npos && e.ends_with("' was not found")) {
            size_t mid = e.find("' for '");
            std::string version = e.substr(9, mid - 9);
            std::string name = e.substr(mid + 7, e.size() - mid - 7 - 15);
            return "package '" + name + "' has no version '" + version + "' in the sources";
        }
    }
    return "apt-get failed: " + error_lines(output);
}

PackageLock resolve_packages(const PackageRequest& request, const fs::path& cache) {
    std::vector<std::string> args = apt_arguments(request);
    std::map<std::string, DebInfo> local;  // by package name
    for (const auto& d : request.local_debs) {
        std::error_code ec;
        if (!fs::is_regular_file(d, ec)) fail(request.where + ": local package " + d.string() + " does not exist");
        DebInfo info = read_deb_info(d);
        if (info.package.empty() || info.version.empty()) fail(request.where + ": local package " + d.string() + " has no Package or Version field");
        local[info.package] = info;
    }
    AptState state(cache, request);
    RunResult update = run({"apt-get", "update", "-q"}, state.options());
    if (update.exit_code != 0) fail(request.where + ": apt-get update failed: " + error_lines(apt_output(update)));

    std::vector<std::string> simulate{"apt-get", "install", "-s", "-q"};
    simulate.insert(simulate.end(), args.begin(), args.end());
    RunResult sim = run(simulate, state.options());
    if (sim.exit_code != 0) fail(request.where + ": " + apt_failure(apt_output(sim)));
    std::vector<std::string> uris{"apt-get", "install", "--print-uris", "-qq", "-o", "Acquire::ForceHash=SHA256"};
    uris.insert(uris.end(), args.begin(), args.end());
    RunResult printed = run(uris, state.options());
    if (printed.exit_code != 0) fail(request.where + ": " + apt_failure(apt_output(printed)));

    std::map<std::string, PrintedUri> by_file;
    for (auto& u : parse_print_uris(printed.out)) by_file[u.filename] = u;
    PackageLock lock;
    lock.request_digest = request_digest(request);
    for (const auto& inst : parse_simulation(sim.out)) {
        LockedPackage p{inst.name, inst.version, inst.architecture};
        auto l = local.find(inst.name);
        if (l != local.end() && l->second.version == inst.version) {
            p.local = true;
            p.filename = l->second.file.filename().string();
            p.sha256 = sha256_file_hex(l->second.file);
            p.size = fs::file_size(l->second.file);
        } else {
            p.filename = deb_file_name(inst.name, inst.version, inst.architecture);
            auto u = by_file.find(p.filename);
            if (u == by_file.end()) fail(request.where + ": apt printed no download for " + inst.name + " " + inst.version + " (" + p.filename + ")");
            if (u->second.sha256.size() != 64)
                fail(request.where + ": the sources give no SHA-256 for " + inst.name + " " + inst.version + " (Cairn locks files by SHA-256)");
            p.url = u->second.url;
            p.sha256 = u->second.sha256;
            p.size = u->second.size;
        }
        lock.packages.push_back(std::move(p));
    }
    for (const auto& [name, info] : local)
        if (!find_locked(lock, name)) fail(request.where + ": apt did not choose the local package " + info.file.string());
    std::sort(lock.packages.begin(), lock.packages.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return lock;
}

std::vector<fs::path> fetch_packages(const PackageLock& lock, const PackageRequest& request, const fs::path& cache) {
    const fs::path debs = fs::absolute(cache) / "debs";
    fs::create_directories(debs);
    std::vector<fs::path> files(lock.packages.size());
    auto cannot = [&](const LockedPackage& p, const std::string& why) {
        fail(request.where + ": locked package " + p.name + " " + p.version + " cannot be had: " + why);
    };
    std::map<std::string, fs::path> local_by_name;
    for (const auto& d : request.local_debs) local_by_name[d.filename().string()] = d;

    std::vector<size_t> missing;
    for (size_t i = 0; i < lock.packages.size(); ++i) {
        const auto& p = lock.packages[i];
        if (p.local) {
            auto it = local_by_name.find(p.filename);
            if (it == local_by_name.end()) cannot(p, "the recipe names no local package " + p.filename);
            std::error_code ec;
            if (!fs::is_regular_file(it->second, ec)) cannot(p, it->second.string() + " does not exist");
            std::string got = sha256_file_hex(it->second);
            if (got != p.sha256)
                cannot(p, it->second.string() + " has changed since it was locked (SHA-256 " + got + ", locked " + p.sha256 +
                              "); run cairn lock --update to take the new file");
            files[i] = it->second;
            continue;
        }
        fs::path f = debs / p.filename;
        std::error_code ec;
        if (fs::is_regular_file(f, ec) && sha256_file_hex(f) == p.sha256) {
            files[i] = f;
            continue;
        }
        if (p.url.empty()) cannot(p, "it is not in the cache " + debs.string() + " and the lock has no URL for it");
        missing.push_back(i);
    }
    if (missing.empty()) return files;

    // Downloads go to a folder of their own, then each checked file moves into the cache.
    TempDir tmp(debs, ".download-");
    std::vector<std::string> argv{"/usr/lib/apt/apt-helper", "-o", "APT::Sandbox::User=root", "-o", "Acquire::Languages=none",
                                  "download-file"};
    for (size_t i : missing) {
        const auto& p = lock.packages[i];
        argv.insert(argv.end(), {p.url, (tmp.path() / p.filename).string(), "SHA256:" + p.sha256});
    }
    // A configuration of its own: the host's apt.conf.d stays out of Cairn's downloads too.
    const fs::path etc = fs::absolute(cache) / "apt" / "fetch" / "etc";
    fs::create_directories(etc / "apt.conf.d");
    check_conf_value(etc.string(), request.where);
    write_file_atomic(etc.parent_path() / "apt.conf", "Dir::Etc \"" + etc.string() + "/\";\nDir::Log \"" + etc.parent_path().string() + "/\";\n");
    RunResult r = run(argv, {.extra_env = {"APT_CONFIG=" + (etc.parent_path() / "apt.conf").string(), "LC_ALL=C.UTF-8", "LANGUAGE="}});
    std::string output = apt_output(r);
    for (size_t i : missing) {
        const auto& p = lock.packages[i];
        fs::path got = tmp.path() / p.filename;
        std::error_code ec;
        if (r.exit_code != 0 || !fs::is_regular_file(got, ec)) {
            // apt-helper's "Err:N URL" line and the reason on the next one.
            auto lines = lines_of(output);
            for (size_t k = 0; k < lines.size(); ++k) {
                if (lines[k].starts_with("Err:") && lines[k].ends_with(" " + p.url)) {
                    std::string reason = k + 1 < lines.size() ? trim(lines[k + 1]) : "download failed";
                    if (reason == "Hash Sum mismatch") reason = "the file at the URL does not have the locked SHA-256 " + p.sha256;
                    cannot(p, p.url + ": " + reason);
                }
            }
            if (!fs::is_regular_file(got, ec)) cannot(p, p.url + ": " + (r.exit_code ? apt_failure(output) : "not downloaded"));
            continue;  // another file failed; this one came
        }
        std::string sum = sha256_file_hex(got);
        if (sum != p.sha256) cannot(p, p.url + " gave a file with SHA-256 " + sum + ", locked " + p.sha256);
        fs::rename(got, debs / p.filename);
        files[i] = debs / p.filename;
    }
    if (r.exit_code != 0) fail(request.where + ": downloading the locked packages failed: " + apt_failure(output));
    return files;
}

}  // namespace cairn::imager
