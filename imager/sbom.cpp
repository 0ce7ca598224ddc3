#include "imager/sbom.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <set>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/text.hpp"
#include "common/uuid.hpp"
#include "imager/deb.hpp"
#include "imager/dpkg.hpp"

namespace cairn::imager::sbom {

namespace {

using nlohmann::json;

std::string lower(std::string_view s) {
    std::string r(s);
    for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return r;
}


// ---- deb822 paragraphs (copyright files, dpkg's status file) ----

using Field = ControlField;
using Paragraph = ControlParagraph;

std::vector<Paragraph> paragraphs(std::string_view text) { return control_paragraphs(text); }

// The text of a multi-line field's continuation lines (" ." is an empty line).
std::string field_text(const Field& f) {
    std::string text;
    for (const auto& l : f.more) {
        std::string t = trim_end(l);
        if (trim(t) == ".") t.clear();
        text += t;
        text += '\n';
    }
    return text;
}

// ---- Debian licence names -> SPDX ----

struct Versioned {
    const char* family;   // lower case
    const char* version;  // as SPDX writes it
    const char* spdx;     // the id; for the GNU families the stem, "-only"/"-or-later" added
};

// Licences whose Debian short name (DEP-5 section "License short name") and SPDX id name the same text.
constexpr Versioned versioned[] = {
    {"gpl", "1.0", "GPL-1.0"},      {"gpl", "2.0", "GPL-2.0"},     {"gpl", "3.0", "GPL-3.0"},
    {"lgpl", "2.0", "LGPL-2.0"},    {"lgpl", "2.1", "LGPL-2.1"},   {"lgpl", "3.0", "LGPL-3.0"},
    {"agpl", "3.0", "AGPL-3.0"},
    {"gfdl", "1.1", "GFDL-1.1"},    {"gfdl", "1.2", "GFDL-1.2"},   {"gfdl", "1.3", "GFDL-1.3"},
    {"gfdl-niv", "1.1", "GFDL-1.1-no-invariants"}, {"gfdl-niv", "1.2", "GFDL-1.2-no-invariants"},
    {"gfdl-niv", "1.3", "GFDL-1.3-no-invariants"},
    {"apache", "1.0", "Apache-1.0"}, {"apache", "1.1", "Apache-1.1"}, {"apache", "2.0", "Apache-2.0"},
    {"artistic", "2.0", "Artistic-2.0"},
    {"mpl", "1.0", "MPL-1.0"},      {"mpl", "1.1", "MPL-1.1"},     {"mpl", "2.0", "MPL-2.0"},
    {"epl", "1.0", "EPL-1.0"},      {"epl", "2.0", "EPL-2.0"},
    {"cddl", "1.0", "CDDL-1.0"},    {"cddl", "1.1", "CDDL-1.1"},
    {"cc0", "1.0", "CC0-1.0"},
    {"zope", "2.0", "ZPL-2.0"},     {"zope", "2.1", "ZPL-2.1"},    {"zpl", "2.1", "ZPL-2.1"},
    {"lppl", "1.3a", "LPPL-1.3a"},  {"lppl", "1.3c", "LPPL-1.3c"},
    {"ofl", "1.0", "OFL-1.0"},      {"ofl", "1.1", "OFL-1.1"},
    {"python", "2.0", "Python-2.0"}, {"psf", "2.0", "PSF-2.0"},
    {"bsl", "1.0", "BSL-1.0"},
    {"bzip2", "1.0.6", "bzip2-1.0.6"},
};

constexpr const char* cc_families[] = {"cc-by", "cc-by-sa", "cc-by-nd", "cc-by-nc", "cc-by-nc-sa", "cc-by-nc-nd"};
constexpr const char* cc_versions[] = {"1.0", "2.0", "2.5", "3.0", "4.0"};

constexpr std::pair<const char*, const char*> unversioned[] = {
    {"expat", "MIT"}, {"mit", "MIT"}, {"isc", "ISC"}, {"zlib", "Zlib"}, {"cc0", "CC0-1.0"},
    {"bsd-2-clause", "BSD-2-Clause"}, {"bsd-3-clause", "BSD-3-Clause"}, {"bsd-4-clause", "BSD-4-Clause"},
    {"0bsd", "0BSD"}, {"w3c", "W3C"}, {"x11", "X11"}, {"openssl", "OpenSSL"}, {"curl", "curl"},
    {"unlicense", "Unlicense"}, {"wtfpl", "WTFPL"}, {"libpng", "Libpng"}, {"ijg", "IJG"},
    {"sleepycat", "Sleepycat"}, {"tcl", "TCL"}, {"ftl", "FTL"}, {"beerware", "Beerware"},
};

bool gnu_family(std::string_view family) {
    return family == "gpl" || family == "lgpl" || family == "agpl" || family == "gfdl" || family == "gfdl-niv";
}

// "2" -> "2.0" for the families whose SPDX ids always carry a minor number.
std::string normal_version(std::string_view family, std::string_view version) {
    std::string v(version);
    bool needs_minor = gnu_family(family) || family == "apache" || family == "artistic" || family == "mpl" ||
                       family == "epl" || family == "cc0" || family == "zope" || family == "python" ||
                       family == "psf" || family == "bsl" || family == "ofl" ||
                       std::find(std::begin(cc_families), std::end(cc_families), family) != std::end(cc_families);
    if (needs_minor && v.find('.') == std::string::npos) v += ".0";
    return v;
}

// A licence version: digits and dots, then at most one letter (LPPL-1.3c).
bool is_version(std::string_view v) {
    if (v.empty() || !std::isdigit(static_cast<unsigned char>(v.front()))) return false;
    for (size_t i = 0; i < v.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(v[i]);
        if (std::isdigit(c) || c == '.') continue;
        if (std::isalpha(c) && i + 1 == v.size()) continue;
        return false;
    }
    return true;
}

// ---- DEP-5 License expressions ----

constexpr size_t max_expression_chars = 1024;
constexpr size_t max_terms = 256;

struct Parsed {
    std::string spdx;              // the SPDX expression
    std::vector<std::string> names;  // Debian names of its terms, in order
    bool has_or = false;
    bool ok = false;
};

// "GPL-2+ or Artistic, and BSD-3-clause" -> "(GPL-2.0-or-later OR LicenseRef-Artistic) AND BSD-3-Clause".
// DEP-5: "and" binds tighter than "or" (as SPDX's AND does); a comma before "and"/"or" makes all
// that comes before it one operand. "with X exception" makes the whole term a LicenseRef (SPDX's
// exception list has no ids for Debian's exception names).
Parsed parse_expression(std::string_view value) {
    Parsed result;
    if (value.size() > max_expression_chars) return result;
    // Segments split at commas; words split at blanks.
    std::vector<std::vector<std::string>> segments(1);
    std::string word;
    auto flush = [&] {
        if (!word.empty()) segments.back().push_back(std::move(word));
        word.clear();
    };
    for (char c : value) {
        if (c == ' ' || c == '\t') {
            flush();
        } else if (c == ',') {
            flush();
            segments.emplace_back();
        } else {
            word += c;
        }
    }
    flush();

    auto paren = [](const std::string& s, size_t terms) { return terms > 1 ? "(" + s + ")" : s; };
    std::string expression;
    size_t expression_terms = 0;
    for (size_t s = 0; s < segments.size(); ++s) {
        const auto& words = segments[s];
        size_t i = 0;
        std::string join;
        if (s > 0) {
            // After a comma: "and" or "or", then a term.
            if (words.empty()) return result;
            std::string op = lower(words[0]);
            if (op != "and" && op != "or") return result;
            join = op == "and" ? " AND " : " OR ";
            if (op == "or") result.has_or = true;
            i = 1;
        }
        std::string body;
        size_t terms = 0;
        bool expect_term = true;
        std::string term;
        bool in_with = false;
        auto end_term = [&] {
            if (in_with && term.size() >= 5 && term.compare(term.size() - 5, 5, " with") == 0) return false;  // "with" and no exception
            std::string id = in_with ? license_ref(term) : spdx_license_id(term).value_or(license_ref(term));
            result.names.push_back(term);
            body += id;
            ++terms;
            term.clear();
            in_with = false;
            return true;
        };
        for (; i < words.size(); ++i) {
            std::string l = lower(words[i]);
            if (l == "and" || l == "or") {
                if (expect_term || !end_term()) return result;
                body += l == "and" ? " AND " : " OR ";
                if (l == "or") result.has_or = true;
                expect_term = true;
            } else if (l == "with") {
                if (expect_term || in_with) return result;
                in_with = true;
                term += " with";
            } else if (in_with) {
                term += " " + words[i];
            } else {
                if (!expect_term) return result;  // two names in a row
                term = words[i];
                expect_term = false;
            }
        }
        if (expect_term || !end_term()) return result;  // empty, or ends with an operator
        if (result.names.size() > max_terms) return result;
        if (s == 0) {
            expression = body;
            expression_terms = terms;
        } else {
            expression = paren(expression, expression_terms) + join + paren(body, terms);
            expression_terms = 2;
        }
    }
    result.spdx = expression;
    result.ok = true;
    return result;
}

bool is_dep5(const Paragraph& header) {
    for (const char* name : {"Format", "Format-Specification"}) {
        if (const Field* f = find_field(header, name)) {
            std::string v = lower(f->first);
            if (v.find("copyright-format/1.0") != std::string::npos || v.find("dep5") != std::string::npos) return true;
        }
    }
    return false;
}

LicenseInfo no_assertion(std::string reason) {
    LicenseInfo info;
    info.reason = std::move(reason);
    return info;
}

// ---- reading inside a staged tree ----

// Opens root/relative with symlinks resolved inside root (openat2 RESOLVE_IN_ROOT), never blocking on a FIFO.
UniqueFd open_in_root(const fs::path& root, const std::string& relative, std::string& why) {
    UniqueFd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) {
        why = root.string() + ": " + errno_text(errno);
        return {};
    }
    struct open_how how {};
    how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    int fd = static_cast<int>(::syscall(SYS_openat2, dir.get(), relative.c_str(), &how, sizeof how));
    if (fd < 0) {
        why = relative + ": " + errno_text(errno);
        return {};
    }
    return UniqueFd(fd);
}

// Reads at most `limit` bytes of a regular file; false (with why) when it is not one or is larger.
bool read_capped(int fd, size_t limit, std::string& out, std::string& why) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        why = "not a regular file";
        return false;
    }
    if (static_cast<uint64_t>(st.st_size) > limit) {
        why = "larger than " + std::to_string(limit) + " bytes";
        return false;
    }
    out.clear();
    char buffer[65536];
    for (;;) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            why = errno_text(errno);
            return false;
        }
        if (n == 0) break;
        if (out.size() + static_cast<size_t>(n) > limit) {
            why = "larger than " + std::to_string(limit) + " bytes";
            return false;
        }
        out.append(buffer, static_cast<size_t>(n));
    }
    return true;
}

