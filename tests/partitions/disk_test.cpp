#include "partitions/disk.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::partitions;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

// A 64 MiB disk image with the minimal recipe's roles, from one seed.
GptTable table_of(const std::string& seed) {
    LayoutSpec spec;
    spec.disk_size = 64 * MiB;
    spec.seed = seed;
    spec.where = "test";
    for (Role r : {Role::Esp, Role::Root, Role::RootVerity}) {
        PartitionSpec p;
        p.role = r;
        p.slotted = true;
        p.size = 4 * MiB;
        spec.partitions.push_back(p);
    }
    for (Role r : {Role::Log, Role::Data}) {
        PartitionSpec p;
        p.role = r;
        p.size = 4 * MiB;
        spec.partitions.push_back(p);
    }
    return to_gpt(plan(spec));
}

void make_disk(const fs::path& file, const GptTable& table) {
    test::write_text(file, "");
    fs::resize_file(file, table.disk_size);
    write_gpt(file, table);
}

// As sysfs shows them: <sys>/<disk>/{uevent,size} and <sys>/<disk>/<disk><n>/partition.
void add_sysfs_disk(const fs::path& sys, const std::string& name, const GptTable& table) {
    test::write_text(sys / name / "uevent", "MAJOR=254\nDEVNAME=" + name + "\nDEVTYPE=disk\n");
    test::write_text(sys / name / "size", std::to_string(table.disk_size / 512) + "\n");
    for (size_t i = 0; i < table.entries.size(); ++i) {
        const std::string part = name + std::to_string(i + 1);
        test::write_text(sys / name / part / "partition", std::to_string(i + 1) + "\n");
        test::write_text(sys / name / part / "uevent", "DEVNAME=" + part + "\nPARTN=" + std::to_string(i + 1) + "\n");
    }
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(PartitionModel, LabelsAndTypesAreSpelledInOnePlace) {
    EXPECT_EQ(label_for(Role::Esp, 'a'), "esp_a");
    EXPECT_EQ(label_for(Role::Root, 'b'), "root_b");
    EXPECT_EQ(label_for(Role::RootVerity, 'a'), "root_a_verity");
    EXPECT_EQ(label_for(Role::Data), "data");
    EXPECT_EQ(label_for(Role::Log), "log");
    EXPECT_EQ(type_for(Role::RootVerity).str(), types::root_x86_64_verity);
    EXPECT_EQ(type_for(Role::Data).str(), types::var);
    EXPECT_THROW(label_for(Role::Extra), Error);
    // The layout names its partitions with the same functions.
    Layout layout = plan(LayoutSpec{0, "seed", {{Role::Root, "", true, 4 * MiB}, {Role::RootVerity, "", true, MiB}, {Role::Data, "", false, MiB}}, "t"});
    EXPECT_EQ(layout.get("root_b_verity").type, type_for(Role::RootVerity));
    EXPECT_TRUE(layout.get("data").attributes & attr_grow_file_system) << "a last data partition may grow";
}

TEST(PartitionModel, OnlyALastDataPartitionMayGrow) {
    Layout layout = plan(LayoutSpec{0, "seed", {{Role::Data, "", false, MiB}, {Role::Log, "", false, MiB}}, "t"});
    EXPECT_FALSE(layout.get("data").attributes & attr_grow_file_system);
}

TEST(PrimaryGpt, ReadsWhatWriteGptWrote) {
    Scratch dir;
    GptTable t = table_of("one");
    make_disk(dir / "disk", t);
    DiskTable d = read_primary_gpt(dir / "disk");
    EXPECT_EQ(d.disk_guid, t.disk_guid);
    ASSERT_EQ(d.partitions.size(), t.entries.size());
    for (size_t i = 0; i < t.entries.size(); ++i) {
        EXPECT_EQ(d.partitions[i].entry, t.entries[i]) << i;
        EXPECT_EQ(d.partitions[i].number, i + 1);
    }
}

TEST(PrimaryGpt, DamageIsRefused) {
    Scratch dir;
    make_disk(dir / "disk", table_of("one"));
    {
        UniqueFd fd = open_file(dir / "disk", O_RDWR);
        const char flip = 'X';
        pwrite_exact(fd.get(), &flip, 1, 2 * 512 + 56 + 2, "disk");  // a partition name in the entry array
    }
    EXPECT_NE(error_of([&] { read_primary_gpt(dir / "disk"); }).find("entry array checksum"), std::string::npos);
    {
        UniqueFd fd = open_file(dir / "disk", O_RDWR);
        pwrite_exact(fd.get(), "NOT PART", 8, 512, "disk");
    }
    EXPECT_NE(error_of([&] { read_primary_gpt(dir / "disk"); }).find("no GPT"), std::string::npos);
    // Garbage of every size parses to an Error, never a crash.
    std::vector<uint8_t> junk(512 * 2 + 128 * 128, 0);
    std::memcpy(junk.data() + 512, "EFI PART", 8);
    for (size_t n : {size_t(0), size_t(100), size_t(1024), junk.size()})
        EXPECT_THROW(parse_primary_gpt(junk.data(), n, 512, "junk"), Error) << n;
}

TEST(PrimaryGpt, ABackupGptBeforeTheEndIsFine) {
    // A disk larger than the image: the backup GPT is not at the end until first boot moves it.
    Scratch dir;
    GptTable t = table_of("one");
    make_disk(dir / "disk", t);
    fs::resize_file(dir / "disk", t.disk_size * 2);
    EXPECT_EQ(read_primary_gpt(dir / "disk").disk_guid, t.disk_guid);
}

TEST(FindRole, ChecksTheTypeAsWellAsTheLabel) {
    GptTable t = table_of("one");
    DiskTable d = disk_table(t);
    EXPECT_EQ(get_role(d, Role::RootVerity, 'b', "vda").entry.label, "root_b_verity");
    EXPECT_EQ(get_role(d, Role::Data, 0, "vda").number, t.entries.size());
    EXPECT_FALSE(find_role(d, Role::Esp, 'c', "vda"));
    EXPECT_NE(error_of([&] { get_role(d, Role::Esp, 'c', "vda"); }).find("vda: no partition labelled esp_c"), std::string::npos);
    // A partition labelled data with another type is not the data partition.
    d.partitions.back().entry.type = type_for(Role::Log);
    EXPECT_NE(error_of([&] { get_role(d, Role::Data, 0, "vda"); }).find("labelled data but has type"), std::string::npos);
    d = disk_table(t);
    d.partitions.push_back(d.partitions.back());
    d.partitions.back().number = 99;
    EXPECT_NE(error_of([&] { get_role(d, Role::Data, 0, "vda"); }).find("two partitions are labelled data"), std::string::npos);
}

TEST(BootDisk, OnlyTheDiskTheCommandLineNamesCounts) {
    Scratch dir;
    const GptTable own = table_of("device"), stranger = table_of("attacker");
    BlockDevices where{dir / "sys", dir / "dev"};
    make_disk(dir / "dev/vda", own);
    add_sysfs_disk(where.sys_class_block, "vda", own);
    make_disk(dir / "dev/vdb", stranger);  // a second disk with a data partition (and root_a, ...)
    add_sysfs_disk(where.sys_class_block, "vdb", stranger);
    test::write_text(dir / "sys/sr0/size", "0\n");  // an empty drive is skipped

    auto found = find_boot_disk(where, own.disk_guid, std::nullopt);
    ASSERT_TRUE(found);
    EXPECT_EQ(found->disk.name, "vda");
    EXPECT_EQ(found->disk.device, dir / "dev/vda");
    ASSERT_EQ(found->ignored.size(), 1u);
    EXPECT_NE(found->ignored[0].find("vdb"), std::string::npos) << found->ignored[0];
    EXPECT_NE(found->ignored[0].find("data"), std::string::npos) << found->ignored[0];
    EXPECT_EQ(partition_device(where, "vda", 8), dir / "dev/vda8");
    EXPECT_THROW(partition_device(where, "vda", 20), Error);

    // The stranger's disk is found only by its own GUID, and not at all once the booted ESP says otherwise.
    EXPECT_EQ(find_boot_disk(where, stranger.disk_guid, std::nullopt)->disk.name, "vdb");
    const Uuid own_esp = own.entries[0].uuid;
    EXPECT_NE(error_of([&] { find_boot_disk(where, stranger.disk_guid, own_esp); }).find("not the signed one"), std::string::npos);
    EXPECT_EQ(find_boot_disk(where, own.disk_guid, own_esp)->disk.name, "vda");
    EXPECT_FALSE(find_boot_disk(where, table_of("nobody").disk_guid, std::nullopt)) << "not there (yet)";
}

TEST(BootDisk, ACopyOfTheBootDiskIsRefusedNotGuessed) {
    Scratch dir;
    const GptTable own = table_of("device");
    BlockDevices where{dir / "sys", dir / "dev"};
    for (const char* name : {"vda", "vdb"}) {
        make_disk(dir / "dev" / name, own);
        add_sysfs_disk(where.sys_class_block, name, own);
    }
    EXPECT_NE(error_of([&] { find_boot_disk(where, own.disk_guid, std::nullopt); }).find("refusing to guess"), std::string::npos);
}
