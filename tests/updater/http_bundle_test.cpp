// Installs from a server: Debian's nginx on loopback (TLS with the test CA, Range on), and a
// fault-injecting proxy in front of it that cuts, stalls and corrupts at given bytes of the bundle.
#include "updater/http_bundle.hpp"

#include <fcntl.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <sstream>

#include "common/file.hpp"
#include "imager/delta.hpp"
#include "tests/support/engine_rig.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/pki.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t root_size = 4 << 20;  // 1024 blocks

struct HttpRig : Rig {
    TestPki pki{scratch / "pki"};
    Nginx nginx{scratch / "nginx", pki};
    std::vector<std::string> messages;
    std::vector<int> percents;
    HttpSettings http;

    HttpRig() {
        http.ca_bundle = pki / "root.pem";
        http.backoff_initial_ms = 5;
        http.backoff_max_ms = 20;
        http.stall_timeout_ms = 1000;
        engine().on_boot();
    }
    // The bundle of `version` on the server as NAME; its https URL.
    std::string serve(const std::string& version, const std::string& name = "update.cairn") {
        const fs::path bundle = fixture.bundle(version, "cairn-test", {}, root_size);
        fs::copy_file(bundle, nginx.www() / (name + ".new"), fs::copy_options::overwrite_existing);
        fs::rename(nginx.www() / (name + ".new"), nginx.www() / name);
        return nginx.https_url(name);
    }
    void install(const std::string& url) {
        engine().install_url(url, http, {}, [&](int p, const std::string& m) {
            percents.push_back(p);
            messages.push_back(m);
        });
    }
    // Slot b holds the version's root, tree and ESP.
    void expect_slot_b(const std::string& version) {
        const fs::path dir = scratch.path();
        for (const auto& [label, file] : {std::pair{"root_b", "root"}, {"root_b_verity", "verity-b"}, {"esp_b", "esp-b"}}) {
            const std::string want = payload(dir, version, file);
            EXPECT_TRUE(fixture.region(label, want.size()) == want) << label << " does not hold " << version << "'s " << file;
        }
    }
    Transfer transfer() {
        const UpdateStatus st = engine().status();
        if (!st.last || !st.last->transfer) {
            ADD_FAILURE() << "no transfer recorded";
            return {};
        }
        return *st.last->transfer;
    }
    uint64_t payload_bytes(const std::string& version) {
        uint64_t n = 0;
        for (const char* f : {"root", "verity-b", "esp-b"}) n += fs::file_size(scratch.path() / ("payloads-" + version) / f);
        return n;
    }
    // Where a payload sits in the served bundle.
    Payload where(const std::string& name) {
        BundleReader reader(nginx.www() / "update.cairn", fixture.trust_anchor);
        for (const Payload& p : reader.manifest().payloads)
            if (p.name == name) return p;
        ADD_FAILURE() << "no payload " << name;
        return {};
    }
};

constexpr uint64_t head_request = 128 << 10;  // what opening asks for (http_bundle.cpp)

}  // namespace

TEST(HttpInstall, StreamsABundleFromNginxOverTlsStraightIntoTheSlotAndReportsWhatMoved) {
    HttpRig r;
    const std::string url = r.serve("2.0");
    const std::string slot_a = r.fixture.region("root_a");
    r.install(url);
    r.expect_slot_b("2.0");
    EXPECT_EQ(r.fixture.region("root_a"), slot_a);
    EXPECT_EQ(r.boot.next(), Slot::b);
    EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::trial);
    EXPECT_EQ(r.percents.back(), 100);
    EXPECT_TRUE(std::is_sorted(r.percents.begin(), r.percents.end()));
    for (const std::string& m : r.messages)
        EXPECT_TRUE(m.rfind("check:", 0) == 0 || m.rfind("mark-bad:", 0) == 0 || m.rfind("write:", 0) == 0 || m.rfind("arm:", 0) == 0)
            << m;  // no verify step: nothing is read twice
    const Transfer t = r.transfer();
    EXPECT_EQ(t.payload_bytes, r.payload_bytes("2.0"));
    EXPECT_EQ(t.reused, 0u);  // slot a holds nothing of it
    EXPECT_GE(t.downloaded, t.payload_bytes);
    EXPECT_LE(t.downloaded, t.payload_bytes + head_request);
    // Every request was a Range request nginx answered with 206, and slot a's payloads never came.
    const std::string log = r.nginx.access_log();
    EXPECT_NE(log.find("GET /update.cairn 206 \"bytes="), std::string::npos) << log;
    EXPECT_EQ(log.find(" 200 "), std::string::npos) << log;
    const Payload esp_a = r.where("esp-a");
    EXPECT_EQ(log.find("bytes=" + std::to_string(esp_a.offset) + "-"), std::string::npos) << log;
}

