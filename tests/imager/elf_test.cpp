#include "imager/elf.hpp"

#include <elf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

namespace cairn::elf {
namespace {

namespace fs = std::filesystem;
using cairn::test::Scratch;
using cairn::test::expect_error;
using cairn::test::write_text;

// Environment for the programs the tests run: the build host's loader knobs must not interfere.
const std::vector<std::string> clean_env = {"LD_LIBRARY_PATH=", "LD_PRELOAD="};

fs::path ls_path() { return fs::exists("/usr/bin/ls") ? fs::path("/usr/bin/ls") : fs::path("/bin/ls"); }

bool contains(const std::vector<fs::path>& paths, const fs::path& path) {
    return std::find(paths.begin(), paths.end(), path) != paths.end();
}

std::string show(const std::vector<fs::path>& paths) {
    std::string out;
    for (const auto& p : paths) out += "  " + p.string() + "\n";
    return out;
}

template <typename Set>
std::string show_set(const Set& paths) {
    std::string out;
    for (const auto& p : paths) out += "  " + p.string() + "\n";
    return out;
}

void expect_sorted_unique(const std::vector<fs::path>& paths) {
    EXPECT_TRUE(std::is_sorted(paths.begin(), paths.end())) << show(paths);
    EXPECT_TRUE(std::adjacent_find(paths.begin(), paths.end()) == paths.end()) << show(paths);
}

// What ldd lists, each path fully resolved; nullopt when ldd fails or reports a library "not found".
std::optional<std::set<fs::path>> ldd(const fs::path& exe) {
    RunResult result = run({"ldd", exe.string()}, {.extra_env = clean_env});
    if (result.exit_code != 0) return std::nullopt;
    std::set<fs::path> out;
    std::istringstream lines(result.out);
    std::string line;
    while (std::getline(lines, line)) {
        size_t arrow = line.find("=> ");
        std::string rest = arrow == std::string::npos ? line : line.substr(arrow + 3);
        size_t start = rest.find_first_not_of(" \t");
        if (start == std::string::npos) continue;
        rest = rest.substr(start);
        if (rest.rfind("not found", 0) == 0) return std::nullopt;
        if (rest[0] != '/') continue;  // linux-vdso.so.1
        out.insert(fs::canonical(rest.substr(0, rest.find(" ("))));
    }
    return out;
}

// The closure's files, fully resolved, without the executable itself: comparable with ldd's list.
std::set<fs::path> resolved_libraries(const std::vector<fs::path>& paths, const fs::path& exe) {
    std::set<fs::path> out;
    for (const auto& p : paths) out.insert(fs::canonical(p));
    out.erase(fs::canonical(exe));
    return out;
}

// The closure agrees with ldd (run on the resolved executable: ldd takes $ORIGIN from the path it is
// given, the loader of a running program from /proc/self/exe).
void expect_matches_ldd(const fs::path& exe) {
    std::vector<fs::path> files = closure(exe);
    expect_sorted_unique(files);
    EXPECT_TRUE(contains(files, exe)) << show(files);
    std::optional<std::set<fs::path>> expected = ldd(fs::canonical(exe));
    ASSERT_TRUE(expected) << "ldd failed for " << exe;
    std::set<fs::path> got = resolved_libraries(files, exe);
    EXPECT_EQ(got, *expected) << exe << "\nclosure:\n" << show_set(got) << "ldd:\n" << show_set(*expected);
    for (const auto& p : files) EXPECT_TRUE(p.is_absolute()) << p;
}

void cc(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"gcc"};
    argv.insert(argv.end(), args.begin(), args.end());
    run_checked(argv);
}

// A tiny shared library whose function returns 42, and a program that exits with its result.
void write_sources(const Scratch& s) {
    write_text(s / "tiny.c", "int tiny(void) { return 42; }\n");
    write_text(s / "main.c", "int tiny(void);\nint main(void) { return tiny(); }\n");
    write_text(s / "hello.c", "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n");
}

void build_tiny(const Scratch& s, const fs::path& out, const std::vector<std::string>& extra = {}) {
    fs::create_directories(out.parent_path());
    std::vector<std::string> args = {"-shared", "-fPIC", "-o", out.string(), (s / "tiny.c").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    cc(args);
}

void build_main(const Scratch& s, const fs::path& out, const fs::path& lib_dir, const std::vector<std::string>& extra) {
    fs::create_directories(out.parent_path());
    std::vector<std::string> args = {"-o", out.string(), (s / "main.c").string(), "-L" + lib_dir.string(), "-ltiny"};
    args.insert(args.end(), extra.begin(), extra.end());
    cc(args);
}

int run_program(const fs::path& exe) { return run({exe.string()}, {.extra_env = clean_env}).exit_code; }


// ---------------------------------------------------------------------------------------------
// read_info

std::vector<std::string> readelf_dynamic(const fs::path& file, const std::string& kind) {
    std::string out = run_checked({"readelf", "-dW", file.string()});
    std::vector<std::string> values;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.find("(" + kind + ")") == std::string::npos) continue;
        size_t open = line.find('['), close = line.rfind(']');
        values.push_back(line.substr(open + 1, close - open - 1));
    }
    return values;
}

