#include "imager/cpio.hpp"

#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/archive.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

constexpr int64_t epoch = 1700000000;

struct ReadEntry {
    std::string path;
    uint32_t mode = 0, uid = 0, gid = 0;
    int64_t mtime = 0, ino = 0;
    unsigned nlink = 0;
    std::string content, target;
};

struct ReadBack {
    int format = 0, filter = 0;
    std::vector<ReadEntry> entries;  // in archive order
    const ReadEntry* find(const std::string& path) const {
        for (const auto& e : entries)
            if (e.path == path) return &e;
        return nullptr;
    }
};

ReadBack read_back(const fs::path& file) {
    ReadBack result;
    // libarchive's own cpio reader (the imager's reader takes tar only, as recipes bring it).
    ArchiveReader a(archive_read_new());
    archive_read_support_format_cpio(a.get());
    archive_read_support_filter_all(a.get());
    if (archive_read_open_filename(a.get(), file.c_str(), 1 << 16) != ARCHIVE_OK) throw std::runtime_error(file.string() + ": " + archive_error(a.get()));
    archive_entry* entry = nullptr;
    int r;
    while ((r = archive_read_next_header(a.get(), &entry)) == ARCHIVE_OK) {
        ReadEntry e;
        e.path = archive_entry_pathname(entry);
        e.mode = archive_entry_mode(entry);
        e.uid = static_cast<uint32_t>(archive_entry_uid(entry));
        e.gid = static_cast<uint32_t>(archive_entry_gid(entry));
        e.mtime = archive_entry_mtime(entry);
        e.ino = archive_entry_ino64(entry);
        e.nlink = archive_entry_nlink(entry);
        if (archive_entry_symlink(entry)) e.target = archive_entry_symlink(entry);
        char buffer[4096];
        la_ssize_t n;
        while ((n = archive_read_data(a.get(), buffer, sizeof buffer)) > 0)
            e.content.append(buffer, static_cast<size_t>(n));
        EXPECT_GE(n, 0) << archive_error_string(a.get());
        result.entries.push_back(std::move(e));
        result.format = archive_format(a.get());
        result.filter = archive_filter_code(a.get(), 0);
    }
    EXPECT_EQ(r, ARCHIVE_EOF) << archive_error_string(a.get());
    return result;
}

// A module file on the host, a program given by content, a symlink, an explicit directory, an owned file.
std::vector<CpioEntry> sample_entries(const Scratch& dir) {
    fs::create_directories(dir / "host");
    test::write_random(dir / "host/x.ko", 100000, 7);
    std::vector<CpioEntry> entries;
    entries.push_back({.path = "lib/modules/6.1.0/kernel/x.ko", .mode = S_IFREG | 0644, .source = dir / "host/x.ko"});
    entries.push_back({.path = "init", .mode = S_IFREG | 0755, .content = "#!/bin/sh\necho hi\n"});
    entries.push_back({.path = "bin/sh", .mode = S_IFLNK | 0777, .target = "busybox"});
    entries.push_back({.path = "etc/secret", .mode = S_IFDIR | 0700});
    entries.push_back({.path = "etc/secret/owned", .mode = S_IFREG | 04750, .uid = 1000, .gid = 50, .content = "x"});
    entries.push_back({.path = "empty", .mode = S_IFREG | 0600});
    return entries;
}

std::string decompress(const fs::path& file, const std::string& compression) {
    if (compression == "gzip") return run_checked({"gzip", "-dc", file.string()});
    if (compression == "zstd") return run_checked({"zstd", "-dcq", file.string()});
    return read_file(file);
}

uint32_t hex_field(const std::string& data, size_t at) {
    return static_cast<uint32_t>(std::stoul(data.substr(at, 8), nullptr, 16));
}

size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }

}  // namespace

class CpioCompression : public ::testing::TestWithParam<std::string> {};