TEST(HttpInstall, ConnectionsCutAtRandomBytesResumeWhereTheyStoppedAndFetchAlmostNothingTwice) {
    HttpRig r;
    r.http.allow_http = true;
    r.serve("2.0");
    FaultProxy proxy(r.nginx.http_port());
    const Payload root = r.where("root"), tree = r.where("root-verity-b"), esp = r.where("esp-b");
    std::mt19937_64 random(20261204);
    std::vector<uint64_t> cuts = {tree.offset + tree.size / 2, esp.offset + esp.size / 3};
    for (int i = 0; i < 6; ++i) cuts.push_back(root.offset + random() % root.size);
    for (uint64_t at : cuts) proxy.add(Fault{Fault::Kind::cut, at});
    r.install(proxy.url("update.cairn"));
    r.expect_slot_b("2.0");
    EXPECT_EQ(proxy.fired(), cuts.size());
    EXPECT_GT(proxy.connections(), cuts.size());
    // A cut costs at most the block it fell in (4 KiB) again: everything before it was checked and kept.
    const Transfer t = r.transfer();
    EXPECT_LE(t.downloaded, t.payload_bytes + head_request + cuts.size() * 4096) << "downloaded " << t.downloaded;
}

TEST(HttpInstall, AStalledServerIsLeftAndTheRangeFetchedAgain) {
    HttpRig r;
    r.http.allow_http = true;
    r.serve("2.0");
    FaultProxy proxy(r.nginx.http_port());
    const Payload root = r.where("root");
    proxy.add(Fault{Fault::Kind::stall, root.offset + root.size / 2, 1, 2500});  // longer than the 1 s stall timeout
    r.install(proxy.url("update.cairn"));
    r.expect_slot_b("2.0");
    EXPECT_EQ(proxy.fired(), 1u);
    EXPECT_GE(proxy.connections(), 2u);
}

TEST(HttpInstall, ACorruptedByteIsFetchedAgainAndNeverWritten) {
    HttpRig r;
    r.http.allow_http = true;
    r.serve("2.0");
    const Payload root = r.where("root");
    const uint64_t block = 700;
    {
        FaultProxy proxy(r.nginx.http_port());  // once: the block is fetched again and the install succeeds
        proxy.add(Fault{Fault::Kind::corrupt, root.offset + block * 4096 + 17});
        r.install(proxy.url("update.cairn"));
        r.expect_slot_b("2.0");
        EXPECT_EQ(proxy.fired(), 1u);
    }
    // Every time: refused after three tries, and the block was never written (on a fresh disk).
    HttpRig fresh;
    fresh.http.allow_http = true;
    fresh.serve("3.0");
    const Payload root3 = fresh.where("root");
    FaultProxy proxy(fresh.nginx.http_port());
    proxy.add(Fault{Fault::Kind::corrupt, root3.offset + block * 4096 + 17, -1});
    expect_code([&] { fresh.install(proxy.url("update.cairn")); }, ErrorCode::bad_payload, {"block 700", "3 times"});
    const std::string slot = fresh.fixture.region("root_b", root_size);
    EXPECT_EQ(slot.substr(block * 4096, 4096), std::string(4096, '\0'));  // as the fresh disk had it
    const std::string want = payload(fresh.scratch.path(), "3.0", "root");
    EXPECT_EQ(slot.substr(0, block * 4096), want.substr(0, block * 4096));  // what came before it was written
    EXPECT_EQ(fresh.engine().status().slots["b"].state, SlotState::installing);
    EXPECT_FALSE(fresh.boot.next());
    ASSERT_TRUE(fresh.engine().status().last);
    EXPECT_EQ(fresh.engine().status().last->code, ErrorCode::bad_payload);
}

