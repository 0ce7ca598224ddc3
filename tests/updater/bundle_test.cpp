#include "updater/bundle.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <functional>
#include <optional>
#include <thread>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;

namespace {
void flip(const fs::path& file, uint64_t at) {
    UniqueFd fd = open_file(file, O_RDWR);
    char c;
    pread_exact(fd.get(), &c, 1, at, file.string());
    c ^= 0x01;
    pwrite_exact(fd.get(), &c, 1, at, file.string());
}
std::string read_all(BundleReader& r, const Payload& p) {
    std::string out;
    r.read(p, [&](const uint8_t* d, size_t n) { out.append(reinterpret_cast<const char*>(d), n); });
    return out;
}
// The code of the UpdateError `action` throws; nullopt when it throws another error or none.
std::optional<ErrorCode> code_thrown(const std::function<void()>& action) {
    try {
        action();
    } catch (const UpdateError& e) {
        return e.code();
    } catch (const std::exception&) {
    }
    return std::nullopt;
}

}  // namespace

TEST(Bundle, ReadsAValidBundleInOrderSkippingPayloads) {
    Scratch s;
    UpdateFixture f(s.path());
    fs::path b = f.bundle("2.0");
    BundleReader r(b, f.trust_anchor);
    EXPECT_EQ(r.manifest().version, "2.0");
    EXPECT_EQ(r.manifest().compatible, "cairn-test");
    ASSERT_EQ(r.manifest().payloads.size(), 5u);
    const Payload* root = r.manifest().find("root", "b");
    const Payload* verity_b = r.manifest().find("root-verity", "b");
    ASSERT_TRUE(root && verity_b);
    EXPECT_EQ(verity_b->name, "root-verity-b");
    EXPECT_EQ(read_all(r, *root), read_file(s / "payloads-2.0/root"));
    EXPECT_EQ(read_all(r, *verity_b), read_file(s / "payloads-2.0/verity-b"));  // verity-a skipped
    expect_error([&] { read_all(r, *root); }, {"in order"});
}

TEST(Bundle, ReadsFromAPipe) {
    Scratch s;
    UpdateFixture f(s.path());
    fs::path b = f.bundle("2.0");
    ASSERT_EQ(::mkfifo((s / "fifo").c_str(), 0600), 0);
    ::signal(SIGPIPE, SIG_IGN);
    std::thread writer([&] {
        UniqueFd out = open_file(s / "fifo", O_WRONLY);
        std::string all = read_file(b);
        for (size_t at = 0; at < all.size();) {
            ssize_t w = ::write(out.get(), all.data() + at, all.size() - at);
            if (w <= 0) break;
            at += static_cast<size_t>(w);
        }
    });
    {
        BundleReader r(s / "fifo", f.trust_anchor);
        const Payload* esp_b = r.manifest().find("esp", "b");  // the last one: everything before is skipped by reading
        EXPECT_EQ(read_all(r, *esp_b), read_file(s / "payloads-2.0/esp-b"));
    }
    writer.join();
    // A pipe that ends early lost its sender (transfer); a file cut short is a bad bundle, which
    // the reader leaves to its caller to name (it is a plain Error here).
    std::thread short_writer([&] {
        UniqueFd out = open_file(s / "fifo", O_WRONLY);
        const std::string head = read_file(b).substr(0, 100000);
        if (::write(out.get(), head.data(), head.size()) < 0) {
        }
    });
    {
        BundleReader r(s / "fifo", f.trust_anchor);
        EXPECT_EQ(code_thrown([&] { read_all(r, *r.manifest().find("esp", "b")); }), ErrorCode::transfer);
    }
    short_writer.join();
}

TEST(Bundle, RefusesWhatIsNotABundleOrIsCut) {
    Scratch s;
    UpdateFixture f(s.path());
    write_random(s / "random", 100000, 7);
    expect_error([&] { BundleReader(s / "random", f.trust_anchor); }, {"random", "not a Cairn bundle"});
    fs::path b = f.bundle("2.0");
    std::string all = read_file(b);
    write_text(s / "cut", all.substr(0, all.size() - 1000));
    expect_error([&] { BundleReader(s / "cut", f.trust_anchor); }, {"cut", "truncated"});
    write_text(s / "head", all.substr(0, 100));
    expect_error([&] { BundleReader(s / "head", f.trust_anchor); }, {"head", "ends inside its header, manifest or signature"});
    std::string future = all;
    future[8] = 2;
    write_text(s / "future", future);
    expect_error([&] { BundleReader(s / "future", f.trust_anchor); }, {"bundle format 2 is not supported"});
    expect_error([&] { BundleReader(s / "missing", f.trust_anchor); }, {"missing"});
}