// Debian package names (Policy 5.6.1): lower-case letters, digits, + - . ; at least two, starting alphanumeric.
bool valid_package_name(std::string_view name) {
    if (name.size() < 2 || name.size() > 256) return false;
    if (!std::islower(static_cast<unsigned char>(name[0])) && !std::isdigit(static_cast<unsigned char>(name[0]))) return false;
    for (char c : name)
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.'))
            return false;
    return true;
}

// ---- CycloneDX ----

std::string iso8601(int64_t epoch) {
    std::time_t t = static_cast<std::time_t>(epoch);
    std::tm tm {};
    if (!::gmtime_r(&t, &tm)) fail("SBOM: timestamp " + std::to_string(epoch) + " is out of range");
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buffer;
}

std::string checked_sha256(const std::string& hex, const std::string& what) {
    std::string l = lower(hex);
    if (l.size() != 64 || l.find_first_not_of("0123456789abcdef") != std::string::npos)
        fail("SBOM: " + what + ": sha256 '" + hex + "' is not 64 hex digits");
    return l;
}

json hashes(const std::string& hex, const std::string& what) {
    return json::array({{{"alg", "SHA-256"}, {"content", checked_sha256(hex, what)}}});
}

void require(const std::string& value, const std::string& field, const std::string& what) {
    if (value.empty()) fail("SBOM: " + what + " has no " + field);
}