TEST(HttpInstall, AnEspThatKeepsArrivingWrongIsRefusedWithNothingOfItWritten) {
    HttpRig r;
    r.http.allow_http = true;
    r.serve("2.0");
    const Payload esp = r.where("esp-b");
    FaultProxy proxy(r.nginx.http_port());
    proxy.add(Fault{Fault::Kind::corrupt, esp.offset + 5, -1});
    expect_code([&] { r.install(proxy.url("update.cairn")); }, ErrorCode::bad_payload, {"esp-b", "none of it was written"});
    EXPECT_EQ(r.fixture.region("esp_b", esp.size), std::string(esp.size, '\0'));
}

TEST(HttpInstall, AServerThatIgnoresRangeIsNamedAndTheSlotIsNotTouched) {
    HttpRig r;
    r.serve("2.0");
    const std::string slot_b = r.slot_b();
    expect_code([&] { r.install(r.nginx.https_url("norange/update.cairn")); }, ErrorCode::transfer, {"ignores Range", "answered 200"});
    EXPECT_EQ(r.slot_b(), slot_b);
    EXPECT_NE(r.engine().status().slots["b"].state, SlotState::installing);  // refused at check: never marked
}

TEST(HttpInstall, ABundleReplacedOnTheServerDuringTheInstallIsNamed) {
    HttpRig r;
    r.serve("2.0");
    const fs::path other = r.fixture.bundle("3.0", "cairn-test", {}, root_size * 2);  // another size: another ETag
    bool replaced = false;
    expect_code(
        [&] {
            r.engine().install_url(r.nginx.https_url("update.cairn"), r.http, {}, [&](int, const std::string& m) {
                if (!replaced && m.rfind("write:", 0) == 0) {
                    fs::copy_file(other, r.nginx.www() / "next.cairn");
                    fs::rename(r.nginx.www() / "next.cairn", r.nginx.www() / "update.cairn");
                    replaced = true;
                }
            });
        },
        ErrorCode::source_changed, {"changed on the server"});
    EXPECT_TRUE(replaced);
    EXPECT_FALSE(r.boot.next());
}

TEST(HttpInstall, UntrustedServersPlainHttpAndMissingFilesAreRefusedWithTheirReason) {
    HttpRig r;
    r.serve("2.0");
    r.http.ca_bundle = r.pki / "unknown-root.pem";
    expect_code([&] { r.install(r.nginx.https_url("update.cairn")); }, ErrorCode::transfer, {"certificate"});
    r.http.ca_bundle = r.pki / "root.pem";
    expect_code([&] { r.install(r.nginx.http_url("update.cairn")); }, ErrorCode::transfer, {"plain http is not allowed"});
    expect_code([&] { r.install(r.nginx.https_url("missing.cairn")); }, ErrorCode::transfer, {"answered HTTP 404"});
    r.http.max_attempts = 2;
    expect_code([&] { r.install("https://127.0.0.1:" + std::to_string(free_port()) + "/update.cairn?token=secret"); },
                ErrorCode::transfer, {"gave up after 2 failed requests"});
    EXPECT_FALSE(r.boot.next());
}