TEST(Bundle, AFlippedManifestByteBreaksTheSignature) {
    Scratch s;
    UpdateFixture f(s.path());
    fs::path b = f.bundle("2.0");
    flip(b, bundle_header_size + 30);
    EXPECT_EQ(code_thrown([&] { BundleReader(b, f.trust_anchor); }), ErrorCode::bad_signature);
}

TEST(Bundle, AFlippedPayloadByteIsFoundByItsDigest) {
    Scratch s;
    UpdateFixture f(s.path());
    fs::path b = f.bundle("2.0");
    uint64_t at;
    {
        BundleReader r(b, f.trust_anchor);
        at = r.manifest().find("root", "")->offset + 12345;
    }
    flip(b, at);
    BundleReader r(b, f.trust_anchor);
    EXPECT_EQ(code_thrown([&] { read_all(r, *r.manifest().find("root", "")); }), ErrorCode::bad_payload);
}

TEST(Bundle, RefusesSignedButMalformedManifests) {
    Scratch s;
    UpdateFixture f(s.path());
    struct Case {
        std::function<void(BundleManifest&)> edit;
        std::string error;
    };
    std::vector<Case> cases = {
        {[](BundleManifest& m) { m.payloads[0].role = "kernel"; }, "unknown role \"kernel\""},
        {[](BundleManifest& m) { m.payloads[1].slot = "c"; }, "unknown slot \"c\""},
        {[](BundleManifest& m) { m.payloads[2].offset = m.payloads[1].offset; }, "overlaps"},
        {[](BundleManifest& m) { m.payloads[2].offset += 1; }, "not a multiple of 4096"},
        {[](BundleManifest& m) { m.payloads.pop_back(); }, "no esp payload for slot b"},
        {[](BundleManifest& m) { m.payloads[1].data_blocks += 1; }, "covers"},
        // 2^52 blocks more gives the same byte count modulo 2^64.
        {[](BundleManifest& m) { m.payloads[1].data_blocks += uint64_t{1} << 52; }, "\"data_blocks\" × \"data_block_size\""},
        {[](BundleManifest& m) { m.payloads[4].size = UINT64_MAX - m.payloads[4].offset + 2; }, "more than 64 bits"},
        {[](BundleManifest& m) { m.payloads[0].sha256 = "xyz"; }, "\"sha256\" must be 64"},
        {[](BundleManifest& m) { m.payloads[1].root_hash = ""; }, "\"root_hash\""},
        {[](BundleManifest& m) { m.payloads[0].size = 0; }, "\"size\" is 0"},
        {[](BundleManifest& m) { m.compatible = ""; }, "\"compatible\" is empty"},
        {[](BundleManifest& m) { m.payloads[3].name = m.payloads[4].name; }, "a second payload named"},
    };
    int i = 0;
    for (const Case& c : cases) {
        fs::path b = f.bundle("3." + std::to_string(i++), "cairn-test", c.edit);
        expect_error([&] { BundleReader(b, f.trust_anchor); }, {b.string(), c.error});
    }
}

TEST(BundleManifest, ParsesWhatItWritesAndNamesBadFields) {
    BundleManifest m;
    m.compatible = "c";
    m.version = "1";
    m.build_id = "x";
    Payload p{"root", "root", "", 4096, 8192, std::string(64, 'a')};
    m.payloads.push_back(p);
    for (const char* slot : {"a", "b"}) {
        Payload v{std::string("root-verity-") + slot, "root-verity", slot, 0, 4096, std::string(64, 'b'), std::string(64, 'c'), "00", 4096, 4096, 2};
        v.offset = m.payloads.back().offset + 8192;
        m.payloads.push_back(v);
    }
    for (const char* slot : {"a", "b"}) {
        Payload e{std::string("esp-") + slot, "esp", slot, m.payloads.back().offset + 8192, 100, std::string(64, 'd')};
        m.payloads.push_back(e);
    }
    m.etc["/etc/x"] = std::string(64, 'e');
    BundleManifest back = BundleManifest::parse(m.to_json(), "t");
    EXPECT_EQ(back.to_json(), m.to_json());
    expect_error([] { BundleManifest::parse("[1]", "t"); }, {"t", "not a JSON object"});
    expect_error([] { BundleManifest::parse("{\"format\":1,\"surprise\":2}", "t"); }, {"unknown field \"surprise\""});
    expect_error([] { BundleManifest::parse("{\"format\":7}", "t"); }, {"format 7"});
    std::string text = m.to_json();
    text.replace(text.find("\"/etc/x\""), 8, "\"/var/x\"");
    expect_error([&] { BundleManifest::parse(text, "t"); }, {"etc entry \"/var/x\""});
}

