#include "imager/esp.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t mib = 1024 * 1024;
constexpr int64_t epoch = 1700000000;  // 2023-11-14 22:13:20 UTC
const RunOptions mtools_env{.extra_env = {"MTOOLS_SKIP_CHECK=1", "TZ=UTC0"}};

std::vector<std::pair<std::string, fs::path>> sample_files(const Scratch& dir) {
    fs::create_directories(dir / "src");
    test::write_random(dir / "src/uki.efi", 3 * mib + 123, 1);
    test::write_text(dir / "src/loader.conf", "timeout 0\n");
    test::write_text(dir / "src/readme", "A longer file name with lower case\n");
    return {{"EFI/BOOT/BOOTX64.EFI", dir / "src/uki.efi"},
            {"EFI/Linux/cairn-slot-a.efi", dir / "src/uki.efi"},
            {"loader/loader.conf", dir / "src/loader.conf"},
            {"Read Me.txt", dir / "src/readme"}};
}

std::string mtype(const fs::path& image, const std::string& path) {
    return run_checked({"mtype", "-i", image.string(), "::/" + path}, mtools_env);
}

}  // namespace

TEST(Esp, HoldsTheFilesWithTheirContent) {
    Scratch dir;
    auto image = dir / "esp.img";
    make_esp(image, 16 * mib, "ESP_A", 0x1234abcd, sample_files(dir), epoch);
    EXPECT_EQ(fs::file_size(image), 16 * mib);
    EXPECT_EQ(mtype(image, "EFI/BOOT/BOOTX64.EFI"), read_file(dir / "src/uki.efi"));
    EXPECT_EQ(mtype(image, "EFI/Linux/cairn-slot-a.efi"), read_file(dir / "src/uki.efi"));
    EXPECT_EQ(mtype(image, "loader/loader.conf"), "timeout 0\n");
    EXPECT_EQ(mtype(image, "Read Me.txt"), read_file(dir / "src/readme"));

    std::string listing = run_checked({"mdir", "-/", "-i", image.string(), "::/"}, mtools_env);
    EXPECT_NE(listing.find("ESP_A"), std::string::npos) << listing;
    EXPECT_NE(listing.find("1234-ABCD"), std::string::npos) << listing;
    EXPECT_NE(listing.find("BOOTX64  EFI"), std::string::npos) << listing;
    EXPECT_NE(listing.find("cairn-slot-a.efi"), std::string::npos) << listing;
    EXPECT_NE(listing.find("Read Me.txt"), std::string::npos) << listing;
    // Every entry (files, directories, their . and ..) carries the epoch, in UTC.
    size_t dated = 0;
    for (size_t at = 0; (at = listing.find("2023-11-14  22:13", at)) != std::string::npos; ++at) ++dated;
    // root: EFI, loader, Read Me.txt; EFI: . .. BOOT Linux; EFI/BOOT, EFI/Linux, loader: . .. and one file each.
    EXPECT_EQ(dated, 16u) << listing;

    auto fsck = run({"fsck.vfat", "-n", image.string()});
    EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
}

TEST(Esp, SameInputsGiveTheSameBytes) {
    Scratch dir;
    auto files = sample_files(dir);
    make_esp(dir / "one.img", 16 * mib, "ESP_A", 0x1234abcd, files, epoch);
    ::sleep(2);  // FAT times have 2-second steps
    for (const auto& [dest, host] : files) ::utimensat(AT_FDCWD, host.c_str(), nullptr, 0);  // new source times
    std::reverse(files.begin(), files.end());
    make_esp(dir / "two.img", 16 * mib, "ESP_A", 0x1234abcd, files, epoch);
    EXPECT_EQ(read_file(dir / "one.img"), read_file(dir / "two.img"));

    make_esp(dir / "three.img", 16 * mib, "ESP_A", 0x1234abcd, files, epoch + 3600);
    EXPECT_NE(read_file(dir / "one.img"), read_file(dir / "three.img"));
    make_esp(dir / "four.img", 16 * mib, "ESP_B", 0x1234abcd, files, epoch);
    EXPECT_NE(read_file(dir / "one.img"), read_file(dir / "four.img"));
}

TEST(Esp, EpochBeforeFatTimesIsClamped) {
    Scratch dir;
    auto image = dir / "esp.img";
    make_esp(image, 2 * mib, "ESP", 1, {{"a/b.txt", (test::write_text(dir / "b", "b"), dir / "b")}}, 0);
    std::string listing = run_checked({"mdir", "-/", "-i", image.string(), "::/"}, mtools_env);
    EXPECT_NE(listing.find("1980-01-01"), std::string::npos) << listing;
    EXPECT_EQ(listing.find("2098"), std::string::npos) << listing;  // what mtools makes of SOURCE_DATE_EPOCH=0
}

TEST(Esp, EmptyFileListGivesAnEmptyFilesystem) {
    Scratch dir;
    make_esp(dir / "esp.img", 2 * mib, "EMPTY", 7, {}, epoch);
    EXPECT_EQ(run({"fsck.vfat", "-n", (dir / "esp.img").string()}).exit_code, 0);
}

namespace {

void expect_failure(const Scratch& dir, uint64_t size, const std::vector<std::pair<std::string, fs::path>>& files,
                    const std::vector<std::string>& parts) {
    auto image = dir / "bad.img";
    try {
        make_esp(image, size, "ESP", 1, files, epoch);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        std::string message = e.what();
        EXPECT_NE(message.find(image.string()), std::string::npos) << message;
        for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
    }
    EXPECT_FALSE(fs::exists(image));
    for (const auto& f : fs::directory_iterator(dir.path()))
        EXPECT_EQ(f.path().filename().string().find("bad.img"), std::string::npos) << f.path();
}

}  // namespace

TEST(Esp, AFileLargerThanTheFilesystemIsAClearError) {
    Scratch dir;
    test::write_random(dir / "big", 3 * mib, 2);
    expect_failure(dir, 2 * mib, {{"EFI/BOOT/BOOTX64.EFI", dir / "big"}},
                   {"EFI/BOOT/BOOTX64.EFI", "does not fit", "3145728 bytes"});
}

TEST(Esp, FilesThatFitAloneButNotTogetherAreAClearError) {
    Scratch dir;
    // 2044 KiB: less than the image, more than its data area (2028 KiB), so mcopy reports "Disk full".
    test::write_random(dir / "one", 1024 * 1024, 3);
    test::write_random(dir / "two", 1020 * 1024, 4);
    expect_failure(dir, 2 * mib, {{"one", dir / "one"}, {"two", dir / "two"}}, {"two", "does not fit"});
}

TEST(Esp, BadInputsAreClearErrors) {
    Scratch dir;
    test::write_text(dir / "f", "x");
    expect_failure(dir, 2 * mib, {{"a", dir / "missing"}}, {(dir / "missing").string()});
    expect_failure(dir, 2 * mib, {{"EFI/a", dir / "f"}, {"efi/A", dir / "f"}}, {"efi/A", "twice"});
    expect_failure(dir, 2 * mib, {{"EFI", dir / "f"}, {"EFI/a", dir / "f"}}, {"'EFI'", "file and a directory"});
    expect_failure(dir, 2 * mib, {{"/EFI/a", dir / "f"}}, {"'/EFI/a'"});
    expect_failure(dir, 2 * mib, {{"EFI/../a", dir / "f"}}, {"'EFI/../a'"});
    expect_failure(dir, 2 * mib, {{"a:b", dir / "f"}}, {"'a:b'"});
    expect_failure(dir, 2 * mib + 1, {}, {"multiple of 1024"});
}
