#include "imager/elf.hpp"

#include <elf.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"
#include "common/text.hpp"

namespace cairn::elf {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Reading ELF files

template <typename T>
T byte_swap(T value) {
    if constexpr (sizeof(T) == 1) {
        return value;
    } else if constexpr (sizeof(T) == 2) {
        return static_cast<T>(__builtin_bswap16(static_cast<uint16_t>(value)));
    } else if constexpr (sizeof(T) == 4) {
        return static_cast<T>(__builtin_bswap32(static_cast<uint32_t>(value)));
    } else {
        static_assert(sizeof(T) == 8);
        return static_cast<T>(__builtin_bswap64(static_cast<uint64_t>(value)));
    }
}

constexpr bool host_little_endian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

std::string hex(uint64_t value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(value));
    return buffer;
}

// An open regular file with bounds-checked reads; every error names the file.
class Reader {
public:
    explicit Reader(const fs::path& file) : name_(file.string()), fd_(open_file(file, O_RDONLY)) {
        struct stat st;
        if (::fstat(fd_.get(), &st) != 0) fail_errno("reading " + name_);
        if (!S_ISREG(st.st_mode)) fail(name_ + ": not a regular file");
        size_ = static_cast<uint64_t>(st.st_size);
    }

    const std::string& name() const { return name_; }
    uint64_t size() const { return size_; }

    void check(uint64_t offset, uint64_t length, const std::string& what) const {
        if (offset > size_ || length > size_ - offset)
            fail(name_ + ": malformed or truncated ELF file: " + what + " (" + std::to_string(length) +
                 " bytes at offset " + std::to_string(offset) + ") lies beyond the end of the file (" +
                 std::to_string(size_) + " bytes)");
    }

    void read(void* buffer, uint64_t offset, uint64_t length, const std::string& what) const {
        check(offset, length, what);
        pread_exact(fd_.get(), buffer, length, offset, name_);
    }

private:
    std::string name_;
    UniqueFd fd_;
    uint64_t size_ = 0;
};

struct Ident {
    bool is_elf = false;
    bool is_64 = false;
    bool little_endian = true;
    uint16_t machine = 0;
};

// The e_ident checks and e_machine: what ld.so looks at before anything else.
Ident read_ident(const Reader& reader) {
    Ident ident;
    if (reader.size() < SELFMAG) return ident;
    unsigned char e_ident[EI_NIDENT];
    reader.read(e_ident, 0, SELFMAG, "ELF magic");
    if (std::memcmp(e_ident, ELFMAG, SELFMAG) != 0) return ident;
    ident.is_elf = true;
    reader.read(e_ident, 0, EI_NIDENT, "ELF identification");
    if (e_ident[EI_CLASS] != ELFCLASS32 && e_ident[EI_CLASS] != ELFCLASS64)
        fail(reader.name() + ": malformed ELF file: unknown ELF class " + std::to_string(e_ident[EI_CLASS]));
    if (e_ident[EI_DATA] != ELFDATA2LSB && e_ident[EI_DATA] != ELFDATA2MSB)
        fail(reader.name() + ": malformed ELF file: unknown data encoding " + std::to_string(e_ident[EI_DATA]));
    if (e_ident[EI_VERSION] != EV_CURRENT)
        fail(reader.name() + ": malformed ELF file: unknown ELF version " + std::to_string(e_ident[EI_VERSION]));
    ident.is_64 = e_ident[EI_CLASS] == ELFCLASS64;
    ident.little_endian = e_ident[EI_DATA] == ELFDATA2LSB;
    uint16_t machine = 0;
    // e_type and e_machine sit at the same offsets in both classes.
    static_assert(offsetof(Elf32_Ehdr, e_machine) == offsetof(Elf64_Ehdr, e_machine));
    reader.read(&machine, offsetof(Elf64_Ehdr, e_machine), sizeof machine, "ELF header");
    ident.machine = ident.little_endian == host_little_endian ? machine : byte_swap(machine);
    return ident;
}

