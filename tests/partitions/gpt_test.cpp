#include "partitions/gpt.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/units.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::partitions;

namespace {

constexpr std::string_view esp_type = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
constexpr std::string_view root_type = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
constexpr std::string_view verity_type = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
constexpr std::string_view var_type = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
constexpr std::string_view linux_type = "0fc63daf-8483-4772-8e79-3d69d8477de4";

constexpr uint64_t bit_required = 1ull << 0;
constexpr uint64_t bit_grow = 1ull << 59;
constexpr uint64_t bit_read_only = 1ull << 60;

void make_sparse(const std::filesystem::path& path, uint64_t size) {
    UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0) << std::strerror(errno);
}

GptEntry entry(const std::string& label, std::string_view type, uint64_t offset, uint64_t size,
               uint64_t attributes = 0) {
    return GptEntry{label,     Uuid::parse(type, "type"), Uuid::derive("gpt-test", "partition:" + label), offset, size,
                    attributes};
}

// The DESIGN.md layout, placed one after the other on 1 MiB boundaries from 1 MiB, data to the end.
GptTable design_table(uint64_t disk_size) {
    GptTable t;
    t.disk_guid = Uuid::derive("gpt-test", "disk");
    t.disk_size = disk_size;
    uint64_t at = MiB;
    auto add = [&](const std::string& label, std::string_view type, uint64_t size, uint64_t attributes) {
        t.entries.push_back(entry(label, type, at, size, attributes));
        at += size;
    };
    for (std::string slot : {"a", "b"}) {
        add("esp_" + slot, esp_type, 32 * MiB, bit_required);
        add("root_" + slot, root_type, 256 * MiB, bit_read_only);
        add("root_" + slot + "_verity", verity_type, 16 * MiB, bit_read_only);
    }
    add("log", linux_type, 64 * MiB, 0);
    uint64_t end = (disk_size - 33 * 512) / MiB * MiB;
    add("data", var_type, end - at, bit_grow);
    return t;
}

std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

std::string read_range(const std::filesystem::path& path, uint64_t offset, size_t size) {
    UniqueFd fd = open_file(path, O_RDONLY);
    std::string data(size, '\0');
    pread_exact(fd.get(), data.data(), size, offset, path.string());
    return data;
}

void write_range(const std::filesystem::path& path, uint64_t offset, const std::string& data) {
    UniqueFd fd = open_file(path, O_WRONLY);
    pwrite_exact(fd.get(), data.data(), data.size(), offset, path.string());
}

uint64_t allocated_bytes(const std::filesystem::path& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_blocks) * 512;
}

// Runs f, expects cairn::Error, and returns its message.
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "no cairn::Error thrown";
    return {};
}

class Gpt : public ::testing::Test {
protected:
    test::Scratch scratch;
    std::filesystem::path image = scratch / "disk.img";
};

TEST_F(Gpt, ReadsBackWhatItWrote) {
    GptTable table = design_table(GiB);
    make_sparse(image, GiB);
    write_gpt(image, table);
    GptTable back = read_gpt(image);
    EXPECT_EQ(back.disk_guid, table.disk_guid);
    EXPECT_EQ(back.disk_size, table.disk_size);
    ASSERT_EQ(back.entries.size(), 8u);
    for (size_t i = 0; i < back.entries.size(); ++i) {
        SCOPED_TRACE(table.entries[i].label);
        EXPECT_EQ(back.entries[i].label, table.entries[i].label);
        EXPECT_EQ(back.entries[i].type, table.entries[i].type);
        EXPECT_EQ(back.entries[i].uuid, table.entries[i].uuid);
        EXPECT_EQ(back.entries[i].offset, table.entries[i].offset);
        EXPECT_EQ(back.entries[i].size, table.entries[i].size);
        EXPECT_EQ(back.entries[i].attributes, table.entries[i].attributes);
    }
    EXPECT_EQ(back, table);
}

