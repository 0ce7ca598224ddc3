#include "attestation/reference.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/hash.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::attestation;
using cairn::test::expect_error;
using nlohmann::json;

namespace {

attestation::Sha256 digest_of(const std::string& text) { return cairn::sha256(text); }

ReferenceDocument sample() {
    ReferenceDocument doc;
    doc.image = "cairn-minimal";
    doc.version = "0.2.0";
    doc.uki_signer_certificate = digest_of("cert");
    for (const char* slot : {"a", "b"}) {
        SlotReference s;
        s.slot = slot;
        s.kernel_release = "6.1.0-57-cloud-amd64";
        s.uki_authenticode = digest_of(std::string("uki ") + slot);
        s.pcr11 = {digest_of(std::string("stub ") + slot), digest_of("sysinit"), digest_of("ready")};
        s.pcr9 = digest_of(std::string("pcr9 ") + slot);
        s.cmdline_event = digest_of(std::string("cmdline ") + slot);
        s.initrd_event = digest_of("initrd");
        doc.slots.push_back(s);
    }
    return doc;
}

// The sample as JSON, changed by `edit`, as text.
std::string edited(const std::function<void(json&)>& edit) {
    json j = json::parse(to_json(sample()));
    edit(j);
    return j.dump();
}

void expect_bad(const std::function<void(json&)>& edit, const std::vector<std::string>& parts) {
    std::vector<std::string> all = {"ref.json"};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_error([&] { parse_reference(edited(edit), "ref.json"); }, all);
}

}  // namespace

TEST(Reference, RoundTripsEveryField) {
    const ReferenceDocument doc = sample();
    const std::string text = to_json(doc);
    const ReferenceDocument back = parse_reference(text, "ref.json");
    EXPECT_EQ(back.image, doc.image);
    EXPECT_EQ(back.version, doc.version);
    EXPECT_EQ(back.uki_signer_certificate, doc.uki_signer_certificate);
    ASSERT_EQ(back.slots.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(back.slots[i].slot, doc.slots[i].slot);
        EXPECT_EQ(back.slots[i].kernel_release, doc.slots[i].kernel_release);
        EXPECT_EQ(back.slots[i].uki_authenticode, doc.slots[i].uki_authenticode);
        EXPECT_EQ(back.slots[i].pcr11, doc.slots[i].pcr11);
        EXPECT_EQ(back.slots[i].pcr9, doc.slots[i].pcr9);
        EXPECT_EQ(back.slots[i].cmdline_event, doc.slots[i].cmdline_event);
        EXPECT_EQ(back.slots[i].initrd_event, doc.slots[i].initrd_event);
    }
    EXPECT_EQ(to_json(back), text) << "the same document gives the same bytes";
}

TEST(Reference, WritesLowerCaseHexUnderStableKeys) {
    json j = json::parse(to_json(sample()));
    EXPECT_EQ(j["format"], 1);
    EXPECT_EQ(j["uki_signer_certificate"], to_hex(digest_of("cert")));
    EXPECT_EQ(j["slots"][1]["slot"], "b");
    EXPECT_EQ(j["slots"][0]["pcr11"][2], to_hex(digest_of("ready")));
    EXPECT_EQ(j["slots"][0]["uki_authenticode"], to_hex(digest_of("uki a")));
    const std::string text = to_json(sample());
    EXPECT_LT(text.find("\"format\""), text.find("\"image\"")) << "keys in sorted order";
    EXPECT_EQ(text.back(), '\n');
}

TEST(Reference, RefusesWhatIsNotADocument) {
    expect_error([] { parse_reference("", "ref.json"); }, {"ref.json", "not JSON"});
    expect_error([] { parse_reference("{\"format\": 1,", "ref.json"); }, {"ref.json", "not JSON"});
    expect_error([] { parse_reference("[1, 2]", "ref.json"); }, {"ref.json", "not a JSON object"});
    expect_error([] { parse_reference("\"text\"", "ref.json"); }, {"ref.json", "not a JSON object"});
}