std::vector<std::string> split_path_list(const std::string& list) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
        size_t colon = list.find(':', start);
        out.push_back(list.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
        if (colon == std::string::npos) break;
        start = colon + 1;
    }
    return out;
}

struct Load {
    uint64_t vaddr, offset, filesz;
};

template <typename Ehdr, typename Phdr, typename Shdr, typename Dyn>
void parse(const Reader& reader, bool swap, Info& info) {
    auto fix = [swap](auto value) { return swap ? byte_swap(value) : value; };
    const std::string& name = reader.name();

    Ehdr header;
    reader.read(&header, 0, sizeof header, "ELF header");
    info.type = fix(header.e_type);
    uint64_t phoff = fix(header.e_phoff);
    uint64_t phnum = fix(header.e_phnum);
    uint16_t phentsize = fix(header.e_phentsize);
    if (phnum == PN_XNUM) {
        // Too many program headers for e_phnum: the count is in section header 0's sh_info.
        if (fix(header.e_shoff) == 0) fail(name + ": malformed ELF file: e_phnum is PN_XNUM but there is no section 0");
        Shdr section0;
        reader.read(&section0, fix(header.e_shoff), sizeof section0, "section header 0");
        phnum = fix(section0.sh_info);
    }
    if (phnum == 0) return;
    if (phentsize != sizeof(Phdr))
        fail(name + ": malformed ELF file: program header size " + std::to_string(phentsize) + ", expected " +
             std::to_string(sizeof(Phdr)));
    reader.check(phoff, phnum * sizeof(Phdr), "program header table");
    std::vector<Phdr> headers(phnum);
    reader.read(headers.data(), phoff, phnum * sizeof(Phdr), "program header table");

    std::vector<Load> loads;
    std::optional<Phdr> dynamic;
    bool have_interp = false;
    for (const Phdr& ph : headers) {
        uint32_t type = fix(ph.p_type);
        uint64_t offset = fix(ph.p_offset), filesz = fix(ph.p_filesz);
        if (type == PT_LOAD) {
            loads.push_back({fix(ph.p_vaddr), offset, filesz});
        } else if (type == PT_DYNAMIC && !dynamic) {
            dynamic = ph;
        } else if (type == PT_INTERP && !have_interp) {
            have_interp = true;
            // The kernel's limits: a NUL-terminated path of at most PATH_MAX bytes.
            if (filesz < 2 || filesz > PATH_MAX)
                fail(name + ": malformed ELF file: PT_INTERP of " + std::to_string(filesz) + " bytes");
            std::string interp(filesz, '\0');
            reader.read(interp.data(), offset, filesz, "PT_INTERP");
            if (interp.back() != '\0') fail(name + ": malformed ELF file: PT_INTERP is not NUL-terminated");
            info.interpreter = interp.c_str();
            if (info.interpreter.empty()) fail(name + ": malformed ELF file: empty PT_INTERP");
        }
    }
    if (!dynamic) return;
    info.is_dynamic = true;

    uint64_t dyn_offset = fix(dynamic->p_offset), dyn_size = fix(dynamic->p_filesz);
    reader.check(dyn_offset, dyn_size, "PT_DYNAMIC");
    std::vector<Dyn> entries(dyn_size / sizeof(Dyn));
    reader.read(entries.data(), dyn_offset, entries.size() * sizeof(Dyn), "PT_DYNAMIC");

    std::vector<uint64_t> needed;
    std::optional<uint64_t> soname, rpath, runpath, strtab, strsz;
    bool terminated = false;
    for (const Dyn& entry : entries) {
        int64_t tag = fix(entry.d_tag);
        uint64_t value = fix(entry.d_un.d_val);
        if (tag == DT_NULL) {
            terminated = true;
            break;
        }
        switch (tag) {
            case DT_NEEDED:
                needed.push_back(value);
                break;
            case DT_SONAME:
                soname = value;
                break;
            case DT_RPATH:
                rpath = value;
                break;
            case DT_RUNPATH:
                runpath = value;
                break;
            case DT_STRTAB:
                strtab = value;
                break;
            case DT_STRSZ:
                strsz = value;
                break;
            case DT_FLAGS_1:
                info.flags_1 = value;
                break;
            default:
                break;
        }
    }
    if (!terminated) fail(name + ": malformed ELF file: PT_DYNAMIC has no DT_NULL terminator");
    if (needed.empty() && !soname && !rpath && !runpath) return;

    // The string table, found through the PT_LOAD segment that maps its address.
    if (!strtab) fail(name + ": malformed ELF file: PT_DYNAMIC names strings but has no DT_STRTAB");
    const Load* segment = nullptr;
    for (const Load& load : loads)
        if (*strtab >= load.vaddr && *strtab - load.vaddr < load.filesz) {
            segment = &load;
            break;
        }
    if (!segment)
        fail(name + ": malformed ELF file: DT_STRTAB address " + hex(*strtab) +
             " is in no PT_LOAD segment's file data");
    uint64_t table_offset = segment->offset + (*strtab - segment->vaddr);
    uint64_t available = segment->filesz - (*strtab - segment->vaddr);
    reader.check(table_offset, available, "the PT_LOAD segment holding DT_STRTAB");
    if (strsz && *strsz > available)
        fail(name + ": malformed ELF file: DT_STRSZ " + std::to_string(*strsz) + " runs past its PT_LOAD segment");
    std::string table(strsz ? *strsz : available, '\0');
    reader.read(table.data(), table_offset, table.size(), "DT_STRTAB");

    auto string_at = [&](uint64_t offset, const char* tag) {
        if (offset >= table.size())
            fail(name + ": malformed ELF file: " + tag + " string offset " + std::to_string(offset) +
                 " is beyond the string table (" + std::to_string(table.size()) + " bytes)");
        size_t end = table.find('\0', offset);
        if (end == std::string::npos) fail(name + ": malformed ELF file: " + tag + " string is not NUL-terminated");
        return table.substr(offset, end - offset);
    };
    for (uint64_t offset : needed) info.needed.push_back(string_at(offset, "DT_NEEDED"));
    if (soname) info.soname = string_at(*soname, "DT_SONAME");
    if (rpath) info.rpath = split_path_list(string_at(*rpath, "DT_RPATH"));
    if (runpath) info.runpath = split_path_list(string_at(*runpath, "DT_RUNPATH"));
}