// An ESP's chunk index: written and read back; a wrong count, bad hex, a bad chunk size or an
// index on another role is refused.
TEST(BundleManifest, EspChunkIndexIsParsedStrictly) {
    BundleManifest m;
    m.compatible = "c";
    m.version = "1";
    m.payloads.push_back(Payload{"root", "root", "", 4096, 8192, std::string(64, 'a')});
    for (const char* slot : {"a", "b"})
        m.payloads.push_back(Payload{std::string("root-verity-") + slot, "root-verity", slot, m.payloads.back().offset + 8192, 4096,
                                     std::string(64, 'b'), std::string(64, 'c'), "00", 4096, 4096, 2});
    const std::string esp(10000, 'x');  // three 4 KiB chunks, the last short
    for (const char* slot : {"a", "b"}) {
        Payload e{std::string("esp-") + slot, "esp", slot, m.payloads.back().offset + 16384, esp.size(), to_hex(sha256(esp))};
        index_chunks(e, esp, 4096);
        m.payloads.push_back(e);
    }
    ASSERT_EQ(m.payloads.back().chunks.size(), 3u * 64);
    EXPECT_EQ(m.payloads.back().chunks.substr(128), to_hex(sha256(esp.substr(8192))));
    const BundleManifest back = BundleManifest::parse(m.to_json(), "t");
    EXPECT_EQ(back.to_json(), m.to_json());
    EXPECT_EQ(back.payloads.back().chunk_size, 4096u);
    auto with = [&](const std::function<void(Payload&)>& edit) {
        BundleManifest c = m;
        edit(c.payloads.back());
        return c.to_json();
    };
    expect_error([&] { BundleManifest::parse(with([](Payload& p) { p.chunks.resize(128); }), "t"); }, {"payloads[4].chunks", "must be 3 digests"});
    expect_error([&] { BundleManifest::parse(with([](Payload& p) { p.chunks[0] = 'G'; }), "t"); }, {"must be 3 digests"});
    expect_error([&] { BundleManifest::parse(with([](Payload& p) { p.chunk_size = 1000; }), "t"); }, {"power of two from 4096"});
    BundleManifest r = m;
    index_chunks(r.payloads.front(), std::string(8192, 'r'), 4096);
    expect_error([&] { BundleManifest::parse(r.to_json(), "t"); }, {"only esp payloads carry \"chunks\""});
}

namespace {

attestation::ReferenceDocument reference_for(const std::string& version) {
    attestation::ReferenceDocument doc;
    doc.image = "cairn-test";
    doc.version = version;
    doc.uki_signer_certificate.fill(0x11);
    attestation::SlotReference slot;
    slot.slot = "b";
    slot.kernel_release = "6.1.0-57-cloud-amd64";
    slot.uki_authenticode.fill(0x22);
    attestation::Sha256 stub{};
    stub.fill(0x33);
    slot.pcr11 = {stub};
    slot.pcr9.fill(0x44);
    slot.cmdline_event.fill(0x55);
    slot.initrd_event.fill(0x66);
    doc.slots.push_back(slot);
    return doc;
}

}  // namespace

// The reference document rides in the signed manifest; the reader hands it out. Bundles without
// one (made before it was carried) still read.
TEST(Bundle, CarriesTheReferenceDocumentUnderItsSignature) {
    Scratch s;
    UpdateFixture f(s.path());
    {
        BundleReader old(f.bundle("2.0"), f.trust_anchor);
        EXPECT_FALSE(old.reference().has_value());
    }
    fs::path b = f.bundle("2.1", "cairn-test", [](BundleManifest& m) { m.reference = reference_for("2.1"); });
    BundleReader r(b, f.trust_anchor);
    ASSERT_TRUE(r.reference().has_value());
    EXPECT_EQ(attestation::to_json(*r.reference()), attestation::to_json(reference_for("2.1")));
    EXPECT_NE(r.manifest_bytes().find("\"reference\""), std::string::npos);
    // A reference document for another version, or a broken one, refuses the bundle.
    fs::path other = f.bundle("2.2", "cairn-test", [](BundleManifest& m) { m.reference = reference_for("2.1"); });
    expect_error([&] { BundleReader(other, f.trust_anchor); }, {other.string(), "reference", "\"version\" 2.1 is not the bundle's version 2.2"});
}