TEST_P(CpioCompression, RoundTripsPathsModesOwnersLinksAndContent) {
    Scratch dir;
    auto out = dir / "initrd.img";
    write_initrd(out, sample_entries(dir), GetParam(), epoch);
    ReadBack back = read_back(out);
    EXPECT_EQ(back.format, ARCHIVE_FORMAT_CPIO_SVR4_NOCRC);
    int filter = GetParam() == "gzip"   ? ARCHIVE_FILTER_GZIP
                 : GetParam() == "zstd" ? ARCHIVE_FILTER_ZSTD
                                        : ARCHIVE_FILTER_NONE;
    EXPECT_EQ(back.filter, filter);

    std::vector<std::string> paths;
    for (const auto& e : back.entries) paths.push_back(e.path);
    std::vector<std::string> expected = {"bin",
                                         "bin/sh",
                                         "empty",
                                         "etc",
                                         "etc/secret",
                                         "etc/secret/owned",
                                         "init",
                                         "lib",
                                         "lib/modules",
                                         "lib/modules/6.1.0",
                                         "lib/modules/6.1.0/kernel",
                                         "lib/modules/6.1.0/kernel/x.ko"};
    EXPECT_EQ(paths, expected);

    for (size_t i = 0; i < back.entries.size(); ++i) {
        const auto& e = back.entries[i];
        EXPECT_EQ(e.mtime, epoch) << e.path;
        EXPECT_EQ(e.ino, static_cast<int64_t>(i + 1)) << e.path;
        EXPECT_EQ(e.nlink, S_ISDIR(e.mode) ? 2u : 1u) << e.path;
    }
    // Parents added as root-owned 0755 directories; explicit ones as given.
    ASSERT_TRUE(back.find("lib/modules"));
    EXPECT_EQ(back.find("lib/modules")->mode, S_IFDIR | 0755u);
    EXPECT_EQ(back.find("lib/modules")->uid, 0u);
    EXPECT_EQ(back.find("etc/secret")->mode, S_IFDIR | 0700u);

    const auto* init = back.find("init");
    EXPECT_EQ(init->mode, S_IFREG | 0755u);
    EXPECT_EQ(init->content, "#!/bin/sh\necho hi\n");
    EXPECT_EQ(back.find("lib/modules/6.1.0/kernel/x.ko")->content, read_file(dir / "host/x.ko"));
    EXPECT_EQ(back.find("bin/sh")->mode, S_IFLNK | 0777u);
    EXPECT_EQ(back.find("bin/sh")->target, "busybox");
    const auto* owned = back.find("etc/secret/owned");
    EXPECT_EQ(owned->mode, S_IFREG | 04750u);
    EXPECT_EQ(owned->uid, 1000u);
    EXPECT_EQ(owned->gid, 50u);
    EXPECT_EQ(back.find("empty")->content, "");
}

// The format the kernel's initramfs unpacker (init/initramfs.c) reads: 110-byte "070701" headers in ASCII hex,
// name (with its NUL) and data each padded to 4 bytes, ending with TRAILER!!!.
TEST_P(CpioCompression, IsTheKernelsNewcFormat) {
    Scratch dir;
    auto out = dir / "initrd.img";
    write_initrd(out, sample_entries(dir), GetParam(), epoch);
    std::string data = decompress(out, GetParam());
    ASSERT_EQ(data.compare(0, 6, "070701"), 0);
    size_t at = 0;
    std::vector<std::string> names;
    std::set<uint32_t> inodes;
    for (;;) {
        ASSERT_LE(at + 110, data.size());
        ASSERT_EQ(at % 4, 0u);
        ASSERT_EQ(data.compare(at, 6, "070701"), 0) << "at " << at;
        uint32_t ino = hex_field(data, at + 6), mode = hex_field(data, at + 14), mtime = hex_field(data, at + 46);
        uint32_t filesize = hex_field(data, at + 54), namesize = hex_field(data, at + 94),
                 check = hex_field(data, at + 102);
        EXPECT_EQ(check, 0u);
        ASSERT_LE(at + 110 + namesize, data.size());
        std::string name = data.substr(at + 110, namesize);
        ASSERT_FALSE(name.empty());
        ASSERT_EQ(name.back(), '\0');
        name.pop_back();
        at = align4(at + 110 + namesize);
        at = align4(at + filesize);
        if (name == "TRAILER!!!") break;
        EXPECT_EQ(mtime, static_cast<uint32_t>(epoch)) << name;
        EXPECT_TRUE(inodes.insert(ino).second) << name << " reuses inode " << ino;
        if (S_ISLNK(mode)) {
            EXPECT_EQ(filesize, 7u) << name;  // "busybox"
        }
        names.push_back(name);
    }
    EXPECT_EQ(names.size(), 12u);
    EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
    EXPECT_EQ(at, data.size()) << "bytes after the trailer";
}