TEST(Reference, RefusesUnknownAndMissingKeys) {
    expect_bad([](json& j) { j["extra"] = 1; }, {"unknown key \"extra\""});
    expect_bad([](json& j) { j["slots"][1]["pcr12"] = "00"; }, {"unknown key \"slots[1].pcr12\""});
    for (const char* key : {"format", "image", "version", "uki_signer_certificate", "slots"})
        expect_bad([&](json& j) { j.erase(key); }, {std::string("\"") + key + "\" is missing"});
    for (const char* key : {"slot", "kernel_release", "uki_authenticode", "pcr11", "pcr9", "cmdline_event", "initrd_event"})
        expect_bad([&](json& j) { j["slots"][0].erase(key); }, {std::string("\"slots[0].") + key + "\" is missing"});
}

TEST(Reference, RefusesBadDigests) {
    const std::string good = to_hex(digest_of("x"));
    expect_bad([&](json& j) { j["slots"][0]["pcr9"] = good.substr(2); }, {"\"slots[0].pcr9\"", "64 lower-case hex digits", "62 characters"});
    expect_bad([&](json& j) { j["slots"][0]["pcr9"] = good + "00"; }, {"\"slots[0].pcr9\"", "66 characters"});
    std::string upper = good;
    upper[0] = 'A';
    upper[1] = 'B';
    expect_bad([&](json& j) { j["slots"][1]["initrd_event"] = upper; }, {"\"slots[1].initrd_event\"", "lower-case hex"});
    std::string not_hex = good;
    not_hex[10] = 'g';
    expect_bad([&](json& j) { j["uki_signer_certificate"] = not_hex; }, {"\"uki_signer_certificate\"", "hex"});
    expect_bad([&](json& j) { j["slots"][0]["uki_authenticode"] = 5; }, {"\"slots[0].uki_authenticode\"", "must be a string"});
    expect_bad([&](json& j) { j["slots"][0]["pcr11"][1] = "zz"; }, {"\"slots[0].pcr11[1]\""});
    expect_bad([&](json& j) { j["slots"][0]["cmdline_event"] = nullptr; }, {"\"slots[0].cmdline_event\""});
}

TEST(Reference, RefusesBadShapes) {
    expect_bad([](json& j) { j["format"] = 2; }, {"\"format\"", "2"});
    expect_bad([](json& j) { j["format"] = "1"; }, {"\"format\""});
    expect_bad([](json& j) { j["image"] = ""; }, {"\"image\" is empty"});
    expect_bad([](json& j) { j["version"] = 1; }, {"\"version\" must be a string"});
    expect_bad([](json& j) { j["slots"] = json::array(); }, {"\"slots\" must be a non-empty array"});
    expect_bad([](json& j) { j["slots"] = json::object(); }, {"\"slots\" must be a non-empty array"});
    expect_bad([](json& j) { j["slots"].push_back(j["slots"][0]); }, {"\"slots\"", "3 entries"});
    expect_bad([](json& j) { j["slots"][1] = 7; }, {"\"slots[1]\" must be an object"});
    expect_bad([](json& j) { j["slots"][1]["slot"] = "a"; }, {"\"slots[1].slot\"", "slot a a second time"});
    expect_bad([](json& j) { j["slots"][0]["slot"] = "c"; }, {"\"slots[0].slot\"", "not a slot"});
    expect_bad([](json& j) { j["slots"][0]["pcr11"] = json::array(); }, {"\"slots[0].pcr11\"", "non-empty array"});
    expect_bad([](json& j) { j["slots"][0]["pcr11"] = to_hex(digest_of("x")); }, {"\"slots[0].pcr11\"", "non-empty array"});
    expect_bad([](json& j) { j["slots"][0]["pcr11"] = json::array(); for (int i = 0; i < 17; ++i) j["slots"][0]["pcr11"].push_back(to_hex(digest_of("x"))); },
               {"\"slots[0].pcr11\"", "17 values"});
    expect_bad([](json& j) { j["slots"][0]["kernel_release"] = ""; }, {"\"slots[0].kernel_release\" is empty"});
}

TEST(Reference, OneSlotIsADocument) {
    ReferenceDocument doc = sample();
    doc.slots.resize(1);
    ReferenceDocument back = parse_reference(to_json(doc), "ref.json");
    ASSERT_EQ(back.slots.size(), 1u);
    EXPECT_EQ(back.slots[0].pcr11.size(), 3u);
}
