#include "imager/update.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/verity.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"
#include "updater/engine.hpp"
#include "updater/fake_boot_control.hpp"
#include "updater/signature.hpp"

using namespace cairn;
using namespace cairn::test;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// What `cairn build` leaves for `cairn bundle`: manifest.json naming the root image, each slot's
// verity tree and ESP image, and the [update] facts.
fs::path fake_build(const fs::path& dir, const std::string& version, bool debug = false) {
    fs::create_directories(dir);
    write_random(dir / "root.img", 1 << 20, 7);
    json slots = json::object(), esp = json::object();
    for (const char* slot : {"a", "b"}) {
        verity::Params p;
        p.data_blocks = (1 << 20) / 4096;
        p.salt = std::vector<uint8_t>(32, static_cast<uint8_t>(slot[0]));
        const std::string tree = std::string("root_") + slot + "_verity.img";
        UniqueFd data = open_file(dir / "root.img", O_RDONLY);
        UniqueFd hash = open_file(dir / tree, O_RDWR | O_CREAT | O_TRUNC, 0644);
        verity::Result r = verity::format(data.get(), 0, hash.get(), 0, p, 1);
        slots[slot] = {{"verity",
                        {{"artifact", tree}, {"root_hash", to_hex(r.root_hash)}, {"salt", to_hex(p.salt)},
                         {"data_block_size", 4096}, {"hash_block_size", 4096}, {"data_blocks", p.data_blocks}}}};
        write_random(dir / (std::string("esp_") + slot + ".img"), 70000, slot[0]);
        esp[slot] = {{"file", std::string("esp_") + slot + ".img"}};
    }
    json m = {{"source_date_epoch", 1700000000},
              {"rootfs", {{"image", "root.img"}}},
              {"slots", slots},
              {"debug", debug},
              {"update", {{"compatible", "cairn-test"}, {"version", version}, {"build_id", "b-" + version}, {"etc", json::object()}, {"esp", esp},
                          {"trust_anchor", read_file(source_dir() / "recipes/keys/update-ca.pem")}}}};
    write_text(dir / "manifest.json", m.dump(1));
    return dir;
}

// The reference values a build with [boot] records in its manifest.json.
json reference_json(const std::string& version) {
    const std::string h(64, '7');
    return {{"format", 1}, {"image", "cairn-test"}, {"version", version}, {"uki_signer_certificate", h},
            {"slots", {{{"slot", "a"}, {"kernel_release", "6.1.0-57-cloud-amd64"}, {"uki_authenticode", h}, {"pcr11", {h, h}}, {"pcr9", h},
                        {"cmdline_event", h}, {"initrd_event", h}}}}};
}

}  // namespace

// `cairn bundle` with the test signer makes a bundle the updater installs: signature (with the
// bundle-signing EKU), manifest, the trees' superblocks and the root's sha256 all agree.
TEST(Bundle, WhatCairnBundleMakesInstalls) {
    Scratch s;
    UpdateFixture f(s.path());
    imager::BundleOptions o;
    o.build_dir = fake_build(s / "build", "2.0");
    o.out = s / "v2.cairn";
    o.key = f.key;
    o.cert = f.cert;
    json m = imager::make_bundle(o);
    EXPECT_EQ(m["version"], "2.0");
    EXPECT_EQ(m["created"], 1700000000);

    updater::FakeBootControl boot;
    updater::EngineConfig config;
    config.disk = f.disk;
    config.state_file = s / "state/status.json";
    config.trust_anchor = f.trust_anchor;
    config.etc_upper = s / "etc-upper";
    config.boot_id_file = s / "boot_id";
    write_text(config.boot_id_file, "boot-1\n");
    config.release.compatible = "cairn-test";
    config.release.version = "2.0-rc1";
    updater::Engine engine(boot, config);
    engine.on_boot();
    engine.install(o.out, {}, {});
    EXPECT_EQ(boot.next(), updater::Slot::b);
    EXPECT_EQ(f.region("root_b", 1 << 20), read_file(s / "build/root.img"));
}

