// `cairn delta` (imager/delta.hpp) on bundles made by the updater's test fixture, and
// `cairn publish --delta-from`.
#include "imager/delta.hpp"

#include <gtest/gtest.h>

#include <random>

#include "common/file.hpp"
#include "imager/publish.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;

namespace {

struct Deltas {
    Scratch s;
    UpdateFixture f{s.path()};
    // Other versions: 1.0 with one byte changed in block 10, or else `fresh` blocks of new random
    // data at 500. (The fixture's ESPs are random bytes for each version.)
    explicit Deltas(uint64_t fresh = 0) {
        f.root_bytes = [fresh](const std::string& version, uint64_t size) {
            std::mt19937_64 random(21);
            std::string bytes(size, '\0');
            for (char& c : bytes) c = static_cast<char>(random());
            if (version != "1.0") {
                if (fresh == 0) bytes[10 * 4096] ^= 1;
                for (uint64_t i = 0; i < fresh * 4096; ++i) bytes[500 * 4096 + i] = static_cast<char>(random());
            }
            return bytes;
        };
    }
    std::vector<std::string> payloads_with_sections(const DeltaTable& t) {
        std::vector<std::string> out;
        for (const DeltaSection& sec : t.sections)
            if (out.empty() || out.back() != sec.payload) out.push_back(sec.payload);
        return out;
    }
};

}  // namespace

TEST(Delta, PatchesWhatChangedAndSitsBesideTheNewBundleUnderTheNameDevicesLookFor) {
    Deltas d;
    imager::DeltaOptions o;
    o.from = d.f.bundle("1.0", "cairn-test", {}, 4 << 20);
    o.to = d.f.bundle("2.0", "cairn-test", {}, 4 << 20);
    std::vector<std::string> lines;
    o.progress = [&](const std::string& line) { lines.push_back(line); };
    const imager::DeltaResult r = imager::make_delta(o);
    EXPECT_EQ(r.file, fs::path(o.to.string() + ".from-test-1.0"));
    EXPECT_EQ(r.size, fs::file_size(r.file));
    // One changed byte of the root and the trees over it; the fixture's ESPs are new random bytes,
    // cheaper fetched by chunks than patched: left out.
    EXPECT_LT(r.size, 16u << 10);
    EXPECT_EQ(r.table.from_build_id, "test-1.0");
    EXPECT_EQ(r.table.to_build_id, "test-2.0");
    EXPECT_EQ(r.table.from_root_blocks, (4u << 20) / 4096);
    EXPECT_EQ(r.table.to_manifest_sha256, BundleReader(o.to, d.f.trust_anchor).manifest_sha256());
    EXPECT_EQ(d.payloads_with_sections(r.table), (std::vector<std::string>{"root", "root-verity-a", "root-verity-b"}));
    EXPECT_EQ(lines.size(), 5u);
    // The file is what it says: the table read back is the one returned.
    const std::string bytes = read_file(r.file);
    EXPECT_EQ(DeltaTable::parse(std::string_view(bytes).substr(delta_header_size, decode_delta_header(bytes, "d")), "d").to_json(),
              r.table.to_json());
    EXPECT_FALSE(fs::exists(r.file.string() + ".partial"));
}

TEST(Delta, NewDataThatWouldCostMoreAsAPatchThanAsBlocksIsLeftToTheBlocks) {
    Deltas d(64);  // 64 new random blocks: a patch of them is no smaller than the blocks themselves
    imager::DeltaOptions o;
    o.from = d.f.bundle("1.0", "cairn-test", {}, 4 << 20);
    o.to = d.f.bundle("2.0", "cairn-test", {}, 4 << 20);
    o.level = 3;
    const imager::DeltaResult r = imager::make_delta(o);
    EXPECT_TRUE(r.table.of("root").empty());
    EXPECT_FALSE(r.table.of("root-verity-b").empty());
}