TEST(ElfReadInfo, Ls) {
    fs::path ls = ls_path();
    Info info = read_info(ls);
    EXPECT_TRUE(info.is_elf);
    EXPECT_TRUE(info.is_64);
    EXPECT_TRUE(info.little_endian);
    EXPECT_TRUE(info.is_dynamic);
    EXPECT_EQ(info.machine, EM_X86_64);
    EXPECT_EQ(info.interpreter, "/lib64/ld-linux-x86-64.so.2");
    EXPECT_EQ(info.needed, readelf_dynamic(ls, "NEEDED"));
    EXPECT_NE(std::find(info.needed.begin(), info.needed.end(), "libselinux.so.1"), info.needed.end());
    EXPECT_NE(std::find(info.needed.begin(), info.needed.end(), "libc.so.6"), info.needed.end());
    EXPECT_TRUE(info.soname.empty());
    EXPECT_TRUE(info.rpath.empty());
    EXPECT_TRUE(info.runpath.empty());
}

TEST(ElfReadInfo, LibcHasSoname) {
    Info info = read_info("/lib/x86_64-linux-gnu/libc.so.6");
    EXPECT_EQ(info.type, ET_DYN);
    EXPECT_EQ(info.soname, "libc.so.6");
    EXPECT_EQ(info.needed, readelf_dynamic("/lib/x86_64-linux-gnu/libc.so.6", "NEEDED"));
    EXPECT_NE(std::find(info.needed.begin(), info.needed.end(), "ld-linux-x86-64.so.2"), info.needed.end());
}

TEST(ElfReadInfo, RpathRunpathSoname) {
    Scratch s;
    write_sources(s);
    build_tiny(s, s / "lib/libtiny.so", {"-Wl,-soname,libtiny.so.1"});
    build_main(s, s / "new", s / "lib", {"-Wl,-rpath,$ORIGIN/lib::/opt/x", "-Wl,--enable-new-dtags"});
    build_main(s, s / "old", s / "lib", {"-Wl,-rpath,$ORIGIN/lib:/opt/x", "-Wl,--disable-new-dtags"});

    Info lib = read_info(s / "lib/libtiny.so");
    EXPECT_EQ(lib.soname, "libtiny.so.1");
    EXPECT_TRUE(lib.interpreter.empty());

    Info new_tags = read_info(s / "new");
    EXPECT_EQ(new_tags.runpath, (std::vector<std::string>{"$ORIGIN/lib", "", "/opt/x"}));
    EXPECT_TRUE(new_tags.rpath.empty());
    EXPECT_NE(std::find(new_tags.needed.begin(), new_tags.needed.end(), "libtiny.so.1"), new_tags.needed.end());

    Info old_tags = read_info(s / "old");
    EXPECT_EQ(old_tags.rpath, (std::vector<std::string>{"$ORIGIN/lib", "/opt/x"}));
    EXPECT_TRUE(old_tags.runpath.empty());
}

TEST(ElfReadInfo, NotElf) {
    Scratch s;
    write_text(s / "script", "#!/bin/sh\necho hi\n");
    write_text(s / "empty", "");
    write_text(s / "elf", std::string(1, '\x7f') + "EL");
    for (const char* name : {"script", "empty", "elf"}) {
        Info info = read_info(s / name);
        EXPECT_FALSE(info.is_elf) << name;
        EXPECT_TRUE(info.needed.empty()) << name;
    }
    expect_error([&] { read_info(s / "missing"); }, {(s / "missing").string()});
}

// Offsets inside a copy of an x86-64 ELF file, for corrupting it.
struct Layout {
    Elf64_Ehdr header;
    std::vector<Elf64_Phdr> segments;
    const Elf64_Phdr* find(uint32_t type) const {
        for (const auto& ph : segments)
            if (ph.p_type == type) return &ph;
        return nullptr;
    }
};

Layout layout_of(const std::string& data) {
    Layout l;
    std::memcpy(&l.header, data.data(), sizeof l.header);
    l.segments.resize(l.header.e_phnum);
    std::memcpy(l.segments.data(), data.data() + l.header.e_phoff, l.header.e_phnum * sizeof(Elf64_Phdr));
    return l;
}