// Versions that share most of their blocks: 2.0 is 1.0 with three blocks changed, a run of 16
// blocks moved by one block, and one block zeroed; the running slot a holds 1.0.
TEST(HttpInstall, AnAdaptiveInstallFetchesOnlyTheBlocksTheDeviceDoesNotHave) {
    HttpRig r;
    r.fixture.root_bytes = [](const std::string& version, uint64_t size) {
        std::string bytes(size, '\0');
        std::mt19937_64 random(7);
        for (char& c : bytes) c = static_cast<char>(random());
        if (version == "2.0") {
            for (uint64_t b : {10, 500, 900}) bytes[b * 4096 + 99] ^= 1;
            bytes.replace(601 * 4096, 16 * 4096, bytes.substr(600 * 4096, 16 * 4096));
            std::fill_n(bytes.begin() + 1000 * 4096, 4096, '\0');
        }
        return bytes;
    };
    r.fixture.bundle("1.0", "cairn-test", {}, root_size);
    r.fixture.put("1.0", 'a');
    r.http.allow_http = true;
    r.serve("2.0");
    FaultProxy proxy(r.nginx.http_port());
    r.install(proxy.url("update.cairn"));
    r.expect_slot_b("2.0");
    const Transfer t = r.transfer();
    const uint64_t tree_and_esp = r.payload_bytes("2.0") - root_size;
    // Fetched: blocks 10, 500 and 900; the rest is copied (the moved run too) or zeroed.
    EXPECT_GE(t.reused, root_size - 8 * 4096);
    EXPECT_LE(t.downloaded, head_request + tree_and_esp + 8 * 4096) << t.downloaded;
}

// Changes scattered over the root (150 blocks apart from each other): their runs go to the server
// many to a request (multipart/byteranges), not one request each; a byte corrupted inside such an
// answer and a cut in the middle of one are taken up by single-range requests. A server that
// serves one range a request (S3, nginx max_ranges 1) is then asked one range at a time.
TEST(HttpInstall, ScatteredBlocksComeManyToARequestAndServersWithoutMultiRangeStillWork) {
    for (const char* location : {"", "onerange/"}) {
        SCOPED_TRACE(location);
        HttpRig r;
        r.fixture.root_bytes = [](const std::string& version, uint64_t size) {
            std::string bytes(size, '\0');
            std::mt19937_64 random(11);
            for (char& c : bytes) c = static_cast<char>(random());
            if (version == "2.0")
                for (uint64_t b = 3; b < 1024; b += 7) bytes[b * 4096 + 5] ^= 1;  // 146 runs of one block
            return bytes;
        };
        r.fixture.bundle("1.0", "cairn-test", {}, root_size);
        r.fixture.put("1.0", 'a');
        r.http.allow_http = true;
        r.serve("2.0");
        const Payload root = r.where("root");
        FaultProxy proxy(r.nginx.http_port());
        proxy.add(Fault{Fault::Kind::corrupt, root.offset + 10 * 4096 + 77});   // block 10: changed
        proxy.add(Fault{Fault::Kind::cut, root.offset + 500 * 4096 + 1000});   // block 500: changed
        r.install(proxy.url(std::string(location) + "update.cairn"));
        r.expect_slot_b("2.0");
        EXPECT_EQ(proxy.fired(), 2u);
        const Transfer t = r.transfer();
        EXPECT_LE(t.downloaded, head_request + r.payload_bytes("2.0") - root_size + 160 * 4096 + 64 * 1024) << t.downloaded;
        size_t requests = 0;
        std::istringstream log(r.nginx.access_log());
        for (std::string line; std::getline(log, line);) requests += line.find("update.cairn") != std::string::npos;
        if (*location == '\0') EXPECT_LT(requests, 20u) << r.nginx.access_log();  // 146 runs in 3 multi-range requests, and retries
        else EXPECT_GT(requests, 146u);  // one a run
    }
}

// A power cut in the middle: the next install finds the blocks already in slot b, checks them
// against the signed tree, and fetches only the rest.
TEST(HttpInstall, AnInstallCutShortIsResumedByTheNextOneFromWhatTheSlotHolds) {
    HttpRig r;
    r.http.allow_http = true;
    r.http.max_attempts = 1;
    r.serve("2.0");
    const Payload root = r.where("root");
    {
        FaultProxy proxy(r.nginx.http_port());
        proxy.add(Fault{Fault::Kind::cut, root.offset + root.size / 2 + 1234});
        expect_code([&] { r.install(proxy.url("update.cairn")); }, ErrorCode::transfer, {"gave up"});
    }
    EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::installing);
    r.reboot_into("1.0");  // the power came back on slot a
    r.http.max_attempts = 8;
    FaultProxy proxy(r.nginx.http_port());
    r.install(proxy.url("update.cairn"));
    r.expect_slot_b("2.0");
    const Transfer t = r.transfer();
    EXPECT_GE(t.reused, root.size / 2 - 4096);
    EXPECT_LE(t.downloaded, head_request + (t.payload_bytes - root.size) + root.size / 2 + 4096) << t.downloaded;
}