TEST(Delta, ASegmentIsPatchedAgainstWhereItsBlocksCameFrom) {
    // 2 MiB of new data at 1 MiB moves all after it by 2 MiB (a package added early in an image),
    // and one byte changes in each later segment (a directory or inode block that moved with it).
    // Patched against its same range, a segment would carry its first 2 MiB as new data; against
    // where its blocks came from, it is a few bytes.
    constexpr uint64_t mib = 1 << 20, root = 3 * updater::delta_segment_size;
    Deltas d;
    d.f.root_bytes = [](const std::string& version, uint64_t size) {
        std::mt19937_64 random(22);
        std::string bytes(size, '\0');
        for (char& c : bytes) c = static_cast<char>(random());
        if (version == "1.0") return bytes;
        std::string fresh(2 * mib, '\0');
        for (char& c : fresh) c = static_cast<char>(random());
        bytes = (bytes.substr(0, mib) + fresh + bytes.substr(mib)).substr(0, size);
        for (uint64_t seg : {1, 2}) bytes[seg * updater::delta_segment_size + 5 * mib + 17] ^= 1;
        return bytes;
    };
    imager::DeltaOptions o;
    o.from = d.f.bundle("1.0", "cairn-test", {}, root);
    o.to = d.f.bundle("2.0", "cairn-test", {}, root);
    o.level = 3;
    const imager::DeltaResult r = imager::make_delta(o);
    const std::vector<const DeltaSection*> root_sections = r.table.of("root");
    ASSERT_EQ(root_sections.size(), 2u) << "the first segment's new data is cheaper as blocks";
    for (const DeltaSection* sec : root_sections) {
        EXPECT_EQ(sec->base_offset, sec->offset - 3 * mib) << "2 MiB before it, and the 1 MiB margin";
        EXPECT_EQ(sec->base_size, std::min(updater::delta_segment_size + 2 * mib, root - sec->base_offset));
        EXPECT_LT(sec->bytes, 1024u);
    }
}

TEST(Delta, RefusesBundlesNoDeviceCouldGoBetweenAndLeavesNothingBehind) {
    Deltas d;
    const fs::path one = d.f.bundle("1.0"), two = d.f.bundle("2.0"), other = d.f.bundle("2.5", "cairn-other");
    imager::DeltaOptions o;
    o.from = one;
    o.to = other;
    expect_error([&] { imager::make_delta(o); }, {other.string(), "cairn-other", "cairn-test"});
    o.to = one;
    expect_error([&] { imager::make_delta(o); }, {"the same build"});
    o.to = d.s / "missing.cairn";
    expect_error([&] { imager::make_delta(o); }, {"missing.cairn"});
    write_file_atomic(d.s / "not.cairn", std::string(100, 'x'));
    o.to = d.s / "not.cairn";
    expect_error([&] { imager::make_delta(o); }, {"not.cairn", "not a Cairn bundle"});
    o.to = two;
    o.out = d.s / "no-such-dir" / "x.delta";
    expect_error([&] { imager::make_delta(o); }, {"no-such-dir"});
    for (const auto& e : fs::directory_iterator(d.s.path()))
        EXPECT_EQ(e.path().string().find(".from-"), std::string::npos) << e.path();
}

TEST(Delta, PublishWritesADeltaFromEachOlderBundleBesideTheNewOne) {
    Deltas d;
    imager::PublishOptions o;
    const fs::path one = d.f.bundle("1.0"), two = d.f.bundle("2.0");
    o.bundle = d.f.bundle("3.0");
    o.out_dir = d.s / "site";
    o.key = d.f.key;
    o.cert = d.f.cert;
    o.delta_from = {one, two};
    const imager::PublishResult r = imager::publish(o);
    ASSERT_EQ(r.deltas.size(), 2u);
    EXPECT_EQ(r.deltas[0].file, o.out_dir / (o.bundle.filename().string() + ".from-test-1.0"));
    EXPECT_EQ(r.deltas[1].file, o.out_dir / (o.bundle.filename().string() + ".from-test-2.0"));
    for (const auto& x : r.deltas) EXPECT_TRUE(fs::exists(x.file));
    o.url = "https://cdn.example/b.cairn";
    expect_error([&] { imager::publish(o); }, {"--delta-from", "--url"});
}
