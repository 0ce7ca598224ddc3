// Channel indexes: signed, strict, refused when replayed or expired, resolved against their URL;
// fetched from Debian's nginx; what a device decides from one; reboot windows.
#include "updater/channel.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <ctime>

#include "common/encoding.hpp"
#include "common/file.hpp"
#include "updater/signature.hpp"
#include "tests/support/engine_rig.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const int64_t now = static_cast<int64_t>(std::time(nullptr));  // the test certificates are valid now

const fs::path keys = fs::path(CAIRN_SOURCE_DIR) / "recipes/keys";

ChannelIndex sample() {
    ChannelIndex i;
    i.channel = "stable";
    i.compatible = "cairn-test";
    i.version = "2.0";
    i.build_id = "b2";
    i.bundle = "test-2.0.cairn";
    i.size = 123456;
    i.published = now - 60;
    return i;
}

std::string signed_file(const ChannelIndex& i) { return make_channel_file(i, keys / "update-signer.key", keys / "update-signer.pem", {}, now); }

ChannelIndex open(const std::string& text) { return open_channel_file(text, keys / "update-ca.pem", now, "https://u/stable.json"); }

// The file with its "signed" object changed after signing.
std::string tampered(const std::string& text, const std::function<void(json&)>& edit) {
    json j = json::parse(text);
    edit(j["signed"]);
    return j.dump();
}

UpdateStatus running_a(const std::string& version) {
    UpdateStatus st;
    st.slots["a"] = SlotRecord{SlotState::good, version, "b1", 0};
    return st;
}

}  // namespace

TEST(Channel, ASignedIndexOpensWithEveryField) {
    ChannelIndex i = sample();
    i.expires = now + 86400;
    const ChannelIndex o = open(signed_file(i));
    EXPECT_EQ(o.channel, "stable");
    EXPECT_EQ(o.compatible, "cairn-test");
    EXPECT_EQ(o.version, "2.0");
    EXPECT_EQ(o.build_id, "b2");
    EXPECT_EQ(o.bundle, "test-2.0.cairn");
    EXPECT_EQ(o.size, 123456u);
    EXPECT_EQ(o.published, now - 60);
    EXPECT_EQ(o.expires, now + 86400);
    // Readable as it is on the server: the fields in clear, the signature beside them.
    const json j = json::parse(signed_file(i));
    EXPECT_EQ(j["signed"]["version"], "2.0");
    EXPECT_TRUE(j["signature"].is_string());
    // Whitespace and key order on the server do not matter: the signed bytes are made again.
    EXPECT_EQ(open(j.dump(4)).version, "2.0");
}

TEST(Channel, AnAlteredUnsignedOrForeignIndexIsRefused) {
    const std::string good = signed_file(sample());
    expect_code([&] { open(tampered(good, [](json& s) { s["version"] = "9.0"; })); }, ErrorCode::bad_signature);
    expect_code([&] { open(tampered(good, [](json& s) { s["bundle"] = "https://evil.example/x.cairn"; })); }, ErrorCode::bad_signature);
    expect_code([&] { open(tampered(good, [](json& s) { s["published"] = now; })); }, ErrorCode::bad_signature);
    json j = json::parse(good);
    j["signature"] = "AAAA";
    expect_code([&] { open(j.dump()); }, ErrorCode::bad_signature);
    j["signature"] = "not base64!";
    expect_code([&] { open(j.dump()); }, ErrorCode::bad_signature);
    // Signed by a key whose certificate does not chain to the device's anchor.
    Scratch s;
    TestPki pki(s / "pki");
    make_signer(s.path(), "stranger", pki / "root.pem", pki / "root.key", bundle_signer_extensions());
    const std::string foreign = make_channel_file(sample(), s / "stranger.key", s / "stranger.pem", {}, now);
    expect_code([&] { open(foreign); }, ErrorCode::bad_signature);
    // (checked a minute on: the certificates were made just now)
    EXPECT_NO_THROW(open_channel_file(foreign, pki / "root.pem", static_cast<int64_t>(std::time(nullptr)) + 60, "x"));
}