Info parse_file(const Reader& reader, const Ident& ident) {
    Info info;
    if (!ident.is_elf) return info;
    info.is_elf = true;
    info.is_64 = ident.is_64;
    info.little_endian = ident.little_endian;
    info.machine = ident.machine;
    bool swap = ident.little_endian != host_little_endian;
    if (ident.is_64)
        parse<Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr, Elf64_Dyn>(reader, swap, info);
    else
        parse<Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr, Elf32_Dyn>(reader, swap, info);
    return info;
}

// ---------------------------------------------------------------------------------------------
// Paths

// Normalizes an absolute path the way the kernel resolves it: "." dropped, ".." taken lexically
// except right after a symlink, where it leaves the link's target (so /a/link/.. is the target's
// parent, not /a). Symlinks elsewhere are kept as written.
fs::path physical_normal(const fs::path& path) {
    fs::path out = "/";
    for (const fs::path& part : path.relative_path()) {
        if (part.empty() || part == ".") continue;
        if (part == "..") {
            if (out == "/") continue;
            std::error_code ec;
            if (fs::is_symlink(out, ec)) {
                fs::path resolved = fs::canonical(out, ec);
                if (!ec) {
                    out = resolved.parent_path();
                    continue;
                }
            }
            out = out.parent_path();
            continue;
        }
        out /= part;
    }
    return out;
}