TEST(ElfReadInfo, MalformedFilesGiveClearErrors) {
    Scratch s;
    std::string ls = read_file(ls_path());
    Layout layout = layout_of(ls);
    const Elf64_Phdr* dynamic = layout.find(PT_DYNAMIC);
    ASSERT_NE(dynamic, nullptr);

    auto check = [&](const std::string& name, const std::string& data, const std::string& reason) {
        fs::path file = s / name;
        write_text(file, data);
        expect_error([&] { read_info(file); }, {file.string(), reason});
    };
    check("magic-only", std::string(1, '\x7f') + "ELF\x02\x01", "truncated");
    check("header-only", ls.substr(0, sizeof(Elf64_Ehdr)), "program header table");
    check("no-dynamic", ls.substr(0, dynamic->p_offset + 16), "PT_DYNAMIC");

    std::string bad_class = ls;
    bad_class[EI_CLASS] = 7;
    check("bad-class", bad_class, "unknown ELF class");

    // DT_STRTAB pointing nowhere.
    std::string bad_strtab = ls;
    bool patched = false;
    for (uint64_t at = dynamic->p_offset; at + sizeof(Elf64_Dyn) <= dynamic->p_offset + dynamic->p_filesz;
         at += sizeof(Elf64_Dyn)) {
        Elf64_Dyn entry;
        std::memcpy(&entry, bad_strtab.data() + at, sizeof entry);
        if (entry.d_tag != DT_STRTAB) continue;
        entry.d_un.d_ptr = 0x7ffffff0000;
        std::memcpy(bad_strtab.data() + at, &entry, sizeof entry);
        patched = true;
    }
    ASSERT_TRUE(patched);
    check("bad-strtab", bad_strtab, "DT_STRTAB");

    // A PT_INTERP without its terminating NUL.
    const Elf64_Phdr* interp = layout.find(PT_INTERP);
    ASSERT_NE(interp, nullptr);
    std::string bad_interp = ls;
    bad_interp[interp->p_offset + interp->p_filesz - 1] = 'x';
    check("bad-interp", bad_interp, "PT_INTERP");

    // closure() reports the same errors.
    expect_error([&] { closure(s / "no-dynamic"); }, {(s / "no-dynamic").string(), "PT_DYNAMIC"});
}

// ---------------------------------------------------------------------------------------------
// closure: system programs against ldd

TEST(ElfClosure, Ls) {
    fs::path ls = ls_path();
    std::vector<fs::path> files = closure(ls);
    expect_sorted_unique(files);
    std::set<std::string> names;
    for (const auto& p : files) names.insert(p.filename().string());
    for (const char* lib : {"libc.so.6", "libselinux.so.1", "libpcre2-8.so.0", "ld-linux-x86-64.so.2"})
        EXPECT_TRUE(names.count(lib)) << lib << " missing from\n" << show(files);
    // The interpreter under its PT_INTERP path, every link on the way, and the file itself.
    EXPECT_TRUE(contains(files, "/lib64/ld-linux-x86-64.so.2")) << show(files);
    fs::path target = fs::read_symlink("/lib64/ld-linux-x86-64.so.2");
    if (target.is_relative()) target = fs::path("/lib64") / target;
    EXPECT_TRUE(contains(files, target.lexically_normal())) << show(files);
    EXPECT_TRUE(contains(files, fs::canonical("/lib64/ld-linux-x86-64.so.2"))) << show(files);
    for (const auto& p : link_chain("/lib64/ld-linux-x86-64.so.2")) EXPECT_TRUE(contains(files, p)) << p;
    EXPECT_TRUE(contains(files, ls));
    EXPECT_TRUE(contains(files, fs::canonical(ls)));
    // Every entry is a symlink or a regular file that exists.
    for (const auto& p : files) EXPECT_TRUE(fs::is_regular_file(p) || fs::is_symlink(p)) << p;
    expect_matches_ldd(ls);
}

class ElfClosureVsLdd : public ::testing::TestWithParam<const char*> {};

TEST_P(ElfClosureVsLdd, SameLibraries) {
    fs::path exe = GetParam();
    if (!fs::exists(exe)) GTEST_SKIP() << exe << " is not installed";
    expect_matches_ldd(exe);
}

// openssl, cmake, git, python3, gdb, ssh: large closures; busctl and apropos: DT_RUNPATH into
// private directories; mkfs.erofs and veritysetup: what images are built with.
INSTANTIATE_TEST_SUITE_P(SystemPrograms, ElfClosureVsLdd,
                         ::testing::Values("/usr/bin/openssl", "/usr/bin/cmake", "/usr/bin/git", "/usr/bin/python3",
                                           "/usr/bin/gdb", "/usr/bin/ssh", "/usr/bin/busctl", "/usr/bin/apropos",
                                           "/usr/bin/mkfs.erofs", "/usr/sbin/veritysetup", "/usr/bin/qemu-img"));

