#include "imager/deb.hpp"

#include <archive_entry.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

std::vector<ControlParagraph> control_paragraphs(std::string_view text) {
    std::vector<ControlParagraph> result;
    ControlParagraph current;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (trim(line).empty()) {
            if (!current.empty()) result.push_back(std::move(current));
            current.clear();
            continue;
        }
        if (line.front() == '#') continue;
        if (line.front() == ' ' || line.front() == '\t') {
            if (!current.empty()) current.back().more.emplace_back(line.substr(1));
            continue;
        }
        size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) continue;
        current.push_back(ControlField{trim(line.substr(0, colon)), trim(line.substr(colon + 1)), {}});
    }
    if (!current.empty()) result.push_back(std::move(current));
    return result;
}

const ControlField* find_field(const ControlParagraph& p, std::string_view name) {
    auto same = [](std::string_view a, std::string_view b) {
        return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
                   return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
               });
    };
    for (const auto& f : p)
        if (same(f.name, name)) return &f;
    return nullptr;
}

namespace {

// Parses the first stanza of an RFC 822-style control text.
std::map<std::string, std::string> parse_control(const std::string& text) {
    std::map<std::string, std::string> fields;
    std::istringstream in(text);
    std::string line, last;
    while (std::getline(in, line)) {
        if (line.empty()) {
            if (!fields.empty()) break;
            continue;
        }
        if ((line[0] == ' ' || line[0] == '\t') && !last.empty()) {
            fields[last] += "\n" + line;
            continue;
        }
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        last = line.substr(0, colon);
        size_t start = line.find_first_not_of(' ', colon + 1);
        fields[last] = start == std::string::npos ? "" : line.substr(start);
    }
    return fields;
}

// Opens the member of a .deb (an ar archive) whose name starts with `prefix` and hands a reader
// of its (compressed) tar to `use`.
void with_member(const fs::path& deb, const std::string& prefix, const std::function<void(archive*)>& use) {
    ArchiveReader outer(archive_read_new());
    archive_read_support_format_ar(outer.get());
    if (archive_read_open_filename(outer.get(), deb.c_str(), 1 << 16) != ARCHIVE_OK)
        fail(deb.string() + ": not a Debian package: " + archive_error(outer.get()));
    archive_entry* entry = nullptr;
    bool seen_binary = false;
    for (;;) {
        int r = archive_read_next_header(outer.get(), &entry);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) fail(deb.string() + ": not a Debian package: " + archive_error(outer.get()));
        std::string name = archive_entry_pathname(entry);
        if (name == "debian-binary") seen_binary = true;
        if (!name.starts_with(prefix)) continue;
        if (!seen_binary) fail(deb.string() + ": not a Debian package (no debian-binary member first)");
        ArchiveReader inner = new_archive_reader();
        auto read = [](archive*, void* outer_archive, const void** buffer) -> la_ssize_t {
            static thread_local char block[1 << 16];
            *buffer = block;
            return archive_read_data(static_cast<archive*>(outer_archive), block, sizeof block);
        };
        if (archive_read_open(inner.get(), outer.get(), nullptr, read, nullptr) != ARCHIVE_OK)
            fail(deb.string() + ": " + name + ": " + archive_error(inner.get()));
        use(inner.get());
        return;
    }
    fail(deb.string() + ": not a Debian package (it has no " + prefix + "* member)");
}

}  // namespace

fs::path default_cache_dir() {
    if (const char* c = std::getenv("CAIRN_CACHE"); c && *c) return c;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "cairn";
    if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache" / "cairn";
    return fs::temp_directory_path() / "cairn-cache";
}

AptPackage apt_show(const std::string& package, const std::string& what) {
    RunResult r = run({"apt-cache", "show", "--no-all-versions", package});
    auto fields = parse_control(r.out);
    if (r.exit_code != 0 || fields.find("Package") == fields.end()) {
        fail(what + ": unknown Debian package '" + package +
             "' (apt-cache knows no such package; check the name, or run apt-get update)");
    }
    AptPackage p{fields["Package"], fields["Version"], fields["Architecture"], fields["Filename"], fields["SHA256"], fields["Depends"]};
    if (p.filename.empty()) fail(what + ": Debian package '" + package + "' has no downloadable file in apt's lists");
    return p;
}

fs::path fetch_deb(const std::string& package, const fs::path& cache, const std::string& what) {
    AptPackage p = apt_show(package, what);
    fs::path dir = cache / "debs";
    fs::create_directories(dir);
    fs::path file = dir / fs::path(p.filename).filename();
    std::error_code ec;
    if (fs::exists(file, ec) && (p.sha256.empty() || sha256_file_hex(file) == p.sha256)) return file;

    TempDir tmp(dir, ".download-");
    ::chmod(tmp.path().c_str(), 0755);  // apt's _apt sandbox user must be able to write here when run as root
    RunResult r = run({"apt-get", "download", "-q", p.name + "=" + p.version}, {.cwd = tmp.path()});
    if (r.exit_code != 0) {
        fail(what + ": apt-get download " + p.name + "=" + p.version + " failed: " + last_lines(r.err.empty() ? r.out : r.err, 1));
    }
    fs::path got;
    for (const auto& e : fs::directory_iterator(tmp.path()))
        if (e.path().extension() == ".deb") got = e.path();
    if (got.empty()) fail(what + ": apt-get download " + p.name + " produced no .deb");
    if (!p.sha256.empty() && sha256_file_hex(got) != p.sha256)
        fail(what + ": downloaded " + got.filename().string() + " does not have the SHA-256 apt expects");
    fs::rename(got, file);
    return file;
}

DebInfo read_deb_info(const fs::path& deb) {
    DebInfo info;
    info.file = deb;
    with_member(deb, "control.tar", [&](archive* a) {
        archive_entry* entry = nullptr;
        while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
            std::string name = archive_entry_pathname(entry);
            if (name != "./control" && name != "control") continue;
            std::string text;
            char buffer[8192];
            la_ssize_t r;
            while ((r = archive_read_data(a, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(r));
            auto fields = parse_control(text);
            info.package = fields["Package"];
            info.version = fields["Version"];
            info.architecture = fields["Architecture"];
            info.depends = fields["Depends"];
            info.pre_depends = fields["Pre-Depends"];
            info.provides = fields["Provides"];
            info.essential = fields["Essential"] == "yes";
            return;
        }
        fail(deb.string() + ": not a Debian package (no control file)");
    });
    return info;
}

DebInfo extract_deb(const fs::path& deb, Tree& tree, const ExtractOptions& options) {
    DebInfo info = read_deb_info(deb);
    with_member(deb, "data.tar", [&](archive* a) { extract_into(a, tree, options, deb.string()); });
    return info;
}

}  // namespace cairn::imager