// The tree is taken hash block by hash block, each checked against the level above (the top one
// against the signed root hash): one that keeps arriving wrong refuses the bundle, and the tree
// partition is not written.
TEST(HttpInstall, AHashBlockThatKeepsArrivingWrongIsRefusedAndTheTreeNotWritten) {
    HttpRig r;
    r.http.allow_http = true;
    r.serve("2.0");
    const Payload tree = r.where("root-verity-b");
    FaultProxy proxy(r.nginx.http_port());
    proxy.add(Fault{Fault::Kind::corrupt, tree.offset + tree.size - 100, -1});  // in level 0
    expect_code([&] { r.install(proxy.url("update.cairn")); }, ErrorCode::bad_payload, {"root-verity-b", "hash block", "3 times"});
    EXPECT_EQ(r.fixture.region("root_b_verity", tree.size), std::string(tree.size, '\0'));
    EXPECT_EQ(r.fixture.region("root_b", root_size), std::string(root_size, '\0'));
}

// Deltas (updater/delta.hpp): slot a runs 1.0; 2.0 changes scattered blocks, adds new ones and
// moves a run. `cairn delta` of the two bundles sits beside 2.0 on the server.
namespace {

struct DeltaRig : HttpRig {
    fs::path old_bundle;
    DeltaRig() {
        fixture.root_bytes = [](const std::string& version, uint64_t size) {
            std::string bytes(size, '\0');
            std::mt19937_64 random(11);
            for (char& c : bytes) c = static_cast<char>(random());
            if (version == "2.0") {
                for (uint64_t b : {3, 250, 700}) bytes[b * 4096 + 5] ^= 1;
                std::string text;  // new data, of the kind files are made of: it compresses
                for (int line = 0; text.size() < 24 * 4096; ++line) text += "release 2.0 adds line " + std::to_string(line) + "\n";
                bytes.replace(300 * 4096, 24 * 4096, text.substr(0, 24 * 4096));
                bytes.replace(801 * 4096, 16 * 4096, bytes.substr(800 * 4096, 16 * 4096));
            }
            return bytes;
        };
        fixture.esp_bytes = [](const std::string& version, char slot) {  // a UKI whose command line names version and slot
            std::mt19937_64 random(5);
            std::string bytes(256 * 1024 + 1000, '\0');
            for (char& c : bytes) c = static_cast<char>(random());
            bytes.replace(70000, 30, "cairn.version=" + version + " slot=" + slot);
            return bytes;
        };
        old_bundle = fixture.bundle("1.0", "cairn-test", {}, root_size);
        fixture.put("1.0", 'a');
        config.release.build_id = "test-1.0";
    }
    // What an install fetches of the bundle at the least: its signed head (the first request asks
    // for 4 KiB).
    uint64_t head_bytes() {
        const std::string h = read_file(nginx.www() / "update.cairn").substr(0, bundle_header_size);
        const BundleHeader b = decode_header(h, "bundle");
        return std::max<uint64_t>(4096, bundle_header_size + b.manifest_size + b.signature_size);
    }
    // The delta from 1.0 to the served 2.0, beside it as devices look for it.
    fs::path make_delta_file() {
        imager::DeltaOptions o;
        o.from = old_bundle;
        o.to = nginx.www() / "update.cairn";
        o.level = 3;
        return imager::make_delta(o).file;
    }
};

// The first frame of `payload`'s sections in a delta file, with a byte flipped in its middle.
void damage_section(const fs::path& delta, const std::string& payload) {
    const std::string head = read_file(delta);
    const DeltaTable t = DeltaTable::parse(std::string_view(head).substr(delta_header_size, decode_delta_header(head, "delta")), "delta");
    const std::vector<const DeltaSection*> s = t.of(payload);
    ASSERT_FALSE(s.empty()) << payload;
    UniqueFd fd = open_file(delta, O_RDWR);
    const uint64_t at = s.front()->at + s.front()->bytes / 2;
    char c;
    pread_exact(fd.get(), &c, 1, at, "delta");
    c ^= 0x55;
    pwrite_exact(fd.get(), &c, 1, at, "delta");
}

}  // namespace

