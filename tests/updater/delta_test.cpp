// Delta files (updater/delta.hpp): the format's strictness, the codec, and the root's sections
// placed on a disk image file: a block that does not have its signed digest is never written, and
// sections the target already holds are not fetched again.
#include "updater/delta.hpp"

#include <fcntl.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>

#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/sha256_blocks.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;

namespace {

std::string random_bytes(size_t n, unsigned seed) {
    std::mt19937_64 random(seed);
    std::string out(n, '\0');
    for (char& c : out) c = static_cast<char>(random());
    return out;
}

DeltaTable sample_table() {
    DeltaTable t;
    t.from_build_id = "old";
    t.from_version = "1.0";
    t.from_root_blocks = 256;
    t.to_build_id = "new";
    t.to_version = "2.0";
    t.to_manifest_sha256 = std::string(64, 'a');
    t.segment_size = 1 << 20;
    t.sections = {{"root", 0, 1 << 20, DeltaBase::running, 0, (1 << 20) + 8192, 4096, 100},
                  {"root", 1 << 20, 4096, DeltaBase::running, 1 << 20, 0, 4196, 50},
                  {"root-verity-b", 0, 8192, DeltaBase::tree, 0, 8192, 4246, 70}};
    return t;
}

// A delta file on the local disk read by ranges, counting what was read.
class FileRanges final : public RangeSource {
public:
    explicit FileRanges(std::string bytes) : bytes_(std::move(bytes)) {}
    void fetch(uint64_t end, RangeSink& sink) override {
        sink.restart();
        const uint64_t from = sink.position();
        end = std::min<uint64_t>(end, bytes_.size());
        if (from >= end) return;
        stats_.downloaded += end - from;
        ++stats_.requests;
        sink.take(reinterpret_cast<const uint8_t*>(bytes_.data() + from), end - from);
    }
    TransferStats stats() const override { return stats_; }

private:
    std::string bytes_;
    TransferStats stats_;
};

}  // namespace

TEST(DeltaTable, RoundTripsAndRefusesWhatADeviceMustNotTrust) {
    const DeltaTable t = sample_table();
    const DeltaTable back = DeltaTable::parse(t.to_json(), "d");
    EXPECT_EQ(back.to_json(), t.to_json());
    ASSERT_EQ(back.of("root").size(), 2u);
    EXPECT_EQ(back.of("root-verity-b").front()->base, DeltaBase::tree);

    auto refuse = [&](const std::function<void(nlohmann::json&)>& edit, const std::vector<std::string>& words) {
        nlohmann::json j = nlohmann::json::parse(t.to_json());
        edit(j);
        expect_error([&] { DeltaTable::parse(j.dump(), "the.delta"); }, words);
    };
    refuse([](auto& j) { j["extra"] = 1; }, {"the.delta", "unknown field \"extra\""});
    refuse([](auto& j) { j["format"] = 3; }, {"format 3"});
    refuse([](auto& j) { j["format"] = 0; }, {"format 0"});
    refuse([](auto& j) { j["sections"][0].erase("base_offset"); }, {"sections[0]", "base_offset"});
    refuse([](auto& j) { j["to"]["manifest_sha256"] = "AB"; }, {"manifest_sha256"});
    refuse([](auto& j) { j["segment_size"] = 1000; }, {"segment_size"});
    refuse([](auto& j) { j["segment_size"] = 1ull << 30; }, {"segment_size"});
    refuse([](auto& j) { j["sections"][0]["offset"] = 4096; }, {"sections[0]", "not at a segment"});
    refuse([](auto& j) { j["sections"][0]["size"] = (1 << 20) + 4096; }, {"sections[0]", "not one segment"});
    refuse([](auto& j) { j["sections"][0]["base_size"] = (64 << 20) + 1; }, {"sections[0]", "base_size", "window"});
    refuse([](auto& j) { j["sections"][0]["base_offset"] = ~0ull; }, {"sections[0]"});
    refuse([](auto& j) { j["sections"][0]["base"] = "elsewhere"; }, {"unknown base \"elsewhere\""});
    refuse([](auto& j) { j["sections"][0]["bytes"] = 0; }, {"sections[0]", "frame"});
    refuse([](auto& j) { j["sections"][0]["bytes"] = 1ull << 40; }, {"sections[0]", "frame"});
    refuse([](auto& j) { j["sections"][0]["at"] = 10; }, {"sections[0]", "inside the table"});
    refuse([](auto& j) { j["sections"][1]["at"] = 4100; }, {"sections[1]", "frame before"});
    refuse([](auto& j) { j["sections"][1]["offset"] = 0; }, {"sections[1]", "not in order"});
    refuse([](auto& j) { j["sections"][0]["offset"] = "0"; }, {"\"offset\" must be"});
    expect_error([] { DeltaTable::parse("[]", "x"); }, {"not a JSON object"});

    // Format 1 (before base_offset): each base is the segment's same range.
    nlohmann::json one = nlohmann::json::parse(t.to_json());
    one["format"] = 1;
    for (auto& sec : one["sections"]) sec.erase("base_offset");
    const DeltaTable old = DeltaTable::parse(one.dump(), "d");
    ASSERT_EQ(old.sections.size(), 3u);
    EXPECT_EQ(old.sections[1].base_offset, 1u << 20);
    one["sections"][0]["base_offset"] = 0;
    expect_error([&] { DeltaTable::parse(one.dump(), "d"); }, {"sections[0]", "unknown field \"base_offset\""});
}

