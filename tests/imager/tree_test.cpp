#include "imager/tree.hpp"

#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

TEST(Tree, ResolvesSymlinksInsideTheTree) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_directory("/usr/bin", Meta{0, 0, 0755}, "t");
    t.add_symlink("/bin", "usr/bin", Meta{}, "t");
    t.add_symlink("/abs", "/usr", Meta{}, "t");
    EXPECT_EQ(t.resolve("/bin/ls", "t"), "/usr/bin/ls");
    EXPECT_EQ(t.resolve("/abs/bin/ls", "t"), "/usr/bin/ls");
    EXPECT_EQ(t.resolve("/bin", "t"), "/bin");  // the last component is not followed
    // An absolute link never leaves the tree, even one that climbs.
    t.add_symlink("/escape", "../../../../etc", Meta{}, "t");
    EXPECT_EQ(t.resolve("/escape/passwd", "t"), "/etc/passwd");
}

TEST(Tree, FilesGoThroughMergedUsrLinks) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_directory("/usr/bin", Meta{0, 0, 0755}, "t");
    t.add_symlink("/bin", "usr/bin", Meta{}, "t");
    t.add_file("/bin/tool", "x", Meta{0, 0, 0755}, "t");
    EXPECT_TRUE(std::filesystem::is_regular_file(dir / "root/usr/bin/tool"));
    ASSERT_TRUE(t.meta("/usr/bin/tool"));
    EXPECT_EQ(t.meta("/usr/bin/tool")->mode, S_IFREG | 0755);
}

TEST(Tree, EntriesUnderAFolderAreItsDescendantsOnly) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_directory("/usr/lib/a/b", Meta{0, 0, 0755}, "t");
    t.add_file("/usr/lib/a/b/c", "x", Meta{0, 0, 0644}, "t");
    t.add_file("/usr/lib/a/x", "x", Meta{0, 0, 0644}, "t");
    t.add_file("/usr/lib/a.conf", "x", Meta{0, 0, 0644}, "t");  // shares the name's start, not the folder
    t.add_file("/usr/lib/a0", "x", Meta{0, 0, 0644}, "t");       // '0' sorts right after '/'
    auto paths = [&](std::string_view folder) {
        std::vector<std::string> v;
        for (const auto& [path, meta] : t.entries_under(folder)) v.push_back(path);
        return v;
    };
    const std::vector<std::string> below_a = {"/usr/lib/a/b", "/usr/lib/a/b/c", "/usr/lib/a/x"};
    EXPECT_EQ(paths("/usr/lib/a"), below_a);
    EXPECT_EQ(paths("/usr/lib/a/"), below_a);
    EXPECT_EQ(paths("/usr/lib/a/b/c"), std::vector<std::string>{});
    EXPECT_EQ(paths("/nowhere"), std::vector<std::string>{});
    const std::vector<std::string> all = paths("/");
    EXPECT_EQ(all.size(), t.entries().size() - 1) << "everything but / itself";
    EXPECT_EQ(all.front(), "/usr");
}

TEST(Tree, LoopsAndNonDirectoriesAreErrors) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_symlink("/a", "b", Meta{}, "t");
    t.add_symlink("/b", "a", Meta{}, "t");
    EXPECT_THROW(t.resolve("/a/x", "t"), Error);
    t.add_file("/f", "x", Meta{0, 0, 0644}, "t");
    try {
        t.add_file("/f/g", "x", Meta{0, 0, 0644}, "step 3");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("step 3: '/f' in the image is not a directory"), std::string::npos) << e.what();
    }
}

TEST(Tree, LaterEntriesReplaceEarlierOnes) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_file("/etc/x", "old", Meta{0, 0, 0644}, "t");
    t.add_symlink("/etc/x", "y", Meta{}, "t");
    EXPECT_TRUE(std::filesystem::is_symlink(dir / "root/etc/x"));
    t.add_file("/etc/x", "new", Meta{5, 6, 0600}, "t");
    EXPECT_EQ(read_file(dir / "root/etc/x"), "new");
    EXPECT_EQ(t.meta("/etc/x")->uid, 5u);
    // A directory that exists keeps its content and takes the new metadata.
    t.add_directory("/etc", Meta{0, 0, 0700}, "t");
    EXPECT_TRUE(t.meta("/etc/x"));
    EXPECT_EQ(t.meta("/etc")->mode, S_IFDIR | 0700);
    EXPECT_EQ(t.meta("/etc/x")->mode & 07777, 0600u);
}