TEST(Channel, AMalformedIndexIsRefusedBeforeAnyFieldIsUsed) {
    expect_code([&] { open("not json"); }, ErrorCode::bad_bundle, {"https://u/stable.json", "not JSON"});
    expect_code([&] { open("[]"); }, ErrorCode::bad_bundle, {"\"signed\""});
    expect_code([&] { open(std::string(channel_file_max + 1, ' ')); }, ErrorCode::bad_bundle, {"larger than"});
    json extra = json::parse(signed_file(sample()));
    extra["more"] = 1;
    expect_code([&] { open(extra.dump()); }, ErrorCode::bad_bundle);
    // Well signed, wrong inside: an unknown field, another format, a wrong type, a bad version.
    ChannelIndex i = sample();
    auto signed_with = [&](const std::function<void(json&)>& edit) {
        json s = json::parse(i.signed_json());
        edit(s);
        const std::string sig = cms_sign(s.dump(), keys / "update-signer.key", keys / "update-signer.pem", {}, now);
        return json{{"signed", s}, {"signature", base64_encode(sig)}}.dump();
    };
    expect_code([&] { open(signed_with([](json& s) { s["mirror"] = "x"; })); }, ErrorCode::bad_bundle, {"unknown field \"mirror\""});
    expect_code([&] { open(signed_with([](json& s) { s["format"] = 2; })); }, ErrorCode::bad_bundle, {"format 2"});
    expect_code([&] { open(signed_with([](json& s) { s["size"] = "big"; })); }, ErrorCode::bad_bundle, {"\"size\""});
    expect_code([&] { open(signed_with([](json& s) { s["size"] = -1; })); }, ErrorCode::bad_bundle, {"\"size\""});
    expect_code([&] { open(signed_with([](json& s) { s.erase("build_id"); })); }, ErrorCode::bad_bundle, {"no \"build_id\""});
    expect_code([&] { open(signed_with([](json& s) { s["version"] = "two"; })); }, ErrorCode::bad_bundle, {"version \"two\""});
}

TEST(Channel, TheBundleIsResolvedAgainstTheIndexUrl) {
    EXPECT_EQ(resolve_bundle_url("https://u.example/m/stable.json", "m-2.0.cairn"), "https://u.example/m/m-2.0.cairn");
    EXPECT_EQ(resolve_bundle_url("https://u.example:8443/m/stable.json?sig=secret", "b/m.cairn"), "https://u.example:8443/m/b/m.cairn");
    EXPECT_EQ(resolve_bundle_url("https://u.example/m/stable.json", "/other/m.cairn"), "https://u.example/other/m.cairn");
    EXPECT_EQ(resolve_bundle_url("https://u.example", "m.cairn"), "https://u.example/m.cairn");
    EXPECT_EQ(resolve_bundle_url("https://u.example/stable.json", "https://cdn.example/m.cairn?t=1"), "https://cdn.example/m.cairn?t=1");
    for (const char* bad : {"file:///etc/shadow", "ftp://x/m.cairn", "//evil.example/m.cairn", "../m.cairn", "a/../../m.cairn", "./m.cairn",
                            "m .cairn", "m\n.cairn", "a\\b", ""})
        expect_code([&] { resolve_bundle_url("https://u.example/m/stable.json", bad); }, ErrorCode::bad_bundle, {"bundle"});
}

TEST(Channel, ADeviceDecidesFromTheIndexAndItsOwnRecord) {
    const ChannelIndex i = sample();
    auto judge = [&](const ChannelIndex& idx, const UpdateStatus& st, int64_t last = 0) {
        return judge_channel_index(idx, "cairn-test", "1.0", "b1", st, last, now);
    };
    EXPECT_EQ(judge(i, running_a("1.0")), ChannelVerdict::available);
    ChannelIndex same = i;
    same.version = "1.0";
    same.build_id = "b1";
    EXPECT_EQ(judge(same, running_a("1.0")), ChannelVerdict::up_to_date);
    ChannelIndex older = i;
    older.version = "0.9";
    older.build_id = "b0";
    EXPECT_EQ(judge(older, running_a("1.0")), ChannelVerdict::up_to_date);  // a channel never downgrades a device
    // Installed and waiting for its trial boot: not installed again.
    UpdateStatus st = running_a("1.0");
    st.slots["b"] = SlotRecord{SlotState::trial, "2.0", "b2", 0};
    st.pending = Pending{"b", "2.0", PendingPhase::armed, "x"};
    EXPECT_EQ(judge(i, st), ChannelVerdict::waiting);
    // Rolled back before: not again (no install, trial, rollback loop).
    st = running_a("1.0");
    st.slots["b"] = SlotRecord{SlotState::bad, "2.0", "b2", 0};
    st.last = Event{EventKind::rolled_back, "b", "2.0", "unhealthy", 0};
    EXPECT_EQ(judge(i, st), ChannelVerdict::skipped);
    // ... but a fixed build of it is installed.
    ChannelIndex fixed = i;
    fixed.version = "2.0.1";
    fixed.build_id = "b3";
    EXPECT_EQ(judge(fixed, st), ChannelVerdict::available);
    // An install cut short is taken up again (it resumes).
    st = running_a("1.0");
    st.slots["b"] = SlotRecord{SlotState::installing, "2.0", "b2", 0};
    EXPECT_EQ(judge(i, st), ChannelVerdict::available);
    // Another system, a replay, an expired index.
    expect_code([&] { judge_channel_index(i, "cairn-other", "1.0", "b1", running_a("1.0"), 0, now); }, ErrorCode::incompatible,
                {"cairn-other"});
    expect_code([&] { judge(i, running_a("1.0"), now); }, ErrorCode::stale_channel, {"before the one this device accepted"});
    EXPECT_EQ(judge(i, running_a("1.0"), i.published), ChannelVerdict::available);  // the same index again is fine
    ChannelIndex expired = i;
    expired.expires = now - 1;
    expect_code([&] { judge(expired, running_a("1.0")); }, ErrorCode::stale_channel, {"expired"});
}

