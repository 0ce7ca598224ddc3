#include "imager/archive.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

namespace {

// A tar made by GNU tar with owners, modes, a symlink and a hard link.
std::filesystem::path make_tar(const Scratch& dir, const std::string& compress_flag) {
    test::write_text(dir / "src/etc/app.conf", "setting=1\n");
    test::write_text(dir / "src/usr/bin/tool", "#!/bin/sh\n");
    ::chmod((dir / "src/usr/bin/tool").c_str(), 04755);
    std::filesystem::create_symlink("tool", dir / "src/usr/bin/tool-link");
    std::filesystem::create_hard_link(dir / "src/etc/app.conf", dir / "src/etc/app.conf.hard");
    auto tar = dir / ("x.tar" + compress_flag);
    std::vector<std::string> argv = {"tar", "--owner=1000", "--group=50", "--numeric-owner", "-C", (dir / "src").string(), "-cf", tar.string()};
    if (compress_flag == ".gz") argv.push_back("--gzip");
    if (compress_flag == ".xz") argv.push_back("--xz");
    argv.push_back(".");
    run_checked(argv);
    return tar;
}

}  // namespace

class ArchiveCompression : public ::testing::TestWithParam<std::string> {};

TEST_P(ArchiveCompression, ExtractsWithOwnersModesLinks) {
    Scratch dir;
    auto tar = make_tar(dir, GetParam());
    Tree t(dir / "root");
    ArchiveReader a = open_archive_file(tar);
    ExtractOptions o;
    o.dest = "/opt/app";
    EXPECT_GT(extract_into(a.get(), t, o, tar.string()), 5u);
    EXPECT_EQ(read_file(dir / "root/opt/app/etc/app.conf"), "setting=1\n");
    auto m = t.meta("/opt/app/usr/bin/tool");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->uid, 1000u);
    EXPECT_EQ(m->gid, 50u);
    EXPECT_EQ(m->mode, S_IFREG | 04755);
    EXPECT_EQ(std::filesystem::read_symlink(dir / "root/opt/app/usr/bin/tool-link"), "tool");
    struct stat a1 {}, a2 {};
    ::stat((dir / "root/opt/app/etc/app.conf").c_str(), &a1);
    ::stat((dir / "root/opt/app/etc/app.conf.hard").c_str(), &a2);
    EXPECT_EQ(a1.st_ino, a2.st_ino);
}

INSTANTIATE_TEST_SUITE_P(Formats, ArchiveCompression, ::testing::Values("", ".gz", ".xz"),
                         [](const auto& p) { return p.param.empty() ? std::string("plain") : p.param.substr(1); });

TEST(Archive, RejectsEntriesThatClimbOut) {
    Scratch dir;
    test::write_text(dir / "src/a", "x");
    auto tar = dir / "evil.tar";
    // GNU tar keeps a leading ../ when told to with -P.
    run_checked({"tar", "-P", "-cf", tar.string(), "--transform", "s,^.*/src/a,../../evil,", (dir / "src/a").string()});
    Tree t(dir / "root");
    ArchiveReader a = open_archive_file(tar);
    try {
        extract_into(a.get(), t, {}, tar.string());
        FAIL() << "accepted an entry with ..";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("climbs out"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(dir / "evil"));
}

TEST(Archive, NotAnArchiveIsAClearError) {
    Scratch dir;
    test::write_text(dir / "junk.tar", std::string(1000, 'z'));
    try {
        ArchiveReader a = open_archive_file(dir / "junk.tar");
        Tree t(dir / "root");
        extract_into(a.get(), t, {}, (dir / "junk.tar").string());
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("junk.tar"), std::string::npos) << e.what();
    }
}

