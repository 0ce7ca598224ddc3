// imager/disk_formats: --format lists, and disk.raw converted with qemu-img into qcow2, vhdx and
// vmdk, each checked by qemu-img itself (check, info, and a conversion back to raw).
#include "imager/disk_formats.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/units.hpp"
#include "common/uuid.hpp"
#include "partitions/gpt.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t disk_size = 12 * MiB;

// A sparse 12 MiB disk with a GPT and two partitions holding data (a hole between them): what
// disk.raw is, small.
fs::path make_disk(const fs::path& path) {
    {
        UniqueFd fd = open_file(path, O_RDWR | O_CREAT | O_TRUNC);
        if (::ftruncate(fd.get(), static_cast<off_t>(disk_size)) != 0) fail_errno(path.string());
    }
    partitions::GptTable t;
    t.disk_guid = Uuid::derive("disk-formats-test", "disk");
    t.disk_size = disk_size;
    const Uuid linux_type = Uuid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4", "type");
    t.entries.push_back({"one", linux_type, Uuid::derive("disk-formats-test", "one"), 1 * MiB, 4 * MiB, 0});
    t.entries.push_back({"two", linux_type, Uuid::derive("disk-formats-test", "two"), 5 * MiB, 6 * MiB, 0});
    partitions::write_gpt(path, t);
    Scratch data;
    test::write_random(data / "a", 3 * MiB, 1);  // random: compression cannot hide a block
    test::write_random(data / "b", 1 * MiB, 2);
    UniqueFd fd = open_file(path, O_RDWR);
    const std::string a = read_file(data / "a"), b = read_file(data / "b");
    pwrite_exact(fd.get(), a.data(), a.size(), 1 * MiB, path.string());
    pwrite_exact(fd.get(), b.data(), b.size(), 9 * MiB, path.string());
    return path;
}

bool have_qemu_img() { return find_program("qemu-img").has_value(); }

}  // namespace

TEST(DiskFormats, ParsesAListRawAlwaysIncludedDuplicatesOnce) {
    using F = DiskFormat;
    EXPECT_EQ(parse_disk_formats("raw", "--format"), (std::vector<F>{F::Raw}));
    EXPECT_EQ(parse_disk_formats("qcow2", "--format"), (std::vector<F>{F::Raw, F::Qcow2}));
    EXPECT_EQ(parse_disk_formats("vmdk,VHDX, qcow2,raw", "--format"), (std::vector<F>{F::Raw, F::Qcow2, F::Vhdx, F::Vmdk}));
    EXPECT_EQ(parse_disk_formats("qcow2,qcow2", "--format"), (std::vector<F>{F::Raw, F::Qcow2}));
    EXPECT_FALSE(needs_qemu_img({F::Raw}));
    EXPECT_TRUE(needs_qemu_img({F::Raw, F::Vmdk}));
}

TEST(DiskFormats, RejectsUnknownAndEmptyNamesNamingTheValidOnes) {
    test::expect_error([] { parse_disk_formats("raw,vdi", "--format"); }, {"--format", "'vdi'", "not a disk format", "raw, qcow2, vhdx, vmdk"});
    test::expect_error([] { parse_disk_formats("qcow", "--format"); }, {"'qcow'", "raw, qcow2, vhdx, vmdk"});
    test::expect_error([] { parse_disk_formats("raw,,qcow2", "--format"); }, {"--format", "empty format name", "'raw,,qcow2'"});
    test::expect_error([] { parse_disk_formats("", "--format"); }, {"--format", "empty format name"});
}