TEST(DeltaTable, TheHeaderNamesWhatIsWrongWithIt) {
    const std::string good = encode_delta_header(1234);
    EXPECT_EQ(decode_delta_header(good, "d"), 1234u);
    expect_error([] { decode_delta_header("CAIRNBND" + std::string(56, '\0'), "f.delta"); }, {"f.delta", "not a Cairn delta"});
    expect_error([] { decode_delta_header("CAIRNDLT", "f"); }, {"not a Cairn delta"});
    std::string bad = good;
    bad[8] = 3;
    expect_error([&] { decode_delta_header(bad, "f"); }, {"delta format 3"});
    bad = good;
    bad[40] = 1;
    expect_error([&] { decode_delta_header(bad, "f"); }, {"reserved"});
    expect_error([] { decode_delta_header(encode_delta_header(0), "f"); }, {"table size 0"});
    expect_error([] { decode_delta_header(encode_delta_header(max_delta_table_size + 1), "f"); }, {"out of bounds"});
}

TEST(DeltaTable, ADeltaSitsBesideItsBundleNamedForTheSourceBuild) {
    EXPECT_EQ(delta_url("https://s/x/app-2.0.cairn", "abc"), "https://s/x/app-2.0.cairn.from-abc");
    EXPECT_EQ(delta_url("https://s/app.cairn?sig=1", "abc"), "https://s/app.cairn.from-abc?sig=1");
}

TEST(DeltaSection, APatchGivesTheTargetFromItsBaseAndNothingElse) {
    const std::string base = random_bytes(256 << 10, 1);
    std::string target = base;
    target.replace(1000, 20, "twenty changed bytes");
    target.replace(100 << 10, 4096, std::string(4096, 'x'));
    const std::string frame = encode_section(base, target, 3);
    EXPECT_LT(frame.size(), 2000u) << "the base's bytes are referred to, not carried";
    DeltaSection s{"root", 0, target.size(), DeltaBase::running, 0, base.size(), 64, frame.size()};
    EXPECT_EQ(decode_section(s, base, frame, "d"), target);

    // Another base decodes to other bytes (the device checks them), or fails; never crashes.
    std::string other = base;
    other[5000] ^= 1;
    try {
        EXPECT_NE(decode_section(s, other, frame, "d"), target);
    } catch (const Error&) {
    }
    expect_error([&] { decode_section(s, base.substr(1), frame, "the section"); }, {"the section", "base holds"});
    DeltaSection wrong = s;
    wrong.size = target.size() - 4096;
    expect_error([&] { decode_section(wrong, base, frame, "the section"); }, {"the section", "the table says"});
    expect_error([&] { decode_section(s, base, "not zstd at all", "the section"); }, {"the section", "not a zstd frame"});
    expect_error([&] { decode_section(s, base, frame + "x", "the section"); }, {"the section", "after the frame"});
    expect_error([&] { decode_section(s, base, frame.substr(0, frame.size() - 3), "the section"); }, {"the section"});
    // No base: a plain compressed segment.
    const std::string alone = encode_section({}, target, 1);
    DeltaSection a{"root", 0, target.size(), DeltaBase::running, 0, 0, 64, alone.size()};
    EXPECT_EQ(decode_section(a, {}, alone, "d"), target);
}

