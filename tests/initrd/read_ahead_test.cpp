#include "initrd/read_ahead.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/file.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::initrd;
using cairn::test::Scratch;
using cairn::test::write_random;
using cairn::test::write_text;
namespace fs = std::filesystem;

namespace {

dev_t device_of(const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_dev;
}

}  // namespace

TEST(ReadAhead, ReadsTheRegularFilesTheListNamesToTheirEnd) {
    Scratch s;
    fs::create_directories(s / "usr/lib");
    write_random(s / "usr/lib/libbig.so", 700 * 1024, 1);
    write_text(s / "usr/lib/systemd/system/a.service", "[Service]\nExecStart=/bin/true\n");
    write_text(s / "list", (s / "usr/lib/libbig.so").string() + "\n" + (s / "usr/lib/systemd/system/a.service").string() + "\n\n");
    const ReadAheadResult r = read_ahead((s / "list").string(), device_of(s.path()));
    EXPECT_EQ(r.files, 2u);
    EXPECT_EQ(r.skipped, 0u);
    EXPECT_EQ(r.bytes, 700u * 1024 + fs::file_size(s / "usr/lib/systemd/system/a.service"));
}

// What a list could name on a running system where /etc, /var and the overlays are not the
// verified root: none of it is opened for reading, and nothing blocks (a FIFO without a writer).
TEST(ReadAhead, SkipsWhatIsNotARegularFileOfTheRootWithoutBlocking) {
    Scratch s;
    write_text(s / "good", "content\n");
    ASSERT_EQ(::mkfifo((s / "fifo").c_str(), 0600), 0);
    fs::create_directory(s / "dir");
    fs::create_symlink(s / "good", s / "link");
    const std::string lines = (s / "fifo").string() + "\n" + (s / "dir").string() + "\n" + (s / "link").string() + "\n" + "relative/path\n" +
                              (s / "missing").string() + "\n" + "/proc/self/status\n" + "/dev/zero\n" + (s / "good").string() + "\n";
    write_text(s / "list", lines);
    const ReadAheadResult r = read_ahead((s / "list").string(), device_of(s.path()));
    EXPECT_EQ(r.files, 1u);
    EXPECT_EQ(r.skipped, 7u);
    EXPECT_EQ(r.bytes, 8u);
}

TEST(ReadAhead, ReadsNothingFromAListThatIsNotARegularFileOfTheRoot) {
    Scratch s;
    write_text(s / "good", "content\n");
    write_text(s / "list", (s / "good").string() + "\n");
    fs::create_symlink(s / "list", s / "list-link");
    EXPECT_EQ(read_ahead((s / "list-link").string(), device_of(s.path())).files, 0u);
    EXPECT_EQ(read_ahead((s / "missing").string(), device_of(s.path())).files, 0u);
    // The right list, but the files are judged against another filesystem's device.
    const ReadAheadResult elsewhere = read_ahead((s / "list").string(), device_of("/proc/self"));
    EXPECT_EQ(elsewhere.files, 0u);
    EXPECT_EQ(elsewhere.bytes, 0u);
}

TEST(ReadAhead, StopsAtItsLimits) {
    Scratch s;
    std::string lines;
    for (int i = 0; i < 5; ++i) {
        write_random(s / ("f" + std::to_string(i)), 100 * 1024, uint32_t(i));
        lines += (s / ("f" + std::to_string(i))).string() + "\n";
    }
    write_text(s / "list", lines);
    ReadAheadLimits files;
    files.max_files = 2;
    EXPECT_EQ(read_ahead((s / "list").string(), device_of(s.path()), files).files, 2u);

    ReadAheadLimits bytes;
    bytes.max_bytes = 250 * 1024;  // two files and half of a third
    const ReadAheadResult r = read_ahead((s / "list").string(), device_of(s.path()), bytes);
    EXPECT_EQ(r.bytes, 250u * 1024);
    EXPECT_EQ(r.files, 3u);

    ReadAheadLimits list;
    list.max_list_bytes = 10;  // the list is longer: not read at all
    EXPECT_EQ(read_ahead((s / "list").string(), device_of(s.path()), list).files, 0u);
}

// cairn-init starts it as soon as the verified root is mounted, on /sysroot: the list's paths are
// the root's own, so the child enters the root before it reads.
TEST(ReadAhead, StartsInsideTheRootItIsGivenAndReportsWhenDone) {
    if (!cairn::test::is_root()) GTEST_SKIP() << "chroot needs root";
    Scratch s;
    const fs::path root = s / "root";
    fs::create_directories(root / "cairn-read-ahead-test");
    write_random(root / "cairn-read-ahead-test/lib.so", 64 * 1024, 7);
    write_text(root / "usr/lib/cairn/boot-read-ahead", "/cairn-read-ahead-test/lib.so\n/cairn-read-ahead-test/missing\n");
    write_text(s / "report", "");
    const pid_t child = start_read_ahead(root.string(), (s / "report").c_str());
    ASSERT_GT(child, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    const std::string report = cairn::read_file(s / "report");
    EXPECT_NE(report.find("cairn-readahead: 1 files, 0.1 MiB read ahead in "), std::string::npos) << report;
    EXPECT_NE(report.find("(1 skipped)"), std::string::npos) << report;

    // No list in the root: no child.
    fs::create_directories(s / "bare");
    EXPECT_EQ(start_read_ahead((s / "bare").string(), (s / "report").c_str()), 0);
}