// The ESPs carry a chunk index unless --no-chunk-index (for updaters that predate it): the
// manifest then has no field an older updater does not know, and the bundle still installs.
TEST(Bundle, TheEspChunkIndexCanBeLeftOutForOlderUpdaters) {
    Scratch s;
    UpdateFixture f(s.path());
    imager::BundleOptions o;
    o.build_dir = fake_build(s / "build", "2.0");
    o.key = f.key;
    o.cert = f.cert;
    o.out = s / "indexed.cairn";
    json m = imager::make_bundle(o);
    for (const json& p : m["payloads"]) {
        if (p["role"] == "esp") {
            EXPECT_TRUE(p.contains("chunks")) << p.dump();
        }
    }
    o.out = s / "plain.cairn";
    o.no_chunk_index = true;
    m = imager::make_bundle(o);
    for (const json& p : m["payloads"]) EXPECT_FALSE(p.contains("chunks")) << p.dump();
    const updater::BundleReader plain(o.out, f.trust_anchor);
    for (const updater::Payload& p : plain.manifest().payloads) EXPECT_TRUE(p.chunks.empty()) << p.name;
    RunResult r = run({CAIRN_BINARY, "bundle", o.build_dir.string(), "-o", (s / "cli.cairn").string(), "--key", f.key.string(), "--cert",
                       f.cert.string(), "--no-chunk-index", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.find("\"chunks\""), std::string::npos);
}

// The bundle's signed manifest carries the build's reference values; the updater installs it,
// and its reader hands the document to whoever verifies boots of the new slot.
TEST(Bundle, CairnBundleCarriesTheBuildsReferenceValues) {
    Scratch s;
    UpdateFixture f(s.path());
    imager::BundleOptions o;
    o.build_dir = fake_build(s / "build", "2.0");
    json build = json::parse(read_file(s / "build/manifest.json"));
    build["reference"] = reference_json("2.0");
    write_text(s / "build/manifest.json", build.dump(1));
    o.out = s / "v2.cairn";
    o.key = f.key;
    o.cert = f.cert;
    json m = imager::make_bundle(o);
    EXPECT_EQ(m["reference"], reference_json("2.0"));
    updater::BundleReader reader(o.out, f.trust_anchor);
    ASSERT_TRUE(reader.reference().has_value());
    EXPECT_EQ(json::parse(attestation::to_json(*reader.reference())), reference_json("2.0"));

    updater::FakeBootControl boot;
    updater::EngineConfig config;
    config.disk = f.disk;
    config.state_file = s / "state/status.json";
    config.trust_anchor = f.trust_anchor;
    config.etc_upper = s / "etc-upper";
    config.boot_id_file = s / "boot_id";
    write_text(config.boot_id_file, "boot-1\n");
    config.release.compatible = "cairn-test";
    config.release.version = "1.0";
    updater::Engine engine(boot, config);
    engine.on_boot();
    engine.install(o.out, {}, {});
    EXPECT_EQ(boot.next(), updater::Slot::b);

    // A broken reference in the build's manifest makes no bundle.
    build["reference"]["slots"][0]["pcr9"] = "00";
    write_text(s / "build/manifest.json", build.dump(1));
    o.out = s / "bad.cairn";
    expect_error([&] { imager::make_bundle(o); }, {(s / "build/manifest.json").string() + ": reference", "pcr9"});
    EXPECT_FALSE(fs::exists(o.out));
}

// A certificate that devices would refuse makes no bundle: the error names it, before any work.
TEST(Bundle, CairnBundleRefusesASignerWithoutTheBundleSigningUsage) {
    Scratch s;
    const fs::path keys = source_dir() / "recipes/keys";
    make_signer(s.path(), "www.example", keys / "update-ca.pem", keys / "update-ca.key",
                "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n");
    imager::BundleOptions o;
    o.build_dir = fake_build(s / "build", "2.0");
    o.out = s / "v2.cairn";
    o.key = s / "www.example.key";
    o.cert = s / "www.example.pem";
    expect_error([&] { imager::make_bundle(o); },
                 {"www.example.pem", "CN=www.example", "lacks the Cairn bundle-signing extended key usage", "devices would refuse"});
    EXPECT_FALSE(fs::exists(o.out));
}

// A signer that does not chain to the build's trust anchor (the image's /usr/share/cairn/update-ca.pem)
// makes no bundle: the device would refuse it with the same words.
TEST(Bundle, CairnBundleRefusesASignerOutsideTheImagesTrustAnchor) {
    Scratch s;
    run_checked({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                 (s / "other-ca.key").string(), "-out", (s / "other-ca.pem").string(), "-subj", "/CN=Some other CA", "-days", "3650"});
    make_signer(s.path(), "stranger", s / "other-ca.pem", s / "other-ca.key", bundle_signer_extensions());
    imager::BundleOptions o;
    o.build_dir = fake_build(s / "build", "2.0");
    o.out = s / "v2.cairn";
    o.key = s / "stranger.key";
    o.cert = s / "stranger.pem";
    expect_error([&] { imager::make_bundle(o); },
                 {"stranger.pem", "the signer's certificate \"CN=stranger\" does not chain to the trust anchor /usr/share/cairn/update-ca.pem",
                  "devices running the build in " + (s / "build").string() + " would refuse the bundle"});
    EXPECT_FALSE(fs::exists(o.out));
    for (const auto& e : fs::directory_iterator(s.path())) EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

    // The device says the same about such a bundle (made here with the stranger's CA as the anchor).
    json m = json::parse(read_file(o.build_dir / "manifest.json"));
    m["update"]["trust_anchor"] = read_file(s / "other-ca.pem");
    write_text(o.build_dir / "manifest.json", m.dump(1));
    imager::make_bundle(o);
    expect_error([&] { updater::BundleReader(o.out, source_dir() / "recipes/keys/update-ca.pem"); },
                 {"the signer's certificate \"CN=stranger\" does not chain to the trust anchor"});
}

// A debug build (a root shell on the console) is bundled only with allow_debug (--allow-debug).
TEST(Bundle, CairnBundleRefusesADebugBuildUnlessAllowed) {
    Scratch s;
    UpdateFixture f(s.path());
    imager::BundleOptions o;
    o.build_dir = fake_build(s / "build", "2.0", true);
    o.out = s / "v2.cairn";
    o.key = f.key;
    o.cert = f.cert;
    expect_error([&] { imager::make_bundle(o); }, {(s / "build").string(), "a debug build", "--allow-debug"});
    EXPECT_FALSE(fs::exists(o.out));
    o.allow_debug = true;
    imager::make_bundle(o);
    EXPECT_TRUE(fs::exists(o.out));

    // A build from before the manifest said so: its kernel command line does.
    json m = json::parse(read_file(o.build_dir / "manifest.json"));
    m.erase("debug");
    m["uki"] = {{"a", {{"cmdline", "console=ttyS0 cairn.slot=a cairn.debug=shell"}}}};
    write_text(o.build_dir / "manifest.json", m.dump(1));
    o.allow_debug = false;
    expect_error([&] { imager::make_bundle(o); }, {"a debug build", "--allow-debug"});
}