TEST(BundleManifest, ReferenceIsParsedStrictly) {
    BundleManifest m;
    m.compatible = "c";
    m.version = "1";
    m.build_id = "x";
    m.payloads.push_back(Payload{"root", "root", "", 4096, 8192, std::string(64, 'a')});
    for (const char* slot : {"a", "b"}) {
        Payload v{std::string("root-verity-") + slot, "root-verity", slot, 0, 4096, std::string(64, 'b'), std::string(64, 'c'), "00", 4096, 4096, 2};
        v.offset = m.payloads.back().offset + 8192;
        m.payloads.push_back(v);
    }
    for (const char* slot : {"a", "b"}) m.payloads.push_back(Payload{std::string("esp-") + slot, "esp", slot, m.payloads.back().offset + 8192, 100, std::string(64, 'd')});
    m.reference = reference_for("1");
    BundleManifest back = BundleManifest::parse(m.to_json(), "t");
    ASSERT_TRUE(back.reference.has_value());
    EXPECT_EQ(back.to_json(), m.to_json());
    std::string text = m.to_json();
    std::string bad = text;
    bad.replace(bad.find("\"pcr9\""), 6, "\"pcr8\"");
    expect_error([&] { BundleManifest::parse(bad, "t"); }, {"t: manifest: reference", "unknown key \"slots[0].pcr8\""});
    bad = text;
    bad.replace(bad.find(std::string(64, '4')), 2, "zz");
    expect_error([&] { BundleManifest::parse(bad, "t"); }, {"t: manifest: reference", "\"slots[0].pcr9\""});
    nlohmann::json j = nlohmann::json::parse(text);
    j["reference"] = 5;
    bad = j.dump();
    expect_error([&] { BundleManifest::parse(bad, "t"); }, {"t: manifest: \"reference\" must be an object"});
}

// Roots for one slot each and one tree for both: each root is checked against the tree (no null
// dereference looking for a root for "either slot").
TEST(BundleManifest, PerSlotRootsWithATreeForEitherSlot) {
    BundleManifest m;
    m.compatible = "c";
    m.version = "1";
    m.build_id = "x";
    uint64_t at = 4096;
    auto add = [&](Payload p) {
        p.offset = at;
        at += (p.size + 4095) / 4096 * 4096;
        m.payloads.push_back(p);
    };
    add(Payload{"root-a", "root", "a", 0, 8192, std::string(64, 'a')});
    add(Payload{"root-b", "root", "b", 0, 8192, std::string(64, 'a')});
    add(Payload{"root-verity", "root-verity", "", 0, 4096, std::string(64, 'b'), std::string(64, 'c'), "00", 4096, 4096, 2});
    add(Payload{"esp-a", "esp", "a", 0, 100, std::string(64, 'd')});
    add(Payload{"esp-b", "esp", "b", 0, 100, std::string(64, 'd')});
    EXPECT_EQ(BundleManifest::parse(m.to_json(), "t").find("root", "b")->name, "root-b");
    m.payloads[1].size = 12288;
    m.payloads[2].offset += 4096;
    m.payloads[3].offset += 4096;
    m.payloads[4].offset += 4096;
    expect_error([&] { BundleManifest::parse(m.to_json(), "t"); },
                 {"t", "payload root-verity covers 8192 bytes but the root payload root-b for slot b has 12288"});
}

// Found by fuzz/bundle_manifest: a tree for either slot over per-slot roots dereferenced
// m.find("root", "") (null). Each slot's root is now checked against the tree instead.
TEST(BundleManifest, GenericTreeOverPerSlotRootsFromTheFuzzerParses) {
    const std::string text = cairn::read_file(std::string(CAIRN_SOURCE_DIR) + "/fuzz/regressions/bundle_manifest/generic-tree-per-slot-roots.json");
    BundleManifest m = BundleManifest::parse(text, "t");
    EXPECT_EQ(m.find("root", "b")->name, "root-b");
    EXPECT_EQ(m.find("root-verity", "a")->name, "root-verity");
}

TEST(BundleHeader, RoundTripsAndChecksBounds) {
    BundleHeader h{1000, 2000, 4096};
    std::string bytes = encode_header(h);
    ASSERT_EQ(bytes.size(), bundle_header_size);
    BundleHeader back = decode_header(bytes, "t");
    EXPECT_EQ(back.manifest_size, 1000u);
    EXPECT_EQ(back.payload_offset, 4096u);
    expect_error([] { decode_header(encode_header({0, 10, 4096}), "t"); }, {"manifest size 0"});
    expect_error([] { decode_header(encode_header({10, max_signature_size + 1, 1 << 20}), "t"); }, {"signature size"});
    expect_error([] { decode_header(encode_header({1000, 2000, 4097}), "t"); }, {"payload offset"});
    expect_error([] { decode_header(encode_header({1000, 2000, 1 << 30}), "t"); }, {"payload offset"});
    std::string reserved = encode_header(h);
    reserved[50] = 1;
    expect_error([&] { decode_header(reserved, "t"); }, {"reserved header bytes"});
}