namespace {

// Extracting `archive` fails with an Error that names it; returns the message.
std::string extract_error(const Scratch& dir, const std::filesystem::path& archive) {
    try {
        ArchiveReader a = open_archive_file(archive);
        Tree t(dir / "root");
        extract_into(a.get(), t, {}, archive.string());
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

// Found by fuzzing: libarchive gives NULL for an empty link name and for a failure without a
// message; both reached std::string (std::logic_error, SEGV). Both are now Errors naming the archive.
TEST(Archive, SymlinkWithoutTargetAndTruncatedStreamAreErrors) {
    Scratch dir;
    const std::string empty_link = read_file(std::string(CAIRN_SOURCE_DIR) + "/fuzz/regressions/archive/symlink-without-target.tar");
    ArchiveReader a = new_archive_reader();
    ASSERT_EQ(archive_read_open_memory(a.get(), empty_link.data(), empty_link.size()), ARCHIVE_OK);
    Tree t(dir / "root");
    test::expect_error([&] { extract_into(a.get(), t, {}, "x.tar"); }, {"x.tar: link", "symbolic link without a target"});

    // A truncated gzip stream (of a cpio archive, which is not read at all any more).
    const auto truncated = std::filesystem::path(CAIRN_SOURCE_DIR) / "fuzz/regressions/archive/null-error-string.tar.gz";
    std::string message = extract_error(dir, truncated);
    EXPECT_NE(message.find("null-error-string.tar.gz"), std::string::npos) << message;
}


// Recipes bring tar archives (any tar dialect, compressed or not) and .debs hold one; no other
// format is read. An mtree "archive" names files on the build host (`contents=`), which libarchive
// would read into the image, and a crafted cpio header made libarchive allocate 2.9 GB before
// failing (fuzz/regressions/archive/cpio-name-size-2.9GB.gz, found with seed 1).
TEST(Archive, OnlyTarIsReadNotCpioOrMtree) {
    Scratch dir;
    const auto cpio = std::filesystem::path(CAIRN_SOURCE_DIR) / "fuzz/corpus/archive/tree.cpio";  // a good one
    std::string message = extract_error(dir, cpio);
    EXPECT_NE(message.find("tree.cpio"), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::exists(dir / "root"));

    test::write_text(dir / "secret", "host secret\n");
    test::write_text(dir / "x.mtree", "#mtree\n./stolen type=file mode=0644 contents=" + (dir / "secret").string() + "\n");
    message = extract_error(dir, dir / "x.mtree");
    EXPECT_NE(message.find("x.mtree"), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::exists(dir / "root/stolen"));

    const auto crafted = std::filesystem::path(CAIRN_SOURCE_DIR) / "fuzz/regressions/archive/cpio-name-size-2.9GB.gz";
    message = extract_error(dir, crafted);
    EXPECT_NE(message.find("cpio-name-size"), std::string::npos) << message;
}

TEST(Archive, ZstdAndBzip2CompressedTarsAreRead) {
    for (const std::string flag : {"--zstd", "--bzip2"}) {
        Scratch dir;
        test::write_text(dir / "src/etc/app.conf", "setting=1\n");
        run_checked({"tar", "-C", (dir / "src").string(), flag, "-cf", (dir / "x.tar.c").string(), "."});
        ArchiveReader a = open_archive_file(dir / "x.tar.c");
        Tree t(dir / "root");
        EXPECT_GT(extract_into(a.get(), t, {}, "x.tar.c"), 1u) << flag;
        EXPECT_EQ(read_file(dir / "root/etc/app.conf"), "setting=1\n") << flag;
    }
}

// Merged /usr: a package's ./bin/ must not replace the link /bin -> usr/bin (GNU tar's
// --keep-directory-symlink); without the option the link gives way to a directory, as before.
TEST(Archive, KeepsDirectorySymlinksWhenAsked) {
    Scratch dir;
    test::write_text(dir / "src/bin/tool", "#!/bin/sh\n");
    auto tar = dir / "pkg.tar";
    run_checked({"tar", "--numeric-owner", "-C", (dir / "src").string(), "-cf", tar.string(), "./bin/", "./bin/tool"});
    for (bool keep : {true, false}) {
        Scratch out;
        Tree t(out / "root");
        t.add_directory("/usr/bin", Meta{0, 0, 0755}, "t");
        t.add_symlink("/bin", "usr/bin", Meta{0, 0, 0777}, "t");
        ArchiveReader a = open_archive_file(tar);
        ExtractOptions o;
        o.keep_directory_symlinks = keep;
        extract_into(a.get(), t, o, tar.string());
        if (keep) {
            EXPECT_TRUE(fs::is_symlink(out / "root/bin"));
            EXPECT_TRUE(fs::is_regular_file(out / "root/usr/bin/tool"));
            EXPECT_TRUE(S_ISLNK(t.meta("/bin")->mode));
        } else {
            EXPECT_FALSE(fs::is_symlink(out / "root/bin"));
            EXPECT_TRUE(fs::is_regular_file(out / "root/bin/tool"));
        }
    }
}