// /usr/bin/java is a symlink chain into /usr/lib/jvm with DT_RPATH $ORIGIN/../lib: the loader takes
// $ORIGIN from the resolved path (ldd on the symlink gets it wrong and says "libjli.so => not found").
TEST(ElfClosure, SymlinkedSystemProgram) {
    fs::path java = "/usr/bin/java";
    if (!fs::exists(java)) GTEST_SKIP() << "no java installed";
    std::vector<fs::path> files = closure(java);
    EXPECT_TRUE(contains(files, java));
    EXPECT_TRUE(contains(files, fs::canonical(java)));
    fs::path jli = fs::canonical(java).parent_path().parent_path() / "lib/libjli.so";
    EXPECT_TRUE(contains(files, jli)) << show(files);
    expect_matches_ldd(java);
}

// ---------------------------------------------------------------------------------------------
// closure: programs built here

TEST(ElfClosure, StaticProgramIsJustItself) {
    Scratch s;
    write_sources(s);
    fs::path exe = fs::canonical(s.path()) / "static";
    cc({"-static", "-o", exe.string(), (s / "hello.c").string()});
    EXPECT_EQ(closure(exe), std::vector<fs::path>{exe});

    fs::path pie = fs::canonical(s.path()) / "static-pie";
    cc({"-static-pie", "-o", pie.string(), (s / "hello.c").string()});
    Info info = read_info(pie);
    EXPECT_TRUE(info.is_dynamic);
    EXPECT_TRUE(info.interpreter.empty());
    EXPECT_EQ(closure(pie), std::vector<fs::path>{pie});
}

TEST(ElfClosure, ScriptIsJustItself) {
    Scratch s;
    fs::path script = fs::canonical(s.path()) / "run.sh";
    write_text(script, "#!/bin/sh\nexec /bin/ls\n");
    EXPECT_EQ(closure(script), std::vector<fs::path>{script});
}

struct OriginCase {
    const char* name;
    std::vector<std::string> flags;
    bool runpath;
};

TEST(ElfClosure, OriginInRunpathAndRpath) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "lib/libtiny.so");
    const std::vector<OriginCase> cases = {
        {"runpath", {"-Wl,-rpath,$ORIGIN/lib", "-Wl,--enable-new-dtags"}, true},
        {"rpath", {"-Wl,-rpath,$ORIGIN/lib", "-Wl,--disable-new-dtags"}, false},
        {"braces", {"-Wl,-rpath,${ORIGIN}/lib", "-Wl,--enable-new-dtags"}, true},
        {"not-a-token", {"-Wl,-rpath,/nonexistent/$ORIGINAL:$ORIGIN/lib", "-Wl,--enable-new-dtags"}, true},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        fs::path exe = root / c.name;
        build_main(s, exe, root / "lib", c.flags);
        Info info = read_info(exe);
        EXPECT_EQ(info.runpath.empty(), !c.runpath);
        EXPECT_EQ(info.rpath.empty(), c.runpath);
        std::vector<fs::path> files = closure(exe);
        expect_sorted_unique(files);
        EXPECT_TRUE(contains(files, root / "lib/libtiny.so")) << show(files);
        EXPECT_TRUE(contains(files, exe));
        EXPECT_EQ(run_program(exe), 42);  // the real loader finds it the same way
        expect_matches_ldd(exe);
    }
}

TEST(ElfClosure, LibDstExpandsToMultiarchDirectory) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "lib/x86_64-linux-gnu/libtiny.so");
    fs::path exe = root / "prog";
    build_main(s, exe, root / "lib/x86_64-linux-gnu", {"-Wl,-rpath,$ORIGIN/$LIB:$ORIGIN/$PLATFORM"});
    EXPECT_TRUE(contains(closure(exe), root / "lib/x86_64-linux-gnu/libtiny.so")) << show(closure(exe));
    EXPECT_EQ(run_program(exe), 42);
    expect_matches_ldd(exe);

    fs::remove_all(root / "lib");
    build_tiny(s, root / "x86_64/libtiny.so");
    EXPECT_TRUE(contains(closure(exe), root / "x86_64/libtiny.so")) << show(closure(exe));
    EXPECT_EQ(run_program(exe), 42);
}

// A symlinked executable: $ORIGIN is the resolved directory, and the result holds the link too.
TEST(ElfClosure, SymlinkedProgramUsesResolvedOrigin) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "real/lib/libtiny.so");
    build_main(s, root / "real/bin/prog", root / "real/lib", {"-Wl,-rpath,$ORIGIN/../lib"});
    fs::create_directories(root / "bin");
    fs::create_symlink("../real/bin/prog", root / "bin/prog");
    std::vector<fs::path> files = closure(root / "bin/prog");
    expect_sorted_unique(files);
    EXPECT_TRUE(contains(files, root / "bin/prog"));
    EXPECT_TRUE(contains(files, root / "real/bin/prog"));
    EXPECT_TRUE(contains(files, root / "real/lib/libtiny.so")) << show(files);
    EXPECT_EQ(run_program(root / "bin/prog"), 42);
}