json licenses(const LicenseInfo& info) {
    json list = json::array();
    if (info.conjunction) {
        for (const auto& t : info.terms) {
            json license;
            if (t.is_spdx_id) {
                license["id"] = t.spdx;
            } else {
                license["name"] = t.spdx;
                if (!t.text.empty()) license["text"] = {{"contentType", "text/plain"}, {"content", t.text}};
            }
            list.push_back({{"license", license}});
        }
    } else {
        list.push_back({{"expression", *info.expression}});
    }
    return list;
}

// Percent-encodes what purl's version component may not hold as is.
std::string purl_escape(std::string_view s) {
    static const char hex[] = "0123456789ABCDEF";
    std::string r;
    for (char ch : s) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == '~') {
            r += ch;
        } else {
            r += '%';
            r += hex[c >> 4];
            r += hex[c & 15];
        }
    }
    return r;
}

}  // namespace

std::optional<std::string> spdx_license_id(std::string_view debian_name) {
    std::string name = lower(trim(debian_name));
    if (name.empty()) return std::nullopt;
    for (const auto& [debian, spdx] : unversioned)
        if (name == debian) return std::string(spdx);
    bool or_later = false;
    if (name.back() == '+') {
        or_later = true;
        name.pop_back();
    }
    size_t dash = name.rfind('-');
    if (dash == std::string::npos || dash == 0) return std::nullopt;
    std::string family = name.substr(0, dash);
    std::string version = name.substr(dash + 1);
    if (!is_version(version)) return std::nullopt;
    version = normal_version(family, version);
    if (or_later && !gnu_family(family)) return std::nullopt;
    for (const char* cc : cc_families) {
        if (family != cc) continue;
        for (const char* v : cc_versions) {
            if (version != v) continue;
            std::string id = family + "-" + version;
            for (char& c : id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return id;
        }
        return std::nullopt;
    }
    for (const auto& v : versioned) {
        if (family != v.family || version != v.version) continue;
        if (gnu_family(family)) return std::string(v.spdx) + (or_later ? "-or-later" : "-only");
        return std::string(v.spdx);
    }
    return std::nullopt;
}

std::string license_ref(std::string_view debian_name) {
    std::string r = "LicenseRef-";
    for (char ch : trim(debian_name)) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) || c == '.' || c == '-') {
            r += ch;
        } else if (c == '+') {
            r += "-plus";
        } else if (r.back() != '-') {
            r += '-';
        }
        if (r.size() > 128) break;
    }
    while (r.size() > 11 && r.back() == '-') r.pop_back();
    if (r.size() == 11) r += "unnamed";
    return r;
}