TEST(HttpInstall, WithADeltaFromTheRunningBuildNothingButTheHeadComesFromTheBundle) {
    DeltaRig r;
    const std::string url = r.serve("2.0");
    const fs::path delta = r.make_delta_file();
    EXPECT_EQ(delta, r.nginx.www() / "update.cairn.from-test-1.0");
    r.install(url);
    r.expect_slot_b("2.0");
    const Transfer t = r.transfer();
    EXPECT_GT(t.delta, 0u);
    EXPECT_LE(t.delta, fs::file_size(delta));  // slot a's tree and ESP sections are not fetched
    // Of the bundle, only its signed head: no payload byte.
    EXPECT_EQ(t.downloaded - t.delta, r.head_bytes()) << t.downloaded;
    EXPECT_NE(std::find_if(r.messages.begin(), r.messages.end(), [](const std::string& m) { return m.find("from the delta") != std::string::npos; }),
              r.messages.end());

    // The same install without the delta fetches the changed blocks, tree and ESP from the bundle.
    DeltaRig plain;
    plain.serve("2.0");
    plain.install(plain.nginx.https_url("update.cairn"));
    plain.expect_slot_b("2.0");
    EXPECT_EQ(plain.transfer().delta, 0u);
    EXPECT_GT(plain.transfer().downloaded, t.downloaded + 16 * 4096);  // 27 blocks, tree and ESP chunks
}

TEST(HttpInstall, ADamagedDeltaIsDroppedAndTheBundleGivesWhatItCouldNot) {
    for (const char* payload : {"root", "root-verity-b", "esp-b"}) {
        SCOPED_TRACE(payload);
        DeltaRig r;
        const std::string url = r.serve("2.0");
        damage_section(r.make_delta_file(), payload);
        r.install(url);
        r.expect_slot_b("2.0");  // every block checked: the damage reached nothing
        const Transfer t = r.transfer();
        EXPECT_GT(t.delta, 0u);
        EXPECT_GT(t.downloaded - t.delta, r.head_bytes()) << "the bundle gave what the delta could not";
    }
}

TEST(HttpInstall, ADeltaForAnotherBuildOrBundleIsNotUsed) {
    {  // the device runs a build the server has no delta from: a 404, and the install goes on
        DeltaRig r;
        r.config.release.build_id = "test-0.9";
        const std::string url = r.serve("2.0");
        r.make_delta_file();
        r.install(url);
        r.expect_slot_b("2.0");
        EXPECT_EQ(r.transfer().delta, 0u);
    }
    {  // a delta named for this build but made from another: its table gives it away
        DeltaRig r;
        const std::string url = r.serve("2.0");
        const fs::path delta = r.make_delta_file();
        r.config.release.build_id = "test-0.9";
        fs::rename(delta, r.nginx.www() / "update.cairn.from-test-0.9");
        r.install(url);
        r.expect_slot_b("2.0");
        EXPECT_LE(r.transfer().delta, 16u << 10);  // its header and table only
    }
    {  // a delta to another bundle (3.0) beside 2.0
        DeltaRig r;
        r.serve("3.0");
        const fs::path delta = r.make_delta_file();
        const std::string url = r.serve("2.0");
        ASSERT_TRUE(fs::exists(delta));
        r.install(url);
        r.expect_slot_b("2.0");
        EXPECT_LE(r.transfer().delta, 16u << 10);
    }
    {  // deltas turned off in update.toml: not even looked for
        DeltaRig r;
        r.http.deltas = false;
        const std::string url = r.serve("2.0");
        r.make_delta_file();
        r.install(url);
        r.expect_slot_b("2.0");
        EXPECT_EQ(r.transfer().delta, 0u);
        EXPECT_EQ(r.nginx.access_log().find(".from-"), std::string::npos);
    }
}