// A library found through a symlink takes $ORIGIN from the link's directory, not the target's.
TEST(ElfClosure, LibraryOriginIsWhereItWasFound) {
    Scratch s;
    fs::path root = fs::canonical(s.path());
    write_text(root / "dep.c", "int dep(void) { return 42; }\n");
    write_text(root / "foo.c", "int dep(void);\nint foo(void) { return dep(); }\n");
    write_text(root / "main.c", "int foo(void);\nint main(void) { return foo(); }\n");
    fs::create_directories(root / "real/dep");
    fs::create_directories(root / "a/dep");
    cc({"-shared", "-fPIC", "-o", (root / "real/dep/libdep.so").string(), (root / "dep.c").string()});
    fs::copy_file(root / "real/dep/libdep.so", root / "a/dep/libdep.so");
    cc({"-shared", "-fPIC", "-o", (root / "real/libfoo.so").string(), (root / "foo.c").string(),
        "-L" + (root / "real/dep").string(), "-ldep", "-Wl,-rpath,$ORIGIN/dep"});
    fs::create_symlink("../real/libfoo.so", root / "a/libfoo.so");
    fs::create_directories(root / "bin");
    fs::path exe = root / "bin/main";
    cc({"-o", exe.string(), (root / "main.c").string(), "-L" + (root / "real").string(), "-lfoo",
        "-Wl,-rpath,$ORIGIN/../a"});

    std::vector<fs::path> files = closure(exe);
    EXPECT_TRUE(contains(files, root / "a/libfoo.so")) << show(files);
    EXPECT_TRUE(contains(files, root / "real/libfoo.so")) << show(files);
    EXPECT_TRUE(contains(files, root / "a/dep/libdep.so")) << show(files);
    EXPECT_FALSE(contains(files, root / "real/dep/libdep.so")) << show(files);
    EXPECT_EQ(run_program(exe), 42);
    expect_matches_ldd(exe);
}

// DT_RPATH of the executable also serves its libraries' needs; DT_RUNPATH does not.
TEST(ElfClosure, RpathIsInheritedRunpathIsNot) {
    Scratch s;
    fs::path root = fs::canonical(s.path());
    write_text(root / "bar.c", "int bar(void) { return 42; }\n");
    write_text(root / "foo.c", "int bar(void);\nint foo(void) { return bar(); }\n");
    write_text(root / "main.c", "int foo(void);\nint main(void) { return foo(); }\n");
    fs::create_directories(root / "a");
    fs::create_directories(root / "b");
    cc({"-shared", "-fPIC", "-o", (root / "b/libbar.so").string(), (root / "bar.c").string()});
    cc({"-shared", "-fPIC", "-o", (root / "a/libfoo.so").string(), (root / "foo.c").string(),
        "-L" + (root / "b").string(), "-lbar"});
    auto build = [&](const std::string& name, const char* tags) {
        cc({"-o", (root / name).string(), (root / "main.c").string(), "-L" + (root / "a").string(), "-lfoo",
            "-Wl,-rpath-link," + (root / "b").string(), "-Wl,-rpath,$ORIGIN/a:$ORIGIN/b", tags});
        return root / name;
    };

    fs::path with_rpath = build("with-rpath", "-Wl,--disable-new-dtags");
    std::vector<fs::path> files = closure(with_rpath);
    EXPECT_TRUE(contains(files, root / "a/libfoo.so")) << show(files);
    EXPECT_TRUE(contains(files, root / "b/libbar.so")) << show(files);
    EXPECT_EQ(run_program(with_rpath), 42);
    expect_matches_ldd(with_rpath);

    fs::path with_runpath = build("with-runpath", "-Wl,--enable-new-dtags");
    expect_error([&] { closure(with_runpath); }, {with_runpath.string() + ": needs libbar.so, which was not found",
                                                  "needed by " + (root / "a/libfoo.so").string(), "searched: "});
    EXPECT_FALSE(ldd(with_runpath));
    EXPECT_EQ(run_program(with_runpath), 127);
}

TEST(ElfClosure, MissingLibraryNamesProgramAndLibrary) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "lib/libtiny.so");
    fs::path exe = root / "prog";
    build_main(s, exe, root / "lib", {"-Wl,-rpath,$ORIGIN/lib"});
    ASSERT_TRUE(contains(closure(exe), root / "lib/libtiny.so"));
    fs::remove(root / "lib/libtiny.so");
    expect_error([&] { closure(exe); },
                 {exe.string() + ": needs libtiny.so, which was not found (searched: " + (root / "lib").string(),
                  "/etc/ld.so.cache", "/usr/lib"});
    EXPECT_EQ(run_program(exe), 127);
}

