// ELF inspection and the shared-library closure of host executables, resolved the way glibc's
// dynamic loader (ld.so, glibc 2.36 as on Debian 12) resolves them when the program runs, so that
// `cairn` can copy a host program together with everything it loads into an image's root tree.
//
// What is emulated and what is not:
// - Loading order is breadth-first over DT_NEEDED, as ld.so maps dependencies. A name already
//   loaded (requested under that name, or matching a loaded object's DT_SONAME, e.g. libc's need
//   for ld-linux-x86-64.so.2) is not searched again; a found file that is the same inode as a
//   loaded one is the same object.
// - Search order for a name without '/': DT_RPATH of the loading object and of each object up
//   its chain of loaders to the executable (only when the loading object has no DT_RUNPATH; an
//   object that has both has its DT_RPATH ignored, as ld.so does), DT_RUNPATH of the loading
//   object, /etc/ld.so.cache, the directories of /etc/ld.so.conf (with includes), then the
//   default directories (skipped, like cache hits in them, under DF_1_NODEFLIB).
//   LD_LIBRARY_PATH and LD_PRELOAD are NOT used: the build host's environment must not leak into
//   images. The cache is what ld.so reads; the ld.so.conf directories are a fallback ld.so does not
//   have, for a cache that is missing or stale (they are what ldconfig would put in it).
// - $ORIGIN is the directory of the executable with all symlinks resolved (ld.so reads
//   /proc/self/exe; note that `ldd` differs here for a symlinked executable), and for a library
//   the directory of the path it was found under, symlinks not resolved. $LIB is
//   lib/<multiarch triplet>, $PLATFORM the machine name (x86_64). A path element that is empty or
//   relative (relative to the process's working directory for ld.so) is ignored.
// - Candidates of another ELF class or machine are skipped; a candidate that is not a valid ELF
//   file is an error (ld.so fails the same way: "invalid ELF header", "file too short").
// - glibc-hwcaps and legacy hwcap subdirectories (x86-64-v3/, tls/, x86_64/) are not searched
//   and cache entries tied to a hwcap are not used: the baseline library is chosen on purpose,
//   since the image may run on another CPU than the build host. Debian ships none by default.
// - DT_FILTER / DT_AUXILIARY filtees and dlopen()ed modules are not followed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cairn::elf {

struct Info {
    bool is_elf = false;              // false: not an ELF file (a script, data); the rest is empty
    bool is_64 = false;               // ELFCLASS64
    uint16_t machine = 0;             // e_machine (EM_X86_64, ...)
    std::string interpreter;          // PT_INTERP, empty for a static executable or a library
    std::vector<std::string> needed;  // DT_NEEDED in file order
    // DT_RPATH / DT_RUNPATH split at ':' (empty elements kept, so an empty tag still shows as present: {""}).
    std::vector<std::string> rpath, runpath;
    std::string soname;  // DT_SONAME
    // Additions to the brief's shape:
    bool little_endian = true;  // ELFDATA2LSB
    uint16_t type = 0;          // e_type (ET_EXEC, ET_DYN, ...)
    bool is_dynamic = false;    // has a PT_DYNAMIC segment
    uint64_t flags_1 = 0;       // DT_FLAGS_1 (DF_1_NODEFLIB, DF_1_PIE, ...)
};

// Parses ELF headers, PT_INTERP and the PT_DYNAMIC section (DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME via
// DT_STRTAB, mapping virtual addresses through PT_LOAD segments). Both classes and both byte orders are read.
// Where a tag appears more than once, the last one counts (as for ld.so). A file without the ELF magic yields
// is_elf == false. Throws Error naming the file on malformed or truncated input and when it cannot be read.
Info read_info(const std::filesystem::path& file);

// Where the loader looks besides the objects' own DT_RPATH / DT_RUNPATH. The defaults are the host's.
struct SearchConfig {
    std::filesystem::path ld_so_cache = "/etc/ld.so.cache";  // missing or malformed: not used (as ld.so)
    std::filesystem::path ld_so_conf = "/etc/ld.so.conf";    // missing: no directories
};

// Every host file the executable needs at run time: the executable, its PT_INTERP, and the transitive DT_NEEDED
// closure. Each entry is an absolute host path as found by the search; when a found path is a symlink, the list
// also holds every link in the chain and the final target, and when a directory on the way is a symlink (merged
// /usr: /lib -> usr/lib) also the fully resolved path, so the caller can recreate the same links in the image.
// A statically linked executable and a non-ELF file (a script) yield just themselves (and their link chain).
// A library that cannot be found: throws Error "<exe>: needs <lib>, which was not found (searched: ...)".
// Result sorted and without duplicates.
std::vector<std::filesystem::path> closure(const std::filesystem::path& executable);
std::vector<std::filesystem::path> closure(const std::filesystem::path& executable, const SearchConfig& config);

// A path, every symlink it leads through, and the file it finally names fully resolved (the entries closure() adds for
// each file it finds), sorted. Relative links are followed from the link's directory. Lets a caller tell the
// executable's own entries in a closure from its libraries'. Throws Error for a dangling link or a loop.
std::vector<std::filesystem::path> link_chain(const std::filesystem::path& path);

// The directories /etc/ld.so.conf (or `conf`) lists, in order and without duplicates: '#' comments,
// "include <glob>..." (relative patterns are relative to the including file's directory), "hwcap" lines
// ignored, "=type" suffixes and trailing slashes dropped, relative directories ignored. A missing top-level
// file yields no directories; an include loop throws Error.
std::vector<std::filesystem::path> ld_so_conf_dirs(const std::filesystem::path& conf);

// One entry of /etc/ld.so.cache (glibc's "glibc-ld.so.cache1.1" format, alone or after the old
// "ld.so-1.7.0" table).
struct CacheEntry {
    std::string name;    // the library name looked up (usually a SONAME)
    std::string path;    // where the file is
    int32_t flags = 0;   // FLAG_ELF_LIBC6 | FLAG_X8664_LIB64 = 0x0303 for x86-64
    uint64_t hwcap = 0;  // non-zero: the entry belongs to a hwcap subdirectory
};

// Reads the cache's entries in file order. Throws Error naming the file when it is missing or malformed.
std::vector<CacheEntry> read_ld_so_cache(const std::filesystem::path& cache);

}  // namespace cairn::elf