TEST(Tree, ParentsAreRootOwned0755) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_file("/a/b/c", "x", Meta{7, 7, 0600}, "t");
    EXPECT_EQ(t.meta("/a")->mode, S_IFDIR | 0755);
    EXPECT_EQ(t.meta("/a/b")->uid, 0u);
}

TEST(Tree, LooksUpNamesInTheImage) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_file("/etc/passwd", "root:x:0:0::/root:/bin/sh\nalice:x:1001:1002::/home/alice:/bin/sh\n", Meta{0, 0, 0644}, "t");
    t.add_file("/etc/group", "root:x:0:\nstaff:x:50:\n", Meta{0, 0, 0644}, "t");
    EXPECT_EQ(t.lookup_user("alice"), 1001u);
    EXPECT_EQ(t.lookup_group("staff"), 50u);
    EXPECT_FALSE(t.lookup_user("bob"));
}

TEST(Tree, SyncAdoptsEntriesMadeByOthers) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_file("/keep", "x", Meta{3, 3, 0600}, "t");
    test::write_text(dir / "root/made/by/tool", "y");
    t.sync_with_staging();
    EXPECT_EQ(t.meta("/keep")->uid, 3u);
    ASSERT_TRUE(t.meta("/made/by/tool"));
    EXPECT_EQ(t.meta("/made/by/tool")->uid, 0u);
    EXPECT_TRUE(S_ISDIR(t.meta("/made")->mode));
}

// A tree where dpkg ran as root: what it made keeps the owner it gave on disk.
TEST(Tree, SyncCanTakeOwnersFromTheStagingTree) {
    if (!test::is_root()) GTEST_SKIP() << "needs root (lchown)";
    Scratch dir;
    Tree t(dir / "root");
    t.add_file("/keep", "x", Meta{3, 3, 0600}, "t");
    test::write_text(dir / "root/etc/shadow", "y");
    ASSERT_EQ(::lchown((dir / "root/etc/shadow").c_str(), 0, 42), 0);
    ::chmod((dir / "root/etc/shadow").c_str(), 0640);
    t.sync_with_staging(true);
    EXPECT_EQ(t.meta("/keep")->uid, 3u);
    ASSERT_TRUE(t.meta("/etc/shadow"));
    EXPECT_EQ(t.meta("/etc/shadow")->gid, 42u);
    EXPECT_EQ(t.meta("/etc/shadow")->mode, static_cast<uint32_t>(S_IFREG | 0640));
    t.sync_with_staging();
    EXPECT_EQ(t.meta("/etc/shadow")->gid, 42u);  // known now: kept
}

class TreeMetadata : public ::testing::TestWithParam<bool> {};

// Both ways: lchown/chmod (root only), and a fakeroot database (any user).
TEST_P(TreeMetadata, ShowsUpForProgramsRunThroughTheRunner) {
    const bool as_root = GetParam();
    if (as_root && !test::is_root()) GTEST_SKIP() << "needs root";
    Scratch dir;
    Tree t(dir / "root");
    t.add_file("/secret", "x", Meta{1234, 5678, 04750}, "t");
    t.add_directory("/d", Meta{42, 43, 0711}, "t");
    auto runner = t.apply_metadata(1000000000, dir.path(), as_root);
    EXPECT_EQ(runner.empty(), as_root);
    std::vector<std::string> argv = runner;
    for (std::string a : {std::string("stat"), std::string("-c"), std::string("%u %g %a %Y"), (dir / "root/secret").string(), (dir / "root/d").string()})
        argv.push_back(a);
    std::string out = run_checked(argv);
    EXPECT_EQ(out, "1234 5678 4750 1000000000\n42 43 711 1000000000\n");
}