// ld.so skips a candidate of another ELF class or machine and goes on searching.
TEST(ElfClosure, SkipsOtherClassAndMachine) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "good/libtiny.so");
    std::string lib = read_file(root / "good/libtiny.so");
    std::string other_machine = lib;
    uint16_t aarch64 = EM_AARCH64;
    std::memcpy(other_machine.data() + offsetof(Elf64_Ehdr, e_machine), &aarch64, sizeof aarch64);
    write_text(root / "machine/libtiny.so", other_machine);
    std::string other_class = lib;
    other_class[EI_CLASS] = ELFCLASS32;
    write_text(root / "class/libtiny.so", other_class);

    fs::path exe = root / "prog";
    build_main(s, exe, root / "good", {"-Wl,-rpath,$ORIGIN/machine:$ORIGIN/class:$ORIGIN/good"});
    std::vector<fs::path> files = closure(exe);
    EXPECT_TRUE(contains(files, root / "good/libtiny.so")) << show(files);
    EXPECT_FALSE(contains(files, root / "machine/libtiny.so")) << show(files);
    EXPECT_FALSE(contains(files, root / "class/libtiny.so")) << show(files);
    EXPECT_EQ(run_program(exe), 42);
    expect_matches_ldd(exe);

    fs::remove(root / "good/libtiny.so");
    expect_error([&] { closure(exe); }, {"needs libtiny.so, which was not found", "skipped",
                                         (root / "machine/libtiny.so").string(), (root / "class/libtiny.so").string()});
}

// A candidate that is not a loadable ELF file stops ld.so ("invalid ELF header", "file too short").
TEST(ElfClosure, BrokenCandidateIsAnError) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "good/libtiny.so");
    fs::path exe = root / "prog";
    build_main(s, exe, root / "good", {"-Wl,-rpath,$ORIGIN/bad:$ORIGIN/good"});
    write_text(root / "bad/libtiny.so", "INPUT(-ltiny)\n/* a linker script, not a library */\n");
    expect_error([&] { closure(exe); }, {exe.string(), (root / "bad/libtiny.so").string(), "invalid ELF header"});
    EXPECT_EQ(run_program(exe), 127);
    write_text(root / "bad/libtiny.so", read_file(root / "good/libtiny.so").substr(0, 100));
    expect_error([&] { closure(exe); }, {exe.string(), (root / "bad/libtiny.so").string()});
    EXPECT_EQ(run_program(exe), 127);
}

// A need that matches the DT_SONAME of an object already loaded is not searched for (ld.so does the
// same: libc's need for ld-linux-x86-64.so.2 is the interpreter). Here the loaded file is
// x/libreal.so with DT_SONAME libalias.so.1, and nothing on y/libuser.so's search path holds a
// file of that name.
TEST(ElfClosure, LoadedSonameSatisfiesLaterNeeds) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "x/libreal.so", {"-Wl,-soname,libalias.so.1"});
    build_tiny(s, root / "stub/libreal.so", {"-Wl,-soname,libreal.so"});
    write_text(root / "user.c", "int tiny(void);\nint user(void) { return tiny(); }\n");
    fs::create_directories(root / "y");
    cc({"-shared", "-fPIC", "-o", (root / "y/libuser.so").string(), (root / "user.c").string(),
        "-L" + (root / "x").string(), "-l:libreal.so"});
    ASSERT_EQ(read_info(root / "y/libuser.so").needed.front(), "libalias.so.1");
    write_text(root / "prog.c", "int user(void);\nint main(void) { return user(); }\n");
    fs::path exe = root / "prog";
    cc({"-o", exe.string(), (root / "prog.c").string(), "-Wl,--no-as-needed", "-L" + (root / "stub").string(), "-lreal",
        "-L" + (root / "y").string(), "-luser", "-Wl,-rpath-link," + (root / "x").string(), "-Wl,--enable-new-dtags",
        "-Wl,-rpath,$ORIGIN/x:$ORIGIN/y"});
    std::vector<fs::path> files = closure(exe);
    EXPECT_TRUE(contains(files, root / "x/libreal.so")) << show(files);
    EXPECT_TRUE(contains(files, root / "y/libuser.so")) << show(files);
    EXPECT_EQ(run_program(exe), 42);
    expect_matches_ldd(exe);
}