TEST(Channel, RebootPoliciesAndWindows) {
    EXPECT_EQ(parse_reboot_policy("now")->kind, RebootPolicy::Kind::now);
    EXPECT_EQ(parse_reboot_policy("never")->kind, RebootPolicy::Kind::never);
    for (const char* bad : {"", "later", "2:00-4:00", "02:00-02:00", "24:00-01:00", "02:60-03:00", "02:00_04:00"})
        EXPECT_FALSE(parse_reboot_policy(bad)) << bad;
    const RebootPolicy night = *parse_reboot_policy("02:00-04:00");
    std::mt19937_64 random(1);
    const int64_t day = 1790035200;  // a midnight UTC
    ASSERT_EQ(day % 86400, 0);
    for (int n = 0; n < 200; ++n) {
        // Before the window: inside today's.
        int64_t t = next_reboot_time(night, day + 3600, random);
        EXPECT_GE(t, day + 2 * 3600);
        EXPECT_LT(t, day + 4 * 3600);
        // Inside it: from now to its end.
        t = next_reboot_time(night, day + 3 * 3600, random);
        EXPECT_GE(t, day + 3 * 3600);
        EXPECT_LT(t, day + 4 * 3600);
        // After it: tomorrow's.
        t = next_reboot_time(night, day + 5 * 3600, random);
        EXPECT_GE(t, day + 86400 + 2 * 3600);
        EXPECT_LT(t, day + 86400 + 4 * 3600);
    }
    // Across midnight: 23:00-01:00 seen at 00:30 ends at 01:00 the same day.
    const RebootPolicy late = *parse_reboot_policy("23:00-01:00");
    for (int n = 0; n < 200; ++n) {
        const int64_t t = next_reboot_time(late, day + 1800, random);
        EXPECT_GE(t, day + 1800);
        EXPECT_LT(t, day + 3600);
        const int64_t u = next_reboot_time(late, day + 12 * 3600, random);
        EXPECT_GE(u, day + 23 * 3600);
        EXPECT_LT(u, day + 25 * 3600);
    }
    EXPECT_EQ(next_reboot_time(*parse_reboot_policy("now"), now, random), now);
}

TEST(Channel, TheDevicesRecordSurvivesAndADamagedOneIsNamed) {
    Scratch s;
    EXPECT_EQ(load_channel_state(s / "channel.json").published, 0);
    ChannelState st;
    st.url = "https://u/stable.json";
    st.published = now;
    st.version = "2.0";
    st.result = "failed";
    st.code = ErrorCode::transfer;
    st.message = "gone";
    st.checked = now + 1;
    st.next_check = now + 100;
    save_channel_state(s / "state/channel.json", st);
    const ChannelState back = load_channel_state(s / "state/channel.json");
    EXPECT_EQ(back.url, st.url);
    EXPECT_EQ(back.published, now);
    EXPECT_EQ(back.code, ErrorCode::transfer);
    EXPECT_EQ(back.next_check, now + 100);
    write_text(s / "bad.json", "{\"url\": 1}");
    expect_error([&] { load_channel_state(s / "bad.json"); }, {"bad.json", "damaged"});
}

TEST(Channel, FetchedFromAServerOverTls) {
    Scratch s;
    TestPki pki(s / "pki");
    Nginx nginx(s / "nginx", pki);
    write_text(nginx.www() / "stable.json", signed_file(sample()));
    HttpSettings http;
    http.ca_bundle = pki / "root.pem";
    const ChannelIndex i = fetch_channel_index(nginx.https_url("stable.json"), http, keys / "update-ca.pem", now);
    EXPECT_EQ(i.version, "2.0");
    expect_code([&] { fetch_channel_index(nginx.https_url("beta.json"), http, keys / "update-ca.pem", now); }, ErrorCode::transfer, {"404"});
    // A server that sends megabytes is cut off at the limit.
    write_text(nginx.www() / "huge.json", std::string(4 << 20, ' '));
    expect_code([&] { fetch_channel_index(nginx.https_url("huge.json"), http, keys / "update-ca.pem", now); }, ErrorCode::bad_bundle,
                {"larger than"});
    // Plain http only when allowed; an untrusted server never.
    expect_code([&] { fetch_channel_index(nginx.http_url("stable.json"), http, keys / "update-ca.pem", now); }, ErrorCode::transfer);
    http.allow_http = true;
    EXPECT_EQ(fetch_channel_index(nginx.http_url("stable.json"), http, keys / "update-ca.pem", now).version, "2.0");
    http.ca_bundle = pki / "unknown-root.pem";
    expect_code([&] { fetch_channel_index(nginx.https_url("stable.json"), http, keys / "update-ca.pem", now); }, ErrorCode::transfer);
}