INSTANTIATE_TEST_SUITE_P(Ways, TreeMetadata, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "chown" : "fakeroot"; });

// Cairn's own programs go into an image without their debug sections, and still run there.
TEST(Tree, CairnProgramsLoseTheirDebugSections) {
    Scratch dir;
    Tree t(dir / "root");
    std::vector<std::filesystem::path> libraries = add_cairn_program(t, CAIRNCTL_BINARY, "/usr/bin/cairnctl", Meta{0, 0, 0755}, "t");
    EXPECT_FALSE(libraries.empty());  // its libraries come along, as with add_host_executable
    const std::filesystem::path staged = dir / "root/usr/bin/cairnctl";
    ASSERT_TRUE(std::filesystem::is_regular_file(staged));
    if (run_checked({"readelf", "-S", CAIRNCTL_BINARY}).find(".debug_info") == std::string::npos)
        GTEST_SKIP() << "cairnctl was built without debug information (the default build type, RelWithDebInfo, has it)";
    EXPECT_EQ(run_checked({"readelf", "-S", staged.string()}).find(".debug_"), std::string::npos);
    EXPECT_LT(std::filesystem::file_size(staged), std::filesystem::file_size(CAIRNCTL_BINARY) / 2);
    std::filesystem::copy_file(staged, dir / "cairnctl");  // staged copies are 0644: the metadata table has the mode
    std::filesystem::permissions(dir / "cairnctl", std::filesystem::perms::owner_all);
    EXPECT_EQ(run({(dir / "cairnctl").string(), "--help"}).exit_code, 0);
    ASSERT_TRUE(t.meta("/usr/bin/cairnctl"));
    EXPECT_EQ(t.meta("/usr/bin/cairnctl")->mode, S_IFREG | 0755);

    cairn::test::expect_error([&] { add_cairn_program(t, dir / "missing", "/usr/bin/x", Meta{0, 0, 0755}, "recipe.update"); },
                 {"recipe.update"});
}

// A library a Debian package already put into the tree (here: through the merged-/usr symlink)
// is the package's file, not replaced by the build host's copy.
TEST(Tree, HostExecutablesKeepTheLibrariesTheTreeHas) {
    Scratch dir;
    Tree t(dir / "root");
    t.add_directory("/usr", Meta{0, 0, 0755}, "t");
    t.add_directory("/usr/lib", Meta{0, 0, 0755}, "t");
    t.add_symlink("/lib", "usr/lib", Meta{0, 0, 0777}, "t");
    t.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "the package's libc\n", Meta{0, 0, 0644}, "t");
    std::vector<std::filesystem::path> libraries = add_host_executable(t, "/usr/bin/ls", "/usr/bin/ls", Meta{0, 0, 0755}, "t");
    EXPECT_EQ(read_file(dir / "root/usr/lib/x86_64-linux-gnu/libc.so.6"), "the package's libc\n");
    EXPECT_TRUE(std::filesystem::is_symlink(dir / "root/lib"));  // still the merged-/usr link
    EXPECT_NE(std::find(libraries.begin(), libraries.end(), std::filesystem::path("/lib/x86_64-linux-gnu/libc.so.6")), libraries.end());
    EXPECT_TRUE(std::filesystem::is_regular_file(dir / "root/usr/lib/x86_64-linux-gnu/libselinux.so.1"));  // what it lacked came
}