TEST(DiskFormats, OnlyRawConvertsNothing) {
    Scratch dir;
    fs::path raw = make_disk(dir / "disk.raw");
    EXPECT_EQ(write_disk_formats(raw, {DiskFormat::Raw}, dir.path()), json::array());
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// Each format: qemu-img check passes, qemu-img info sees the format and the raw disk's virtual
// size, and converting it back gives the raw disk's bytes; the manifest entries describe the files.
TEST(DiskFormats, EachFormatChecksAndConvertsBackToTheSameBytes) {
    if (!have_qemu_img()) GTEST_SKIP() << "qemu-img (package qemu-utils) is not installed";
    Scratch dir;
    fs::path raw = make_disk(dir / "disk.raw");
    const std::string raw_sha = sha256_file_hex(raw);
    std::vector<std::string> notes;
    json entries = write_disk_formats(raw, parse_disk_formats("qcow2,vhdx,vmdk", "test"), dir.path(),
                                      [&](const std::string& line) { notes.push_back(line); });
    ASSERT_EQ(entries.size(), 3u) << entries.dump(2);
    EXPECT_EQ(notes.size(), 3u);
    const std::vector<std::pair<std::string, std::string>> expected = {{"qcow2", ""}, {"vhdx", "dynamic"}, {"vmdk", "streamOptimized"}};
    for (size_t i = 0; i < expected.size(); ++i) {
        const auto& [format, sub] = expected[i];
        const json& e = entries[i];
        SCOPED_TRACE(format);
        const fs::path file = dir / ("disk." + format);
        EXPECT_EQ(e["file"], "disk." + format);
        EXPECT_EQ(e["format"], format);
        if (!sub.empty()) {
            EXPECT_EQ(e["subformat"], sub);
        }
        EXPECT_EQ(e["size"], fs::file_size(file));
        EXPECT_EQ(e["virtual_size"], disk_size);
        EXPECT_EQ(e["sha256"], sha256_file_hex(file));

        RunResult check = run({"qemu-img", "check", "-f", format, file.string()});
        EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
        json info = json::parse(run_checked({"qemu-img", "info", "--output=json", file.string()}));  // probed, not told
        EXPECT_EQ(info["format"], format);
        EXPECT_EQ(info["virtual-size"], disk_size);
        if (format == "vmdk") {
            EXPECT_EQ(info["format-specific"]["data"]["create-type"], "streamOptimized");
            EXPECT_EQ(info["format-specific"]["data"]["extents"][0]["compressed"], true);
        }
        if (format == "qcow2") {
            EXPECT_LT(fs::file_size(file), 6 * MiB) << "the hole was written out";
        }

        const fs::path back = dir / (format + ".back.raw");
        run_checked({"qemu-img", "convert", "-f", format, "-O", "raw", file.string(), back.string()});
        EXPECT_EQ(fs::file_size(back), disk_size);
        EXPECT_EQ(sha256_file_hex(back), raw_sha) << "disk." << format << " converted back differs from disk.raw";
    }
}

// qemu-img writes random identities into VHDX and VMDK; two conversions of the same disk.raw are
// bit-identical all the same, and a different disk gets different identities.
TEST(DiskFormats, TwoConversionsOfTheSameDiskAreBitIdentical) {
    if (!have_qemu_img()) GTEST_SKIP() << "qemu-img (package qemu-utils) is not installed";
    Scratch one, two;
    fs::path raw1 = make_disk(one / "disk.raw"), raw2 = make_disk(two / "disk.raw");
    const auto formats = parse_disk_formats("qcow2,vhdx,vmdk", "test");
    json a = write_disk_formats(raw1, formats, one.path());
    ::sleep(1);  // a timestamp, were one written, would differ
    json b = write_disk_formats(raw2, formats, two.path());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["sha256"], b[i]["sha256"]) << a[i]["file"] << " differs between two conversions";

    // Another disk (one byte changed): other VHDX GUIDs and another VMDK CID.
    {
        UniqueFd fd = open_file(raw2, O_RDWR);
        pwrite_exact(fd.get(), "x", 1, 2 * MiB, raw2.string());
    }
    write_disk_formats(raw2, formats, two.path());
    json i1 = json::parse(run_checked({"qemu-img", "info", "--output=json", (one / "disk.vmdk").string()}));
    json i2 = json::parse(run_checked({"qemu-img", "info", "--output=json", (two / "disk.vmdk").string()}));
    EXPECT_NE(i1["format-specific"]["data"]["cid"], i2["format-specific"]["data"]["cid"]);
    auto header_guids = [](const fs::path& vhdx) {
        UniqueFd fd = open_file(vhdx, O_RDONLY);
        std::string g(32, '\0');
        pread_exact(fd.get(), g.data(), g.size(), 64 * KiB + 16, vhdx.string());
        return g;
    };
    EXPECT_NE(header_guids(one / "disk.vhdx"), header_guids(two / "disk.vhdx"));
    EXPECT_NE(header_guids(one / "disk.vhdx"), std::string(32, '\0'));
}

// A failed conversion (the raw disk is not there) leaves no file behind and names the file.
TEST(DiskFormats, AFailedConversionLeavesNothing) {
    if (!have_qemu_img()) GTEST_SKIP() << "qemu-img (package qemu-utils) is not installed";
    Scratch dir;
    fs::path raw = make_disk(dir / "disk.raw");
    fs::create_directory(dir / "disk.vmdk");  // in the way: the vmdk cannot be written
    test::expect_error([&] { write_disk_formats(raw, parse_disk_formats("qcow2,vmdk", "test"), dir.path()); }, {"disk.vmdk", "qemu-img convert"});
    EXPECT_FALSE(fs::exists(dir / "disk.qcow2")) << "the qcow2 finished before the failure was left behind";
}