// DT_NEEDED with a '/' (a library without DT_SONAME linked by its path) is opened as a path.
TEST(ElfClosure, NeededPathIsUsedAsIs) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    fs::path lib = root / "somewhere/libtiny.so";
    build_tiny(s, lib);
    fs::path exe = root / "prog";
    cc({"-o", exe.string(), (s / "main.c").string(), lib.string()});
    Info info = read_info(exe);
    ASSERT_NE(std::find(info.needed.begin(), info.needed.end(), lib.string()), info.needed.end());
    std::vector<fs::path> files = closure(exe);
    EXPECT_TRUE(contains(files, lib)) << show(files);
    EXPECT_EQ(run_program(exe), 42);
    expect_matches_ldd(exe);
}

// A library reached through a symlink chain brings every link: the caller recreates them.
TEST(ElfClosure, LibrarySymlinkChain) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "store/libtiny.so.1.2.3", {"-Wl,-soname,libtiny.so.1"});
    fs::create_directories(root / "lib");
    fs::create_symlink("../store/libtiny.so.1.2.3", root / "lib/libtiny.so.1.2");
    fs::create_symlink("libtiny.so.1.2", root / "lib/libtiny.so.1");
    fs::create_symlink("libtiny.so.1", root / "lib/libtiny.so");
    fs::path exe = root / "prog";
    build_main(s, exe, root / "lib", {"-Wl,-rpath,$ORIGIN/lib"});
    std::vector<fs::path> files = closure(exe);
    EXPECT_TRUE(contains(files, root / "lib/libtiny.so.1")) << show(files);
    EXPECT_TRUE(contains(files, root / "lib/libtiny.so.1.2")) << show(files);
    EXPECT_TRUE(contains(files, root / "store/libtiny.so.1.2.3")) << show(files);
    EXPECT_FALSE(contains(files, root / "lib/libtiny.so")) << show(files);  // the link-time name only
    EXPECT_EQ(run_program(exe), 42);

    EXPECT_EQ(link_chain(root / "lib/libtiny.so"),
              (std::vector<fs::path>{root / "lib/libtiny.so", root / "lib/libtiny.so.1", root / "lib/libtiny.so.1.2",
                                     root / "store/libtiny.so.1.2.3"}));
    EXPECT_EQ(link_chain(root / "lib/../store/libtiny.so.1.2.3"),
              std::vector<fs::path>{root / "store/libtiny.so.1.2.3"});
    fs::create_symlink("missing", root / "lib/dangling");
    expect_error([&] { link_chain(root / "lib/dangling"); }, {(root / "lib/missing").string()});
    fs::create_symlink("loop", root / "lib/loop");
    expect_error([&] { link_chain(root / "lib/loop"); }, {(root / "lib/loop").string(), "symbolic links"});
}

// ---------------------------------------------------------------------------------------------
// ld.so.conf and ld.so.cache

TEST(ElfLdSoConf, IncludesCommentsAndSuffixes) {
    Scratch s;
    fs::path root = fs::canonical(s.path());
    write_text(root / "etc/ld.so.conf",
               "# top\ninclude conf.d/*.conf\n/top/dir/ # trailing slash\n"
               "hwcap 0 nosegneg\ninclude /nonexistent/*.conf\n");
    write_text(root / "etc/conf.d/b.conf", "\t/b/one\n/old/style=libc6\nrelative/dir\n/top/dir\n");
    write_text(root / "etc/conf.d/a.conf", "/a/one\n  \n#/commented\n");
    write_text(root / "etc/conf.d/ignored.txt", "/not/included\n");
    std::vector<fs::path> expected = {"/a/one", "/b/one", "/old/style", "/top/dir"};
    EXPECT_EQ(ld_so_conf_dirs(root / "etc/ld.so.conf"), expected);
    EXPECT_TRUE(ld_so_conf_dirs(root / "missing.conf").empty());

    write_text(root / "loop/ld.so.conf", "include ld.so.conf\n");
    expect_error([&] { ld_so_conf_dirs(root / "loop/ld.so.conf"); }, {(root / "loop/ld.so.conf").string()});
}

TEST(ElfLdSoConf, HostConfiguration) {
    if (!fs::exists("/etc/ld.so.conf")) GTEST_SKIP() << "no /etc/ld.so.conf";
    std::vector<fs::path> dirs = ld_so_conf_dirs("/etc/ld.so.conf");
    EXPECT_TRUE(contains(dirs, "/usr/lib/x86_64-linux-gnu")) << show(dirs);
}