// Every ELF object in the tree against the libraries the tree holds, found as the image's ld.so
// would find them.
TEST(Tree, FindsProgramsWithoutTheirSharedLibraries) {
    Scratch dir;
    {
        Tree t(dir / "complete");
        add_host_executable(t, "/usr/bin/ls", "/bin/ls", Meta{0, 0, 0755}, "t");
        EXPECT_TRUE(missing_libraries(t).empty());
    }
    Tree t(dir / "bare");
    t.add_file_copy("/bin/ls", "/usr/bin/ls", Meta{0, 0, 0755}, "t");
    t.add_file("/etc/motd", "not ELF\n", Meta{0, 0, 0644}, "t");
    auto missing = missing_libraries(t);
    ASSERT_EQ(missing.size(), 1u);
    EXPECT_EQ(missing[0].path, "/bin/ls");
    EXPECT_EQ(missing[0].interpreter, "/lib64/ld-linux-x86-64.so.2");
    EXPECT_EQ(missing[0].libraries, (std::vector<std::string>{"libselinux.so.1", "libc.so.6"}));

    // The libraries in a folder the image's /etc/ld.so.conf names (through an include), and the
    // interpreter where PT_INTERP says: nothing is missing; libselinux's own needs count too.
    t.add_file_copy("/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2", Meta{0, 0, 0755}, "t");
    t.add_file_copy("/opt/libs/libselinux.so.1", "/lib/x86_64-linux-gnu/libselinux.so.1", Meta{0, 0, 0644}, "t");
    t.add_file_copy("/opt/libs/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", Meta{0, 0, 0755}, "t");
    t.add_file("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n", Meta{0, 0, 0644}, "t");
    t.add_file("/etc/ld.so.conf.d/opt.conf", "# ours\n/opt/libs\n", Meta{0, 0, 0644}, "t");
    missing = missing_libraries(t);
    ASSERT_EQ(missing.size(), 1u);
    EXPECT_EQ(missing[0].path, "/opt/libs/libselinux.so.1");
    EXPECT_EQ(missing[0].libraries, (std::vector<std::string>{"libpcre2-8.so.0"}));
    t.add_file_copy("/opt/libs/libpcre2-8.so.0", "/lib/x86_64-linux-gnu/libpcre2-8.so.0", Meta{0, 0, 0644}, "t");
    EXPECT_TRUE(missing_libraries(t).empty());
}

// A link to a folder in the staging tree is the link's own entry, not its target's: with
// merged /usr (/bin -> usr/bin) the link once took /usr/bin's place in the table, so /usr/bin's
// files lost their times in ext4 images (two Debian builds differed).
TEST(Tree, SyncKeepsALinkToAFolderApartFromTheFolder) {
    Scratch dir;
    Tree t(dir / "root");
    std::filesystem::create_directories(dir / "root/usr/bin");
    test::write_text(dir / "root/usr/bin/tool", "x");
    std::filesystem::create_symlink("usr/bin", dir / "root/bin");
    t.sync_with_staging(true);
    ASSERT_TRUE(t.meta("/usr/bin"));
    EXPECT_TRUE(S_ISDIR(t.meta("/usr/bin")->mode));
    ASSERT_TRUE(t.meta("/bin"));
    EXPECT_TRUE(S_ISLNK(t.meta("/bin")->mode));
    EXPECT_TRUE(t.meta("/usr/bin/tool"));
}

TEST(Tree, StagingGoesIntoMemoryOnlyWhenHalfTheMemoryHoldsIt) {
    constexpr uint64_t GiB = 1ull << 30;
    EXPECT_EQ(staging_tmpfs_size(16 * GiB, 4 * GiB, false), 8 * GiB);
    EXPECT_EQ(staging_tmpfs_size(8 * GiB, 4 * GiB, false), 4 * GiB);
    EXPECT_EQ(staging_tmpfs_size(8 * GiB - 1, 4 * GiB, false), std::nullopt);
    EXPECT_EQ(staging_tmpfs_size(16 * GiB, 4 * GiB, true), std::nullopt);  // a compressed root's tree is larger than its partition
    EXPECT_EQ(staging_tmpfs_size(24 * GiB, 4 * GiB, true), 12 * GiB);
    EXPECT_EQ(staging_tmpfs_size(16 * GiB, 0, false), std::nullopt);
    EXPECT_EQ(staging_tmpfs_size(0, 4 * GiB, false), std::nullopt);
    EXPECT_GT(memory_available(), 0u);
}