TEST_P(CpioCompression, SameInputsGiveTheSameBytes) {
    Scratch dir;
    auto entries = sample_entries(dir);
    write_initrd(dir / "one.img", entries, GetParam(), epoch);
    ::sleep(1);  // a stamped wall-clock time would differ
    std::reverse(entries.begin(), entries.end());
    ::utimensat(AT_FDCWD, (dir / "host/x.ko").c_str(), nullptr, 0);  // source mtime must not matter
    write_initrd(dir / "two.img", entries, GetParam(), epoch);
    EXPECT_EQ(read_file(dir / "one.img"), read_file(dir / "two.img"));
    write_initrd(dir / "three.img", entries, GetParam(), epoch + 1);
    EXPECT_NE(read_file(dir / "one.img"), read_file(dir / "three.img"));
}

INSTANTIATE_TEST_SUITE_P(Compressions, CpioCompression, ::testing::Values("gzip", "zstd", "none"),
                         [](const auto& p) { return p.param; });

TEST(Cpio, GzipHasNoTimestampOrNameAndPassesGzipT) {
    Scratch dir;
    auto out = dir / "initrd.img";
    write_initrd(out, sample_entries(dir), "gzip", epoch);
    EXPECT_EQ(run({"gzip", "-t", out.string()}).exit_code, 0);
    std::string data = read_file(out);
    ASSERT_GT(data.size(), 10u);
    EXPECT_EQ(static_cast<uint8_t>(data[0]), 0x1f);
    EXPECT_EQ(static_cast<uint8_t>(data[1]), 0x8b);
    EXPECT_EQ(data[3] & 0x08, 0) << "FNAME flag set";
    EXPECT_EQ(data.substr(4, 4), std::string(4, '\0')) << "MTIME set";
}

TEST(Cpio, EmptyListGivesAValidArchive) {
    Scratch dir;
    write_initrd(dir / "empty.img", {}, "none", epoch);
    std::string data = read_file(dir / "empty.img");
    EXPECT_EQ(data.compare(0, 6, "070701"), 0);
    EXPECT_NE(data.find("TRAILER!!!"), std::string::npos);
    EXPECT_TRUE(read_back(dir / "empty.img").entries.empty());
}

namespace {

// Runs write_initrd expecting an Error that contains each of `parts`, and no output file left behind.
void expect_failure(const Scratch& dir, std::vector<CpioEntry> entries, const std::string& compression,
                    const std::vector<std::string>& parts, int64_t when = epoch) {
    auto out = dir / "bad.img";
    try {
        write_initrd(out, std::move(entries), compression, when);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        std::string message = e.what();
        EXPECT_NE(message.find(out.string()), std::string::npos) << message;
        for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
    }
    EXPECT_FALSE(fs::exists(out));
    for (const auto& f : fs::directory_iterator(dir.path()))
        EXPECT_EQ(f.path().filename().string().find("bad.img"), std::string::npos) << f.path();
}

}  // namespace

TEST(Cpio, ErrorsNameTheFileAndLeaveNoOutput) {
    Scratch dir;
    expect_failure(dir, {{.path = "init", .mode = S_IFREG | 0755, .source = dir / "missing"}}, "gzip",
                   {"'init'", (dir / "missing").string()});
    expect_failure(dir, {{.path = "a", .mode = S_IFREG | 0644}, {.path = "a", .mode = S_IFREG | 0644}}, "gzip",
                   {"'a'", "twice"});
    expect_failure(dir, {{.path = "/init", .mode = S_IFREG | 0755}}, "gzip", {"'/init'"});
    expect_failure(dir, {{.path = "a/../b", .mode = S_IFREG | 0755}}, "gzip", {"'a/../b'"});
    expect_failure(dir, {{.path = "a", .mode = S_IFREG | 0644}, {.path = "a/b", .mode = S_IFREG | 0644}}, "gzip",
                   {"'a/b'", "not a directory"});
    expect_failure(dir, {{.path = "l", .mode = S_IFLNK | 0777}}, "gzip", {"'l'", "target"});
    expect_failure(dir, {{.path = "dev/console", .mode = S_IFCHR | 0600}}, "gzip", {"'dev/console'"});
    expect_failure(dir, {{.path = "init", .mode = 0755}}, "gzip", {"'init'", "no file type"});
    expect_failure(dir, {}, "lz4", {"'lz4'"});
    expect_failure(dir, {}, "gzip", {"timestamp"}, -1);
}

TEST(Cpio, MissingOutputDirectoryIsAnError) {
    Scratch dir;
    EXPECT_THROW(write_initrd(dir / "no/such/dir/initrd.img", {}, "gzip", epoch), Error);
}
