#include "partitions/layout.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"

using namespace cairn;
using namespace cairn::partitions;

namespace {

PartitionSpec part(Role role, std::optional<uint64_t> size, std::string where = "p") {
    PartitionSpec p;
    p.role = role;
    p.size = size;
    p.slotted = role == Role::Esp || role == Role::Root || role == Role::RootVerity;
    p.where = std::move(where);
    return p;
}

LayoutSpec standard(uint64_t disk = GiB) {
    LayoutSpec s;
    s.disk_size = disk;
    s.seed = "test-seed";
    s.where = "recipe.toml: disk";
    s.partitions = {part(Role::Esp, 64 * MiB, "esp"), part(Role::Root, 256 * MiB, "root"), part(Role::RootVerity, 4 * MiB, "verity"),
                    part(Role::Log, 64 * MiB, "log"), part(Role::Data, std::nullopt, "data")};
    s.partitions.back().rest = true;
    return s;
}

std::string error_of(const LayoutSpec& s) {
    try {
        plan(s);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Layout, ExpandsSlotsInTheDesignOrder) {
    Layout l = plan(standard());
    std::vector<std::string> labels;
    for (const auto& p : l.partitions) labels.push_back(p.label);
    EXPECT_EQ(labels, (std::vector<std::string>{"esp_a", "root_a", "root_a_verity", "esp_b", "root_b", "root_b_verity", "log", "data"}));
    EXPECT_EQ(l.get("root_b").slot, 'b');
    EXPECT_EQ(l.get("log").slot, 0);
    EXPECT_EQ(l.slots(), (std::vector<char>{'a', 'b'}));
}

TEST(Layout, PlacesOnMiBBoundariesAndGivesTheLastTheRest) {
    Layout l = plan(standard());
    EXPECT_EQ(l.partitions[0].offset, MiB);
    uint64_t next = MiB;
    for (const auto& p : l.partitions) {
        EXPECT_EQ(p.offset % MiB, 0u) << p.label;
        EXPECT_EQ(p.offset, next) << p.label;
        next = p.offset + p.size;
    }
    const auto& data = l.get("data");
    EXPECT_EQ(data.offset + data.size, GiB - MiB);  // the last MiB holds the backup GPT
    EXPECT_EQ(data.size, GiB - MiB - (MiB + 2 * (64 + 256 + 4) * MiB + 64 * MiB));
}

TEST(Layout, UsesDiscoverablePartitionTypesAndAttributes) {
    Layout l = plan(standard());
    EXPECT_EQ(l.get("esp_a").type.str(), types::esp);
    EXPECT_EQ(l.get("root_b").type.str(), types::root_x86_64);
    EXPECT_EQ(l.get("root_a_verity").type.str(), types::root_x86_64_verity);
    EXPECT_EQ(l.get("data").type.str(), types::var);
    EXPECT_EQ(l.get("log").type.str(), types::linux_generic);
    EXPECT_TRUE(l.get("root_a_verity").attributes & attr_read_only);
    EXPECT_TRUE(l.get("data").attributes & attr_grow_file_system);
    EXPECT_EQ(l.get("log").attributes, 0u);
}

TEST(Layout, DerivesUuidsFromTheSeed) {
    Layout a = plan(standard());
    Layout b = plan(standard());
    EXPECT_EQ(a.disk_guid, b.disk_guid);
    for (size_t i = 0; i < a.partitions.size(); ++i) EXPECT_EQ(a.partitions[i].uuid, b.partitions[i].uuid);
    EXPECT_NE(a.get("root_a").uuid, a.get("root_b").uuid);
    LayoutSpec other = standard();
    other.seed = "another";
    EXPECT_NE(plan(other).disk_guid, a.disk_guid);
    EXPECT_NE(plan(other).get("log").uuid, a.get("log").uuid);
}

TEST(Layout, AutoSizeFitsThePartitionsExactly) {
    LayoutSpec s = standard(0);
    s.partitions.back().rest = false;
    s.partitions.back().size = 128 * MiB;
    Layout l = plan(s);
    const auto& data = l.get("data");
    EXPECT_EQ(l.disk_size, data.offset + data.size + MiB);
}

TEST(Layout, ExtraPartitionsKeepTheirLabelAndType) {
    LayoutSpec s = standard();
    PartitionSpec swap = part(Role::Extra, 32 * MiB, "swap");
    swap.label = "swap";
    swap.type = parse_type("swap", "t");
    s.partitions.insert(s.partitions.end() - 1, swap);
    PartitionSpec config = part(Role::Extra, 8 * MiB, "cfg");
    config.label = "config";
    config.slotted = true;
    s.partitions.insert(s.partitions.begin() + 1, config);
    Layout l = plan(s);
    EXPECT_EQ(l.get("swap").type.str(), types::swap);
    EXPECT_EQ(l.get("config_a").slot, 'a');
    EXPECT_EQ(l.get("config_b").slot, 'b');
    EXPECT_EQ(l.partitions[1].label, "config_a");
}

TEST(Layout, RejectsPartitionsThatDoNotFit) {
    std::string e = error_of(standard(512 * MiB));
    EXPECT_NE(e.find("does not fit on a 512 MiB disk"), std::string::npos) << e;
    EXPECT_NE(e.find("the layout needs at least"), std::string::npos) << e;
}

TEST(Layout, RejectsOverlapsMisalignmentAndDuplicates) {
    LayoutSpec s = standard();
    s.partitions[3].offset = 100 * MiB;  // log inside root_a
    std::string e = error_of(s);
    EXPECT_NE(e.find("'log' overlaps 'root_a'"), std::string::npos) << e;

    s = standard();
    s.partitions[3].offset = 100 * MiB + 4096;
    EXPECT_NE(error_of(s).find("not aligned to 1 MiB"), std::string::npos);

    s = standard();
    s.partitions[1].size = 256 * MiB + 512;
    EXPECT_NE(error_of(s).find("not a multiple of 1 MiB"), std::string::npos);

    s = standard();
    PartitionSpec dup = part(Role::Extra, MiB, "dup");
    dup.label = "log";
    s.partitions.insert(s.partitions.begin(), dup);
    e = error_of(s);
    EXPECT_NE(e.find("duplicate partition label 'log'"), std::string::npos) << e;
    EXPECT_EQ(e.rfind("log:", 0), 0u) << "the error names where the second entry was stated: " << e;
}

TEST(Layout, RestOnlyForTheLastPartition) {
    LayoutSpec s = standard();
    s.partitions[3].size.reset();
    s.partitions[3].rest = true;
    EXPECT_NE(error_of(s).find("only the last partition"), std::string::npos);
}

TEST(Layout, RoleNamesRoundTrip) {
    for (Role r : {Role::Esp, Role::Root, Role::RootVerity, Role::Log, Role::Data, Role::Extra}) EXPECT_EQ(parse_role(role_name(r)), r);
    EXPECT_FALSE(parse_role("boot"));
    EXPECT_THROW(parse_type("bogus", "x"), Error);
    EXPECT_EQ(parse_type("0fc63daf-8483-4772-8e79-3d69d8477de4", "x").str(), types::linux_generic);
}

TEST(Layout, TheSizeHintCountsEveryPartitionAndBothSlots) {
    // 1 MiB GPT + 2 × (64 + 256 + 4) slotted + 64 log + 1 MiB at least for the rest + 1 MiB backup GPT.
    std::string e = error_of(standard(512 * MiB));
    EXPECT_NE(e.find("the layout needs at least 715 MiB"), std::string::npos) << e;
    // The first partition that overflows is named, whatever comes after it.
    EXPECT_NE(e.find("partition 'root_b'"), std::string::npos) << e;
}