// The root's sections on a disk image file: slot "running" at 0, the target at 4 MiB.
TEST(DeltaRoot, OnlyBlocksWithTheirSignedDigestAreWrittenAndWhatIsInPlaceIsNotFetchedAgain) {
    Scratch scratch;
    constexpr uint64_t seg = 1 << 20, root = 2 * seg, block = 4096;
    const std::string old_root = random_bytes(root, 2);
    std::string new_root = old_root;
    // Changed blocks and new data that does not compress in each segment: frames larger than what
    // the first request brings with the table.
    for (uint64_t b : {3, 40, 200}) new_root[b * block + 7] ^= 1;
    new_root.replace(100 * block, 5 * block, random_bytes(5 * block, 3));
    new_root.replace(seg + 5 * block, 2 * block, std::string(2 * block, 'n'));
    new_root.replace(seg + 100 * block, 5 * block, random_bytes(5 * block, 4));
    const std::vector<uint8_t> salt = {1, 2, 3};
    std::vector<uint8_t> digests(root / block * 32);
    sha256_blocks(salt, reinterpret_cast<const uint8_t*>(new_root.data()), block, root / block, digests.data());

    const fs::path disk = scratch / "disk.raw";
    write_file_atomic(disk, old_root + std::string(root, '\0'));
    UniqueFd fd = open_file(disk, O_RDWR);

    DeltaTable t;
    t.from_build_id = "old";
    t.to_build_id = "new";
    t.to_manifest_sha256 = std::string(64, '0');
    t.segment_size = seg;
    std::string frames;
    // The second segment's base starts half a segment before it (as `cairn delta` picks one where
    // blocks moved): a device that took the segment's same range would decode other bytes.
    const uint64_t base_offsets[] = {0, seg / 2};
    for (uint64_t off : {uint64_t{0}, seg}) {
        const uint64_t base_offset = base_offsets[off / seg], base_size = root - base_offset;
        std::string f = encode_section(std::string_view(old_root).substr(base_offset, base_size), std::string_view(new_root).substr(off, seg), 3);
        t.sections.push_back({"root", off, seg, DeltaBase::running, base_offset, base_size, 0, f.size()});
        frames += f;
    }
    // The second segment's frame gives one wrong block: its patch is made against a new root with
    // block 6 of that segment altered.
    {
        std::string altered = new_root;
        altered[seg + 6 * block] = 'X';
        const std::string f = encode_section(std::string_view(old_root).substr(seg / 2), std::string_view(altered).substr(seg, seg), 3);
        frames = frames.substr(0, t.sections[0].bytes) + f;
        t.sections[1].bytes = f.size();
    }
    std::string table;
    for (int round = 0; round < 3; ++round) {  // offsets after the table, which names them
        table = t.to_json();
        t.sections[0].at = delta_header_size + table.size();
        t.sections[1].at = t.sections[0].at + t.sections[0].bytes;
    }
    table = t.to_json();
    ASSERT_EQ(t.sections[0].at, delta_header_size + table.size());
    const std::string file = encode_delta_header(table.size()) + table + frames;

    struct Bundle final : BundleSource {
        BundleManifest m;
        std::string sha = std::string(64, '0');
        const std::string& name() const override { static const std::string n = "bundle"; return n; }
        const BundleManifest& manifest() const override { return m; }
        const std::string& manifest_sha256() const override { return sha; }
        bool random_access() const override { return false; }
        int fd() const override { return -1; }
        void read(const Payload&, const std::function<void(const uint8_t*, size_t)>&) override {}
    } bundle;
    bundle.m.build_id = "new";
    Payload rp;
    rp.name = "root";
    rp.role = "root";
    rp.size = root;
    bundle.m.payloads = {rp};

    DeltaRootRequest r;
    r.disk_fd = fd.get();
    r.disk_name = "disk";
    r.target_offset = root;
    r.running = {0, root};
    r.digests = digests.data();
    r.salt = salt;
    r.blocks = root / block;

    auto* ranges = new FileRanges(file);
    DeltaSource delta(std::unique_ptr<RangeSource>(ranges), "the delta", bundle, "old");
    DeltaRootStats s = place_root_sections(delta, rp, r);
    EXPECT_EQ(s.sections, 2u);
    EXPECT_EQ(s.refused, 1u);
    EXPECT_EQ(s.written, root / block - 1);
    std::string target(root, '\0');
    pread_exact(fd.get(), target.data(), target.size(), root, "disk");
    const uint64_t wrong = seg + 6 * block;
    EXPECT_EQ(target.substr(0, wrong), new_root.substr(0, wrong));
    EXPECT_EQ(target.substr(wrong, block), std::string(block, '\0')) << "the block without its digest was not written";
    EXPECT_EQ(target.substr(wrong + block), new_root.substr(wrong + block));

    // Again, as after a power cut: segment 0 is in place and not fetched; segment 1 lacks its bad block.
    const uint64_t before = ranges->stats().downloaded;
    s = place_root_sections(delta, rp, r);
    EXPECT_EQ(s.in_place, 1u);
    ASSERT_GT(t.sections[1].at, 16u << 10);
    EXPECT_EQ(ranges->stats().downloaded - before, t.sections[1].bytes);

    // A delta from another build, or to another bundle, is refused when it is opened.
    expect_error([&] { DeltaSource(std::make_unique<FileRanges>(file), "the delta", bundle, "older"); },
                 {"the delta", "devices running build old", "runs older"});
    bundle.sha = std::string(64, '1');
    expect_error([&] { DeltaSource(std::make_unique<FileRanges>(file), "the delta", bundle, "old"); }, {"the delta", "not to this bundle"});
}