// In a child: the namespace is the process's own, and the test process's mounts stay as they are.
TEST(Tree, StagingTmpfsIsPrivateAndRemovable) {
    if (!test::is_root()) GTEST_SKIP() << "mounting needs root";
    Scratch dir;
    const fs::path staging = dir / "tree";
    fs::create_directories(staging);
    int mounted[2], checked[2];
    ASSERT_EQ(::pipe(mounted), 0);
    ASSERT_EQ(::pipe(checked), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        int code = 0;
        try {
            mount_private_tmpfs(staging, 64 << 20);
            struct statfs st {};
            if (::statfs(staging.c_str(), &st) != 0 || st.f_type != TMPFS_MAGIC) code = 3;
            Tree t(staging);
            t.add_file("/etc/hostname", "x\n", Meta{0, 0, S_IFREG | 0644}, "t");
            struct stat s {};
            if (::stat(staging.c_str(), &s) != 0 || (s.st_mode & 07777) != 0755) code = 4;
            char c = 'm';
            (void)!::write(mounted[1], &c, 1);
            (void)!::read(checked[0], &c, 1);
            remove_staging(staging);
            if (fs::exists(staging)) code = 5;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s\n", e.what());
            code = 2;
        }
        ::_exit(code);
    }
    char c = 0;
    ASSERT_EQ(::read(mounted[0], &c, 1), 1);
    // While the child has its tmpfs there: here the folder is an empty folder on the disk.
    EXPECT_TRUE(fs::is_empty(staging));
    struct statfs st {};
    ASSERT_EQ(::statfs(staging.c_str(), &st), 0);
    EXPECT_NE(st.f_type, TMPFS_MAGIC);
    ASSERT_EQ(::write(checked[1], &c, 1), 1);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_FALSE(fs::exists(staging));  // unmounted, then the folder removed
    for (int fd : {mounted[0], mounted[1], checked[0], checked[1]}) ::close(fd);
}

TEST(Tree, MoveInKeepsMergedUsrLinksAndReplacesFiles) {
    Scratch dir;
    Tree t(dir / "staging" / "tree");
    t.add_directory("/usr/lib/modules", Meta{0, 0, 0755}, "t");
    t.add_symlink("/lib", "usr/lib", Meta{0, 0, 0777}, "t");
    t.add_file("/usr/lib/modules/6.1/extra.ko", "old", Meta{0, 0, 0644}, "t");
    Tree side(dir / "staging" / "kernel");
    side.add_directory("/lib/modules/6.1", Meta{0, 0, 0750}, "t");  // "/lib" made as a parent directory
    side.add_file("/lib/modules/6.1/extra.ko", "new", Meta{0, 0, 0600}, "t");
    side.add_file("/lib/modules/6.1/kernel/a.ko", "a", Meta{0, 0, 0644}, "t");
    side.add_hardlink("/lib/modules/6.1/kernel/b.ko", "/lib/modules/6.1/kernel/a.ko", "t");
    t.move_in(side, "t");
    struct stat st {};
    ASSERT_EQ(::lstat((dir / "staging/tree/lib").c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));  // merged /usr stays merged
    EXPECT_EQ(read_file(dir / "staging/tree/usr/lib/modules/6.1/extra.ko"), "new");
    EXPECT_EQ(t.meta("/usr/lib/modules/6.1/extra.ko")->mode, S_IFREG | 0600u);
    EXPECT_EQ(t.meta("/usr/lib/modules/6.1")->mode, S_IFDIR | 0750u);
    EXPECT_FALSE(t.meta("/lib/modules/6.1/kernel/a.ko"));
    EXPECT_EQ(read_file(dir / "staging/tree/usr/lib/modules/6.1/kernel/a.ko"), "a");
    struct stat a {}, b {};
    ASSERT_EQ(::stat((dir / "staging/tree/usr/lib/modules/6.1/kernel/a.ko").c_str(), &a), 0);
    ASSERT_EQ(::stat((dir / "staging/tree/usr/lib/modules/6.1/kernel/b.ko").c_str(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);  // still one file
    EXPECT_FALSE(fs::exists(dir / "staging/kernel/lib/modules/6.1/kernel/a.ko"));  // moved, not copied
}