LicenseInfo parse_copyright(std::string_view text) {
    if (text.size() > max_copyright_bytes) return no_assertion("larger than " + std::to_string(max_copyright_bytes) + " bytes");
    auto paras = paragraphs(text);
    if (paras.empty() || !is_dep5(paras.front())) return no_assertion("not a machine-readable (DEP-5) copyright file");

    // Stand-alone License paragraphs: the texts of the names the Files paragraphs use.
    std::map<std::string, std::string> texts;
    std::vector<const Field*> expressions;
    for (size_t i = 1; i < paras.size(); ++i) {
        const Field* license = find_field(paras[i], "License");
        if (!license) continue;
        if (find_field(paras[i], "Files")) {
            expressions.push_back(license);
            if (!license->more.empty()) texts.emplace(lower(license->first), field_text(*license));
        } else {
            texts[lower(license->first)] = field_text(*license);
        }
    }
    if (expressions.empty()) {
        if (const Field* header = find_field(paras.front(), "License")) {
            expressions.push_back(header);
        } else {
            return no_assertion("no Files paragraph with a License");
        }
    }

    LicenseInfo info;
    std::vector<std::string> seen;   // distinct SPDX expressions of the paragraphs
    std::vector<bool> seen_or;
    std::set<std::string> seen_set;
    std::set<std::string> term_seen;
    for (const Field* f : expressions) {
        Parsed parsed = parse_expression(f->first);
        if (!parsed.ok) return no_assertion("License '" + f->first.substr(0, 80) + "' does not parse");
        if (seen_set.insert(parsed.spdx).second) {
            seen.push_back(parsed.spdx);
            seen_or.push_back(parsed.has_or);
            if (seen.size() > max_terms) return no_assertion("more than " + std::to_string(max_terms) + " different License fields");
        }
        for (const auto& name : parsed.names) {
            LicenseTerm term;
            term.debian = name;
            auto id = name.find(' ') == std::string::npos ? spdx_license_id(name) : std::nullopt;
            term.is_spdx_id = id.has_value();
            term.spdx = id.value_or(license_ref(name));
            if (!term_seen.insert(term.spdx).second) continue;
            if (!term.is_spdx_id) {
                auto t = texts.find(lower(name));
                if (t != texts.end() && t->second.size() <= max_license_text_bytes) term.text = t->second;
            }
            info.terms.push_back(std::move(term));
            if (info.terms.size() > max_terms) return no_assertion("more than " + std::to_string(max_terms) + " licences");
        }
    }
    bool any_or = std::find(seen_or.begin(), seen_or.end(), true) != seen_or.end();
    std::string expression;
    for (size_t i = 0; i < seen.size(); ++i) {
        if (i) expression += " AND ";
        expression += seen.size() > 1 && seen_or[i] ? "(" + seen[i] + ")" : seen[i];
    }
    info.expression = expression;
    info.conjunction = !any_or;
    return info;
}