TEST_F(Gpt, SfdiskSeesTheSameTable) {
    GptTable table = design_table(GiB);
    make_sparse(image, GiB);
    write_gpt(image, table);

    auto j = nlohmann::json::parse(run_checked({"sfdisk", "--json", image.string()}))["partitiontable"];
    EXPECT_EQ(j["label"], "gpt");
    EXPECT_EQ(j["id"], upper(table.disk_guid.str()));
    EXPECT_EQ(j["sectorsize"], 512);
    EXPECT_EQ(j["firstlba"], 34);
    EXPECT_EQ(j["lastlba"], GiB / 512 - 34);
    const std::vector<std::string> attrs = {"RequiredPartition", "GUID:60", "GUID:60", "RequiredPartition",
                                            "GUID:60",           "GUID:60", "",        "GUID:59"};
    ASSERT_EQ(j["partitions"].size(), 8u);
    for (size_t i = 0; i < 8; ++i) {
        const GptEntry& e = table.entries[i];
        const auto& p = j["partitions"][i];
        SCOPED_TRACE(e.label);
        EXPECT_EQ(p["node"], image.string() + std::to_string(i + 1));
        EXPECT_EQ(p["name"], e.label);
        EXPECT_EQ(p["type"], upper(e.type.str()));
        EXPECT_EQ(p["uuid"], upper(e.uuid.str()));
        EXPECT_EQ(p["start"], e.offset / 512);
        EXPECT_EQ(p["size"], e.size / 512);
        EXPECT_EQ(p.value("attrs", ""), attrs[i]);
    }
}