TEST(ElfClosure, FindsLibrariesThroughLdSoConf) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "confdir/libtiny.so");
    fs::path exe = root / "prog";
    build_main(s, exe, root / "confdir", {});
    write_text(root / "ld.so.conf", "include conf.d/*.conf\n");
    write_text(root / "conf.d/tiny.conf", (root / "confdir").string() + "\n");
    SearchConfig config{.ld_so_cache = root / "no-cache", .ld_so_conf = root / "ld.so.conf"};
    EXPECT_TRUE(contains(closure(exe, config), root / "confdir/libtiny.so")) << show(closure(exe, config));
    expect_error([&] { closure(exe); }, {"needs libtiny.so, which was not found"});
    // A malformed cache is ignored, as by ld.so.
    write_text(root / "bad-cache", "glibc-ld.so.cache1.1 but nothing else");
    config.ld_so_cache = root / "bad-cache";
    EXPECT_TRUE(contains(closure(exe, config), root / "confdir/libtiny.so"));
}

TEST(ElfLdSoCache, MatchesLdconfig) {
    if (!fs::exists("/etc/ld.so.cache")) GTEST_SKIP() << "no /etc/ld.so.cache";
    std::vector<CacheEntry> entries = read_ld_so_cache("/etc/ld.so.cache");
    std::string listing = run_checked({"/sbin/ldconfig", "-p", "-C", "/etc/ld.so.cache"});
    std::istringstream lines(listing);
    std::string line;
    std::getline(lines, line);  // "N libs found in cache `/etc/ld.so.cache'"
    EXPECT_EQ(std::stoul(line), entries.size()) << line;
    size_t index = 0;
    while (std::getline(lines, line)) {
        if (line.empty() || line[0] != '\t') continue;  // "Cache generated by: ..."
        ASSERT_LT(index, entries.size());
        size_t paren = line.find(" ("), arrow = line.rfind(" => ");
        EXPECT_EQ(line.substr(1, paren - 1), entries[index].name);
        EXPECT_EQ(line.substr(arrow + 4), entries[index].path);
        if (line.find("libc6,x86-64") != std::string::npos) {
            EXPECT_EQ(entries[index].flags, 0x0303) << line;
        }
        ++index;
    }
    EXPECT_EQ(index, entries.size());
    auto libc = std::find_if(entries.begin(), entries.end(), [](const CacheEntry& e) { return e.name == "libc.so.6"; });
    ASSERT_NE(libc, entries.end());
    EXPECT_TRUE(fs::equivalent(libc->path, "/lib/x86_64-linux-gnu/libc.so.6"));
}

TEST(ElfLdSoCache, MalformedCacheIsAnError) {
    Scratch s;
    write_text(s / "junk", "not a cache at all, but long enough to hold a header......");
    expect_error([&] { read_ld_so_cache(s / "junk"); }, {(s / "junk").string(), "not a glibc ld.so cache"});
    std::string header = std::string("glibc-ld.so.cache1.1") + std::string(28, '\0');
    header[20] = 100;  // 100 entries, none present
    header[28] = 2;
    write_text(s / "short", header);
    expect_error([&] { read_ld_so_cache(s / "short"); }, {(s / "short").string(), "truncated"});
}

// The cache comes before the ld.so.conf directories, as for ld.so.
TEST(ElfClosure, FindsLibrariesThroughTheCacheFirst) {
    Scratch s;
    write_sources(s);
    fs::path root = fs::canonical(s.path());
    build_tiny(s, root / "cached/libtiny.so.1", {"-Wl,-soname,libtiny.so.1"});
    fs::create_directories(root / "conf");
    fs::copy_file(root / "cached/libtiny.so.1", root / "conf/libtiny.so.1");
    fs::path exe = root / "prog";
    cc({"-o", exe.string(), (s / "main.c").string(), "-L" + (root / "cached").string(), "-l:libtiny.so.1"});

    write_text(root / "cache.conf", (root / "cached").string() + "\n");
    run_checked({"/sbin/ldconfig", "-X", "-C", (root / "ld.so.cache").string(), "-f", (root / "cache.conf").string()});
    std::vector<CacheEntry> entries = read_ld_so_cache(root / "ld.so.cache");
    EXPECT_TRUE(std::any_of(entries.begin(), entries.end(), [&](const CacheEntry& e) {
        return e.name == "libtiny.so.1" && e.path == (root / "cached/libtiny.so.1").string();
    }));

    write_text(root / "ld.so.conf", (root / "conf").string() + "\n");
    SearchConfig config{.ld_so_cache = root / "ld.so.cache", .ld_so_conf = root / "ld.so.conf"};
    std::vector<fs::path> files = closure(exe, config);
    EXPECT_TRUE(contains(files, root / "cached/libtiny.so.1")) << show(files);
    EXPECT_FALSE(contains(files, root / "conf/libtiny.so.1")) << show(files);

    config.ld_so_cache = root / "no-cache";
    files = closure(exe, config);
    EXPECT_TRUE(contains(files, root / "conf/libtiny.so.1")) << show(files);
}

}  // namespace
}  // namespace cairn::elf