LicenseInfo read_package_license(const fs::path& root, const std::string& package) {
    if (!valid_package_name(package)) return no_assertion("'" + package.substr(0, 80) + "' is not a package name");
    std::string why;
    UniqueFd fd = open_in_root(root, "usr/share/doc/" + package + "/copyright", why);
    if (!fd) return no_assertion(why);
    std::string text;
    if (!read_capped(fd.get(), max_copyright_bytes, text, why)) return no_assertion("/usr/share/doc/" + package + "/copyright: " + why);
    return parse_copyright(text);
}

std::string purl(const DebPackage& package, std::string_view distro) {
    std::string p = "pkg:deb/debian/" + purl_escape(package.name) + "@" + purl_escape(package.version) + "?arch=" + purl_escape(package.architecture);
    if (!distro.empty()) p += "&distro=" + purl_escape(distro);
    return p;
}

nlohmann::json to_cyclonedx(const Bom& bom) {
    const Image& image = bom.image;
    require(image.name, "name", "image");
    require(image.version, "version", "image " + image.name);
    require(image.build_id, "build id", "image " + image.name);
    const std::string image_ref = "cairn:image";

    std::vector<const DebPackage*> packages;
    for (const auto& p : bom.packages) packages.push_back(&p);
    std::sort(packages.begin(), packages.end(), [](const DebPackage* a, const DebPackage* b) {
        return std::tie(a->name, a->architecture) < std::tie(b->name, b->architecture);
    });
    // Package name -> the refs of the packages of that name (one per architecture).
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> by_name;
    json components = json::array();
    std::vector<std::string> contained;
    for (size_t i = 0; i < packages.size(); ++i) {
        const DebPackage& p = *packages[i];
        std::string what = "package '" + p.name + "'";
        require(p.name, "name", "a package");
        require(p.version, "version", what);
        require(p.architecture, "architecture", what);
        if (i > 0 && packages[i - 1]->name == p.name && packages[i - 1]->architecture == p.architecture)
            fail("SBOM: " + what + " (" + p.architecture + ") is listed twice");
        std::string ref = purl(p, image.distro);
        json c = {{"type", "library"}, {"bom-ref", ref}, {"name", p.name}, {"version", p.version}, {"purl", ref}};
        if (!p.sha256.empty()) c["hashes"] = hashes(p.sha256, what);
        if (!p.maintainer.empty()) c["publisher"] = p.maintainer;
        if (p.license.expression) c["licenses"] = licenses(p.license);
        json properties = json::array();
        if (!p.source.empty() && p.source != p.name) properties.push_back({{"name", "cairn:deb:source"}, {"value", p.source}});
        if (!p.source_version.empty() && p.source_version != p.version)
            properties.push_back({{"name", "cairn:deb:source_version"}, {"value", p.source_version}});
        if (!properties.empty()) c["properties"] = properties;
        components.push_back(std::move(c));
        contained.push_back(ref);
        by_name[p.name].emplace_back(p.architecture, ref);
    }

    std::vector<const Program*> programs;
    for (const auto& p : bom.programs) programs.push_back(&p);
    std::sort(programs.begin(), programs.end(), [](const Program* a, const Program* b) { return a->path < b->path; });
    std::set<std::string> refs(contained.begin(), contained.end());
    for (const Program* p : programs) {
        std::string what = "program '" + p->path + "'";
        require(p->name, "name", what);
        require(p->path, "path", what);
        require(p->version, "version", what);
        std::string ref = "cairn:program:" + p->path;
        if (!refs.insert(ref).second) fail("SBOM: " + what + " is listed twice");
        components.push_back({{"type", "application"}, {"bom-ref", ref}, {"name", p->name}, {"version", p->version},
                              {"hashes", hashes(p->sha256, what)},
                              {"properties", json::array({{{"name", "cairn:path"}, {"value", p->path}}})}});
        contained.push_back(ref);
    }

    std::vector<const InputFile*> files;
    for (const auto& f : bom.files) files.push_back(&f);
    std::sort(files.begin(), files.end(), [](const InputFile* a, const InputFile* b) { return a->path < b->path; });
    for (const InputFile* f : files) {
        std::string what = "file '" + f->path + "'";
        require(f->path, "path", "a file");
        std::string ref = "cairn:file:" + f->path;
        if (!refs.insert(ref).second) fail("SBOM: " + what + " is listed twice");
        components.push_back({{"type", "file"}, {"bom-ref", ref}, {"name", f->path}, {"hashes", hashes(f->sha256, what)}});
        contained.push_back(ref);
    }

    json dependencies = json::array();
    std::sort(contained.begin(), contained.end());
    dependencies.push_back({{"ref", image_ref}, {"dependsOn", contained}});
    for (const DebPackage* p : packages) {
        std::set<std::string> on;
        for (const auto& name : p->depends) {
            auto it = by_name.find(name);
            if (it == by_name.end()) continue;
            // The same architecture, else "all", else the first.
            const std::string* chosen = &it->second.front().second;
            for (const auto& [arch, ref] : it->second)
                if (arch == "all") chosen = &ref;
            for (const auto& [arch, ref] : it->second)
                if (arch == p->architecture) chosen = &ref;
            if (*chosen != purl(*p, image.distro)) on.insert(*chosen);
        }
        if (!on.empty()) dependencies.push_back({{"ref", purl(*p, image.distro)}, {"dependsOn", std::vector<std::string>(on.begin(), on.end())}});
    }

    std::string seed = image.name + "\n" + image.version + "\n" + image.build_id;
    json image_component = {{"type", "operating-system"}, {"bom-ref", image_ref}, {"name", image.name}, {"version", image.version},
                            {"properties", json::array({{{"name", "cairn:build_id"}, {"value", image.build_id}}})}};
    json tool = {{"type", "application"}, {"name", "cairn"}};
    if (!image.cairn_version.empty()) tool["version"] = image.cairn_version;
    return {
        {"$schema", "http://cyclonedx.org/schema/bom-1.5.schema.json"},
        {"bomFormat", "CycloneDX"},
        {"specVersion", "1.5"},
        {"serialNumber", "urn:uuid:" + Uuid::derive(seed, "cairn sbom serial number").str()},
        {"version", 1},
        {"metadata",
         {{"timestamp", iso8601(image.epoch)},
          {"lifecycles", json::array({{{"phase", "build"}}})},
          {"tools", {{"components", json::array({tool})}}},
          {"component", image_component}}},
        {"components", components},
        {"dependencies", dependencies},
    };
}

// Names and texts from packages need not be UTF-8: invalid bytes become U+FFFD rather than an exception.
std::string to_cyclonedx_text(const Bom& bom) { return to_cyclonedx(bom).dump(2, ' ', false, json::error_handler_t::replace) + "\n"; }

std::vector<DebPackage> read_installed_packages(const fs::path& root) {
    std::string why;
    std::string what = (root / "var/lib/dpkg/status").string();
    UniqueFd fd = open_in_root(root, "var/lib/dpkg/status", why);
    if (!fd) fail(what + ": " + why);
    std::string text;
    if (!read_capped(fd.get(), max_status_bytes, text, why)) fail(what + ": " + why);
    std::vector<DebPackage> packages;
    for (auto& e : parse_dpkg_status(text, what)) {
        if (!e.installed()) continue;
        DebPackage p;
        p.name = std::move(e.name);
        p.version = std::move(e.version);
        p.architecture = std::move(e.architecture);
        p.source = std::move(e.source);
        p.source_version = std::move(e.source_version);
        p.maintainer = std::move(e.maintainer);
        p.depends = std::move(e.depends);
        p.license = read_package_license(root, p.name);
        packages.push_back(std::move(p));
    }
    return packages;
}

}  // namespace cairn::imager::sbom