TEST_F(Gpt, SgdiskFindsNoProblems) {
    if (!find_program("sgdisk")) GTEST_SKIP() << "sgdisk (package gdisk) is not installed";
    make_sparse(image, GiB);
    write_gpt(image, design_table(GiB));
    RunResult r = run({"sgdisk", "-v", image.string()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("No problems found"), std::string::npos) << r.out << r.err;
    std::string info = run_checked({"sgdisk", "-i", "3", image.string()});
    EXPECT_NE(info.find("root_a_verity"), std::string::npos) << info;
    EXPECT_NE(info.find(upper(std::string(verity_type))), std::string::npos) << info;
}

TEST_F(Gpt, SameTableGivesTheSameBytes) {
    GptTable table = design_table(GiB);
    auto other = scratch / "other.img";
    make_sparse(image, GiB);
    make_sparse(other, GiB);
    // The second file first gets another table with more entries, a different disk GUID and junk
    // where boot code would be: none of it may survive the second write.
    GptTable first = table;
    first.disk_guid = Uuid::derive("gpt-test", "other disk");
    first.entries.push_back(entry("extra", linux_type, 1000 * MiB, MiB));
    first.entries[0].label = "something else";
    first.entries[7].size = 256 * MiB;
    write_gpt(other, first);
    write_range(other, 0, std::string(440, '\x5a'));
    write_gpt(other, table);

    write_gpt(image, table);
    RunResult r = run({"cmp", image.string(), other.string()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(read_gpt(other), table);
}

TEST_F(Gpt, WritesOnlyTheTablesAndAProtectiveMbr) {
    make_sparse(image, GiB);
    write_gpt(image, design_table(GiB));
    // pMBR + header + entries at the start, entries + header at the end: 34 KiB of data.
    EXPECT_LE(allocated_bytes(image), 128 * KiB);
    EXPECT_EQ(std::filesystem::file_size(image), GiB);

    std::string mbr = read_range(image, 0, 512);
    EXPECT_EQ(mbr.substr(0, 446), std::string(446, '\0'));  // no boot code, disk signature 0
    EXPECT_EQ(static_cast<uint8_t>(mbr[446 + 4]), 0xEE);    // protective partition type
    uint32_t first_lba = 0, sectors = 0;
    std::memcpy(&first_lba, mbr.data() + 446 + 8, 4);
    std::memcpy(&sectors, mbr.data() + 446 + 12, 4);
    EXPECT_EQ(first_lba, 1u);
    EXPECT_EQ(sectors, GiB / 512 - 1);
    EXPECT_EQ(mbr.substr(462, 48), std::string(48, '\0'));  // the other three MBR entries are empty
    EXPECT_EQ(static_cast<uint8_t>(mbr[510]), 0x55);
    EXPECT_EQ(static_cast<uint8_t>(mbr[511]), 0xAA);
    EXPECT_EQ(read_range(image, 512, 8), "EFI PART");
    EXPECT_EQ(read_range(image, GiB - 512, 8), "EFI PART");
    // Nothing between the primary table and the backup table.
    UniqueFd fd = open_file(image, O_RDONLY);
    off_t data = ::lseek(fd.get(), 64 * KiB, SEEK_DATA);
    if (data >= 0) {
        EXPECT_GE(static_cast<uint64_t>(data), GiB - 1 * MiB);
    }
}

TEST_F(Gpt, KeepsUnknownTypesNonAsciiLabelsAndAllAttributeBits) {
    make_sparse(image, 64 * MiB);
    GptTable table;
    table.disk_guid = Uuid::derive("gpt-test", "disk");
    table.disk_size = 64 * MiB;
    table.entries.push_back(
        entry("données-é€", "6e0a4c6f-2c3b-4d1e-9f00-112233445566", 34 * 512, 512, 0xffff000000000007ull));
    // Neither start nor size on libfdisk's 1 MiB grain, bigger than one grain: libfdisk must not round it.
    table.entries.push_back(entry(std::string(36, 'x'), linux_type, MiB + 512, 61 * MiB + 3 * 512));
    table.entries.push_back(entry("", linux_type, 63 * MiB, 64 * MiB - 33 * 512 - 63 * MiB));
    write_gpt(image, table);
    EXPECT_EQ(read_gpt(image), table);
}

TEST_F(Gpt, EmptyTable) {
    make_sparse(image, 8 * MiB);
    GptTable table{Uuid::derive("gpt-test", "disk"), 8 * MiB, {}};
    write_gpt(image, table);
    EXPECT_EQ(read_gpt(image), table);
}

TEST_F(Gpt, HugeSparseDiskIsQuick) {
    const uint64_t size = 4 * TiB;  // past what a 32-bit pMBR entry can describe
    make_sparse(image, size);
    GptTable table = design_table(size);
    auto start = std::chrono::steady_clock::now();
    write_gpt(image, table);
    GptTable back = read_gpt(image);
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(back, table);
    EXPECT_LT(seconds, 10.0);
    EXPECT_LE(allocated_bytes(image), 128 * KiB);
    uint32_t sectors = 0;
    std::string mbr = read_range(image, 0, 512);
    std::memcpy(&sectors, mbr.data() + 446 + 12, 4);
    EXPECT_EQ(sectors, 0xFFFFFFFFu);
    auto j = nlohmann::json::parse(run_checked({"sfdisk", "--json", image.string()}))["partitiontable"];
    EXPECT_EQ(j["lastlba"], size / 512 - 34);
    EXPECT_EQ(j["partitions"][7]["size"], table.entries[7].size / 512);
}

// ---- invalid tables: each error names the image and the partition, and nothing is written ----

class GptRejects : public Gpt {
protected:
    void SetUp() override { make_sparse(image, GiB); }

    // Writes `table`, expects an error mentioning each of `words` and the image, and checks that
    // the file is still blank.
    void expect_rejected(const GptTable& table, const std::vector<std::string>& words) {
        std::string message = error_of([&] { write_gpt(image, table); });
        EXPECT_NE(message.find(image.string()), std::string::npos) << message;
        for (const auto& w : words) EXPECT_NE(message.find(w), std::string::npos) << "'" << w << "' in: " << message;
        EXPECT_EQ(allocated_bytes(image), 0u);
    }
};

TEST_F(GptRejects, Overlap) {
    GptTable t = design_table(GiB);
    t.entries[4].offset -= MiB;  // root_b starts inside esp_b
    expect_rejected(t, {"root_b", "esp_b", "overlaps"});
}

TEST_F(GptRejects, PartitionPastTheLastUsableSector) {
    GptTable t = design_table(GiB);
    t.entries[7].size = GiB - t.entries[7].offset;  // runs into the backup GPT
    expect_rejected(t, {"data", "past the last usable sector"});
    t.entries[7].offset = 2 * GiB;
    expect_rejected(t, {"data", "past the last usable sector"});
    t.entries[7].offset = MiB;
    t.entries[7].size = UINT64_MAX - 511;  // no wrap-around
    expect_rejected(t, {"data", "past the last usable sector"});
}

TEST_F(GptRejects, PartitionInsideThePrimaryTable) {
    GptTable t = design_table(GiB);
    t.entries[0].offset = 33 * 512;
    expect_rejected(t, {"esp_a", "inside the primary GPT"});
}

TEST_F(GptRejects, MisalignedOffsetAndSize) {
    GptTable t = design_table(GiB);
    t.entries[1].offset += 4096 + 1;
    expect_rejected(t, {"root_a", "offset", "multiple of 512"});
    t = design_table(GiB);
    t.entries[6].size -= 100;
    expect_rejected(t, {"log", "size", "multiple of 512"});
    t.entries[6].size = 0;
    expect_rejected(t, {"log", "size"});
}

TEST_F(GptRejects, LabelLongerThan36Utf16Units) {
    GptTable t = design_table(GiB);
    t.entries[2].label = std::string(37, 'v');
    expect_rejected(t, {std::string(37, 'v'), "37 UTF-16 units"});
    t.entries[2].label = "\xF0\x9F\x98\x80";  // U+1F600 needs a surrogate pair
    expect_rejected(t, {"U+FFFF"});
    t.entries[2].label = "bad\xC3";
    expect_rejected(t, {"UTF-8"});
}

TEST_F(GptRejects, ZeroAndDuplicateGuids) {
    GptTable t = design_table(GiB);
    t.entries[3].type = Uuid{};
    expect_rejected(t, {"esp_b", "type GUID"});
    t = design_table(GiB);
    t.entries[5].uuid = t.entries[2].uuid;
    expect_rejected(t, {"root_b_verity", "used twice"});
    t = design_table(GiB);
    t.disk_guid = Uuid{};
    expect_rejected(t, {"disk GUID"});
}

TEST_F(GptRejects, DiskSizeOtherThanTheFile) {
    GptTable t = design_table(GiB);
    t.disk_size = 2 * GiB;
    expect_rejected(t, {"bytes"});
    t.disk_size = GiB + 100;
    expect_rejected(t, {"multiple of 512"});
}

TEST_F(GptRejects, TooManyEntries) {
    GptTable t{Uuid::derive("gpt-test", "disk"), GiB, {}};
    for (int i = 0; i < 129; ++i) t.entries.push_back(entry("p" + std::to_string(i), linux_type, (i + 1) * MiB, MiB));
    expect_rejected(t, {"129 partitions"});
}

TEST_F(Gpt, RefusesMissingFilesAndDirectories) {
    GptTable t = design_table(GiB);
    std::string message = error_of([&] { write_gpt(scratch / "missing.img", t); });
    EXPECT_NE(message.find("missing.img"), std::string::npos) << message;
    message = error_of([&] { write_gpt(scratch.path(), t); });
    EXPECT_NE(message.find(scratch.path().string()), std::string::npos) << message;
    message = error_of([&] { read_gpt(scratch / "missing.img"); });
    EXPECT_NE(message.find("missing.img"), std::string::npos) << message;
}

// ---- reading damaged or foreign tables ----

TEST_F(Gpt, ReadRefusesADiskWithoutGpt) {
    make_sparse(image, 16 * MiB);
    std::string message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find(image.string()), std::string::npos) << message;
    EXPECT_NE(message.find("no valid GPT"), std::string::npos) << message;
}

TEST_F(Gpt, ReadRefusesAnMbrDisk) {
    make_sparse(image, 16 * MiB);
    RunOptions o;
    o.input = "label: dos\nstart=2048, size=4096, type=83\n";
    run_checked({"sfdisk", "--no-reread", "--no-tell-kernel", image.string()}, o);
    std::string message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find(image.string()), std::string::npos) << message;
    EXPECT_NE(message.find("dos"), std::string::npos) << message;
}

TEST_F(Gpt, ReadRefusesADamagedPrimaryOrBackup) {
    GptTable table = design_table(GiB);
    make_sparse(image, GiB);
    write_gpt(image, table);
    write_range(image, 2 * 512 + 200, "X");  // inside entry 2 of the primary array
    std::string message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find(image.string()), std::string::npos) << message;
    EXPECT_NE(message.find("damaged"), std::string::npos) << message;

    write_gpt(image, table);
    EXPECT_EQ(read_gpt(image), table);
    write_range(image, GiB - 512 + 24, "X");  // backup header's MyLBA
    message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find("damaged"), std::string::npos) << message;

    write_gpt(image, table);
    write_range(image, 512, "X");        // primary header signature
    write_range(image, GiB - 512, "X");  // backup header signature
    message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find("no valid GPT"), std::string::npos) << message;
}

TEST_F(Gpt, ReadRefusesAGrownDisk) {
    GptTable table = design_table(GiB);
    make_sparse(image, GiB);
    write_gpt(image, table);
    std::filesystem::resize_file(image, 2 * GiB);  // the backup table is no longer at the end
    std::string message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find("damaged"), std::string::npos) << message;
}

TEST_F(Gpt, ReadRefusesGapsInThePartitionNumbers) {
    make_sparse(image, 16 * MiB);
    RunOptions o;
    o.input =
        "label: gpt\n" + image.string() + "1: start=2048, size=2048\n" + image.string() + "3: start=4096, size=2048\n";
    run_checked({"sfdisk", "--no-reread", "--no-tell-kernel", image.string()}, o);
    std::string message = error_of([&] { read_gpt(image); });
    EXPECT_NE(message.find("partition 3"), std::string::npos) << message;
    EXPECT_NE(message.find("partition 2"), std::string::npos) << message;
}

}  // namespace