// Adds path, every symlink it leads through to the final file, and that file's fully resolved path.
void add_link_chain(const fs::path& start, std::set<fs::path>& out) {
    fs::path path = start;
    for (int hops = 0;; ++hops) {
        out.insert(path);
        struct stat st;
        if (::lstat(path.c_str(), &st) != 0) fail_errno(path.string());
        if (!S_ISLNK(st.st_mode)) break;
        if (hops >= 40) fail(start.string() + ": too many levels of symbolic links");
        std::error_code ec;
        fs::path target = fs::read_symlink(path, ec);
        if (ec) fail_errno("reading the symlink " + path.string(), ec.value());
        path = physical_normal(target.is_absolute() ? target : path.parent_path() / target);
    }
    std::error_code ec;
    fs::path resolved = fs::canonical(path, ec);
    if (ec) fail_errno("resolving " + path.string(), ec.value());
    out.insert(resolved);
}

// ---------------------------------------------------------------------------------------------
// ld.so.conf

struct GlobResult {
    glob_t value{};
    GlobResult() = default;
    GlobResult(const GlobResult&) = delete;
    GlobResult& operator=(const GlobResult&) = delete;
    ~GlobResult() { ::globfree(&value); }
};

void parse_conf(const fs::path& file, int depth, std::vector<fs::path>& out) {
    if (depth > 16) fail(file.string() + ": includes nested too deeply (an include loop?)");
    std::string text = read_file(file);
    size_t line_start = 0;
    while (line_start < text.size()) {
        size_t line_end = text.find('\n', line_start);
        if (line_end == std::string::npos) line_end = text.size();
        std::string line = text.substr(line_start, line_end - line_start);
        line_start = line_end + 1;
        if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
        line = trim(line);
        if (line.empty()) continue;

        if (line.size() > 7 && line.compare(0, 7, "include") == 0 &&
            std::isblank(static_cast<unsigned char>(line[7]))) {
            std::string rest = line.substr(8);
            size_t pos = 0;
            while (pos < rest.size()) {
                size_t begin = rest.find_first_not_of(" \t", pos);
                if (begin == std::string::npos) break;
                size_t end = rest.find_first_of(" \t", begin);
                if (end == std::string::npos) end = rest.size();
                fs::path pattern = rest.substr(begin, end - begin);
                pos = end;
                if (pattern.is_relative()) pattern = file.parent_path() / pattern;
                GlobResult matches;
                int rc = ::glob(pattern.c_str(), 0, nullptr, &matches.value);
                if (rc == GLOB_NOMATCH) continue;
                if (rc != 0) fail(file.string() + ": cannot expand include pattern " + pattern.string());
                for (size_t i = 0; i < matches.value.gl_pathc; ++i)
                    parse_conf(matches.value.gl_pathv[i], depth + 1, out);
            }
            continue;
        }
        if (line.size() > 5 && ::strncasecmp(line.c_str(), "hwcap", 5) == 0 &&
            std::isblank(static_cast<unsigned char>(line[5])))
            continue;  // obsolete, ignored by ldconfig too
        if (size_t equal = line.find('='); equal != std::string::npos) line = trim(line.substr(0, equal));
        while (line.size() > 1 && line.back() == '/') line.pop_back();
        fs::path dir = line;
        if (dir.is_relative()) continue;
        if (std::find(out.begin(), out.end(), dir) == out.end()) out.push_back(dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The loader's view of the target machine

struct Target {
    bool is_64 = false;
    bool little_endian = true;
    uint16_t machine = 0;
    std::string lib;       // $LIB
    std::string platform;  // $PLATFORM
    std::vector<fs::path> default_dirs;
    std::optional<int32_t> cache_flags;  // the ld.so.cache entries this machine's ld.so accepts
};

constexpr int32_t flag_elf_libc6 = 0x0003;
constexpr int32_t flag_x8664_lib64 = 0x0300;
constexpr int32_t flag_aarch64_lib64 = 0x0a00;

Target target_for(const Info& exe) {
    Target t;
    t.is_64 = exe.is_64;
    t.little_endian = exe.little_endian;
    t.machine = exe.machine;
    auto multiarch = [&t](const std::string& triplet, const std::string& platform, bool lib64) {
        t.lib = "lib/" + triplet;
        t.platform = platform;
        t.default_dirs = {"/lib/" + triplet, "/usr/lib/" + triplet};
        if (lib64) t.default_dirs.insert(t.default_dirs.end(), {"/lib64", "/usr/lib64"});
        t.default_dirs.insert(t.default_dirs.end(), {"/lib", "/usr/lib"});
    };
    if (exe.machine == EM_X86_64 && exe.is_64) {
        multiarch("x86_64-linux-gnu", "x86_64", true);
        t.cache_flags = flag_elf_libc6 | flag_x8664_lib64;
    } else if (exe.machine == EM_386 && !exe.is_64) {
        multiarch("i386-linux-gnu", "i686", false);
        t.cache_flags = flag_elf_libc6;
    } else if (exe.machine == EM_AARCH64 && exe.is_64) {
        multiarch("aarch64-linux-gnu", "aarch64", true);
        t.cache_flags = flag_elf_libc6 | flag_aarch64_lib64;
    } else {
        // Unknown here: the generic directories; the cache flags are unknown, so the cache is not used.
        t.lib = "lib";
        t.default_dirs = {"/lib", "/usr/lib"};
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// The closure

struct Object {
    fs::path path;    // absolute, as found
    fs::path origin;  // what $ORIGIN expands to in its own dynamic section
    Info info;
    std::vector<std::string> names;  // names it was loaded under (besides its DT_SONAME)
    dev_t dev = 0;
    ino_t ino = 0;
    int loader = -1;          // index of the object whose DT_NEEDED loaded it
    bool load_needed = true;  // false for the interpreter, which ld.so does not load dependencies for
};

struct Candidate {
    fs::path path;
    Info info;
    dev_t dev = 0;
    ino_t ino = 0;
};

std::string join(const std::vector<std::string>& items, const char* separator) {
    std::string out;
    for (const auto& item : items) {
        if (!out.empty()) out += separator;
        out += item;
    }
    return out;
}

class Resolver {
public:
    Resolver(const SearchConfig& config, std::string exe_name, const Info& exe_info)
        : config_(config), exe_name_(std::move(exe_name)), target_(target_for(exe_info)) {}

    std::vector<fs::path> run(const fs::path& exe, const Info& info) {
        Object program;
        program.path = exe;
        std::error_code ec;
        program.origin = fs::canonical(exe, ec).parent_path();  // ld.so reads /proc/self/exe
        if (ec) fail_errno("resolving " + exe.string(), ec.value());
        program.info = info;
        identify(program);
        objects_.push_back(std::move(program));

        if (!info.interpreter.empty()) {
            Object interp;
            interp.path = physical_normal(fs::absolute(info.interpreter));
            struct stat st;
            if (::stat(interp.path.c_str(), &st) != 0) {
                int err = errno;
                fail(exe_name_ + ": needs the interpreter " + info.interpreter + ", which was not found (" +
                     errno_text(err) + ")");
            }
            interp.info = read_info(interp.path);
            if (!interp.info.is_elf) fail(exe_name_ + ": its interpreter " + info.interpreter + " is not an ELF file");
            interp.origin = interp.path.parent_path();
            interp.names = {info.interpreter, interp.path.string()};
            interp.load_needed = false;
            identify(interp);
            objects_.push_back(std::move(interp));
        }

        // Breadth first, as ld.so maps dependencies; objects_ grows while it is walked.
        for (size_t i = 0; i < objects_.size(); ++i) {
            if (!objects_[i].load_needed) continue;
            std::vector<std::string> needed = objects_[i].info.needed;
            for (const std::string& name : needed) load(name, static_cast<int>(i));
        }

        std::set<fs::path> result;
        for (const Object& object : objects_) add_link_chain(object.path, result);
        for (const fs::path& path : extra_paths_) add_link_chain(path, result);
        return {result.begin(), result.end()};
    }

private:
    static void identify(Object& object) {
        struct stat st;
        if (::stat(object.path.c_str(), &st) != 0) fail_errno(object.path.string());
        object.dev = st.st_dev;
        object.ino = st.st_ino;
    }

    // Expands $ORIGIN, $LIB, $PLATFORM (also in braces). Like ld.so, an unbraced token must end the
    // string or be followed by '/'; anything else starting with '$' stays as written.
    std::string expand(const std::string& text, const Object& owner) const {
        std::string out;
        for (size_t i = 0; i < text.size();) {
            if (text[i] != '$') {
                out += text[i++];
                continue;
            }
            bool braced = i + 1 < text.size() && text[i + 1] == '{';
            size_t name_start = i + (braced ? 2 : 1);
            const std::string* value = nullptr;
            size_t consumed = 0;
            std::string origin = owner.origin.string();
            for (auto [token, replacement] : {std::pair<const char*, const std::string*>{"ORIGIN", &origin},
                                              {"LIB", &target_.lib},
                                              {"PLATFORM", &target_.platform}}) {
                size_t length = std::strlen(token);
                if (text.compare(name_start, length, token) != 0) continue;
                size_t after = name_start + length;
                if (braced) {
                    if (after < text.size() && text[after] == '}') consumed = after + 1 - i;
                } else if (after == text.size() || text[after] == '/') {
                    consumed = after - i;
                }
                if (consumed) {
                    value = replacement;
                    break;
                }
            }
            if (!value) {
                out += text[i++];
                continue;
            }
            out += *value;
            i += consumed;
        }
        return out;
    }

    std::optional<int> match(const std::string& name) const {
        for (size_t i = 0; i < objects_.size(); ++i) {
            const Object& object = objects_[i];
            if (object.info.soname == name ||
                std::find(object.names.begin(), object.names.end(), name) != object.names.end())
                return static_cast<int>(i);
        }
        return std::nullopt;
    }

    bool is_default_dir(const fs::path& dir) const {
        return std::find(target_.default_dirs.begin(), target_.default_dirs.end(), dir) != target_.default_dirs.end();
    }

    // What ld.so's open_verify decides about a candidate: nullopt when absent or of another class or
    // machine (skipped), an Error when it is there but cannot be loaded.
    std::optional<Candidate> try_file(const fs::path& path, const std::string& name, int loader) {
        struct stat st;
        if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
        std::string context = " (found for " + name + ", needed by " + objects_[loader].path.string() + ")";
        Candidate candidate;
        try {
            Reader reader(path);
            Ident ident = read_ident(reader);
            if (!ident.is_elf) fail(path.string() + ": invalid ELF header");
            if (ident.is_64 != target_.is_64 || ident.machine != target_.machine) {
                skipped_.push_back(path.string());
                return std::nullopt;
            }
            if (ident.little_endian != target_.little_endian) fail(path.string() + ": ELF data encoding differs");
            candidate.info = parse_file(reader, ident);
        } catch (const Error& e) {
            fail(exe_name_ + ": " + e.what() + context);
        }
        if (candidate.info.type != ET_DYN)
            fail(exe_name_ + ": " + path.string() + " is not a shared object (ELF type " +
                 std::to_string(candidate.info.type) + ")" + context);
        candidate.path = path;
        candidate.dev = st.st_dev;
        candidate.ino = st.st_ino;
        return candidate;
    }

    std::optional<Candidate> try_dir(const fs::path& dir, const std::string& name, int loader) {
        if (dir.empty() || dir.is_relative()) return std::nullopt;  // relative to ld.so's working directory
        fs::path normal = physical_normal(dir);
        note_searched(normal.string());
        return try_file(physical_normal(normal / name), name, loader);
    }

    void note_searched(const std::string& place) {
        if (std::find(searched_.begin(), searched_.end(), place) == searched_.end()) searched_.push_back(place);
    }

    const std::vector<CacheEntry>& cache() {
        if (!cache_) {
            try {
                cache_ = read_ld_so_cache(config_.ld_so_cache);
            } catch (const Error&) {
                cache_.emplace();  // missing or malformed: ld.so does without it, so do we
            }
        }
        return *cache_;
    }

    const std::vector<fs::path>& conf_dirs() {
        if (!conf_dirs_) conf_dirs_ = ld_so_conf_dirs(config_.ld_so_conf);
        return *conf_dirs_;
    }

    std::optional<Candidate> search(const std::string& name, int loader) {
        const Object& from = objects_[loader];
        bool has_runpath = !from.info.runpath.empty();
        if (!has_runpath) {
            // DT_RPATH of the loading object, then of its loaders up to the executable. An object
            // with DT_RUNPATH has its DT_RPATH ignored.
            for (int i = loader; i >= 0; i = objects_[i].loader) {
                const Object& object = objects_[i];
                if (!object.info.runpath.empty()) continue;
                for (const std::string& element : object.info.rpath)
                    if (auto found = try_dir(expand(element, object), name, loader)) return found;
            }
        }
        // LD_LIBRARY_PATH would come here: deliberately not used.
        if (has_runpath)
            for (const std::string& element : from.info.runpath)
                if (auto found = try_dir(expand(element, from), name, loader)) return found;

        bool nodeflib = (from.info.flags_1 & DF_1_NODEFLIB) != 0;
        if (target_.cache_flags) {
            note_searched(config_.ld_so_cache.string());
            for (const CacheEntry& entry : cache()) {
                if (entry.name != name || entry.flags != *target_.cache_flags || entry.hwcap != 0) continue;
                fs::path path = entry.path;
                if (!path.is_absolute() || (nodeflib && is_default_dir(path.parent_path()))) break;
                if (auto found = try_file(physical_normal(path), name, loader)) return found;
                break;  // ld.so tries the first fitting entry only
            }
        }
        for (const fs::path& dir : conf_dirs()) {
            if (nodeflib && is_default_dir(dir)) continue;
            if (auto found = try_dir(dir, name, loader)) return found;
        }
        if (!nodeflib)
            for (const fs::path& dir : target_.default_dirs)
                if (auto found = try_dir(dir, name, loader)) return found;
        return std::nullopt;
    }

    void load(const std::string& raw_name, int loader) {
        std::string name = expand(raw_name, objects_[loader]);
        if (match(name)) return;

        searched_.clear();
        skipped_.clear();
        std::optional<Candidate> found;
        if (name.find('/') != std::string::npos) {
            fs::path path = physical_normal(fs::absolute(name));  // relative: to the working directory, as ld.so
            note_searched(path.string());
            found = try_file(path, name, loader);
        } else {
            found = search(name, loader);
        }
        if (!found) {
            std::string message = exe_name_ + ": needs " + name + ", which was not found (";
            if (loader != 0) message += "needed by " + objects_[loader].path.string() + "; ";
            message += "searched: " + join(searched_, ", ");
            if (!skipped_.empty()) message += "; skipped for their ELF class or machine: " + join(skipped_, ", ");
            fail(message + ")");
        }

        for (Object& object : objects_)
            if (object.dev == found->dev && object.ino == found->ino) {
                // The same file under another name: ld.so reuses the loaded object. The path is kept
                // in the result, since the loader in the image will look it up under this path too.
                object.names.push_back(name);
                extra_paths_.push_back(found->path);
                return;
            }

        Object object;
        object.path = found->path;
        object.origin = found->path.parent_path();
        object.info = std::move(found->info);
        object.names = {name, found->path.string()};
        object.dev = found->dev;
        object.ino = found->ino;
        object.loader = loader;
        objects_.push_back(std::move(object));
    }

    const SearchConfig& config_;
    std::string exe_name_;
    Target target_;
    std::vector<Object> objects_;
    std::vector<fs::path> extra_paths_;
    std::optional<std::vector<CacheEntry>> cache_;
    std::optional<std::vector<fs::path>> conf_dirs_;
    std::vector<std::string> searched_;
    std::vector<std::string> skipped_;
};

}  // namespace

Info read_info(const std::filesystem::path& file) {
    Reader reader(file);
    return parse_file(reader, read_ident(reader));
}

std::vector<std::filesystem::path> closure(const std::filesystem::path& executable) {
    return closure(executable, SearchConfig{});
}

std::vector<std::filesystem::path> closure(const std::filesystem::path& executable, const SearchConfig& config) {
    fs::path exe = physical_normal(fs::absolute(executable));
    Info info = read_info(exe);
    if (!info.is_elf || (info.interpreter.empty() && info.needed.empty())) {
        std::set<fs::path> result;
        add_link_chain(exe, result);
        return {result.begin(), result.end()};
    }
    Resolver resolver(config, executable.string(), info);
    return resolver.run(exe, info);
}

std::vector<std::filesystem::path> link_chain(const std::filesystem::path& path) {
    std::set<fs::path> result;
    add_link_chain(physical_normal(fs::absolute(path)), result);
    return {result.begin(), result.end()};
}

std::vector<std::filesystem::path> ld_so_conf_dirs(const std::filesystem::path& conf) {
    std::vector<fs::path> dirs;
    std::error_code ec;
    if (!fs::exists(conf, ec)) return dirs;
    parse_conf(conf, 0, dirs);
    return dirs;
}

std::vector<CacheEntry> read_ld_so_cache(const std::filesystem::path& cache) {
    const std::string name = cache.string();
    std::string data = read_file(cache);
    auto u32 = [&data](size_t offset, bool swap) {
        uint32_t value;
        std::memcpy(&value, data.data() + offset, sizeof value);
        return swap ? byte_swap(value) : value;
    };

    // An old-format table ("ld.so-1.7.0", 12-byte entries) may come first; the new header follows it,
    // 8-byte aligned. String offsets are relative to the new header.
    static constexpr char old_magic[] = "ld.so-1.7.0";
    static constexpr char new_magic[] = "glibc-ld.so.cache1.1";
    constexpr size_t old_header = 16, old_entry = 12, new_header = 48, new_entry = 24;
    size_t base = 0;
    if (data.compare(0, sizeof old_magic - 1, old_magic) == 0) {
        if (data.size() < old_header) fail(name + ": truncated ld.so cache");
        uint64_t old_count = u32(12, false);
        base = static_cast<size_t>((old_header + old_count * old_entry + 7) & ~uint64_t{7});
    }
    if (base > data.size() || data.size() - base < new_header ||
        data.compare(base, sizeof new_magic - 1, new_magic) != 0)
        fail(name + ": not a glibc ld.so cache (no \"glibc-ld.so.cache1.1\" header)");

    uint8_t order = static_cast<uint8_t>(data[base + 28]) & 3;  // 0 unknown, 1 invalid, 2 little, 3 big endian
    if (order == 1) fail(name + ": ld.so cache marked with an invalid byte order");
    bool swap = (order == 2 && !host_little_endian) || (order == 3 && host_little_endian);
    uint64_t count = u32(base + 20, swap);
    if (count > (data.size() - base - new_header) / new_entry)
        fail(name + ": ld.so cache truncated: " + std::to_string(count) + " entries do not fit");

    auto string_at = [&](uint32_t offset) {
        uint64_t at = base + uint64_t{offset};
        size_t end = at < data.size() ? data.find('\0', at) : std::string::npos;
        if (end == std::string::npos)
            fail(name + ": malformed ld.so cache: string offset " + std::to_string(offset) + " is out of range");
        return data.substr(at, end - at);
    };
    std::vector<CacheEntry> entries;
    entries.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
        size_t at = base + new_header + i * new_entry;
        CacheEntry entry;
        entry.flags = static_cast<int32_t>(u32(at, swap));
        entry.name = string_at(u32(at + 4, swap));
        entry.path = string_at(u32(at + 8, swap));
        uint64_t hwcap;
        std::memcpy(&hwcap, data.data() + at + 16, sizeof hwcap);
        entry.hwcap = swap ? byte_swap(hwcap) : hwcap;
        entries.push_back(std::move(entry));
    }
    return entries;
}

}  // namespace cairn::elf
