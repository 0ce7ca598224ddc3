// `cairn publish`: the bundle and its channel's signed index in a folder, as devices read them.
#include "imager/publish.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <ctime>
#include <functional>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/engine_rig.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Publishing {
    Scratch s;
    UpdateFixture f{s.path()};
    imager::PublishOptions o;
    Publishing() {
        o.bundle = f.bundle("2.0");
        o.out_dir = s / "site";
        o.key = f.key;
        o.cert = f.cert;
        o.trust_anchor = f.trust_anchor;
    }
    ChannelIndex device_reads(const std::string& channel = "stable") {
        return open_channel_file(read_file(o.out_dir / (channel + ".json")), f.trust_anchor, static_cast<int64_t>(std::time(nullptr)), "index");
    }
};

}  // namespace

TEST(Publish, WritesTheBundleAndASignedIndexThatDevicesAccept) {
    Publishing p;
    const imager::PublishResult r = imager::publish(p.o);
    EXPECT_EQ(r.index_file, p.o.out_dir / "stable.json");
    EXPECT_EQ(r.bundle_file, p.o.out_dir / p.o.bundle.filename());
    EXPECT_EQ(read_file(r.bundle_file), read_file(p.o.bundle));
    const ChannelIndex i = p.device_reads();
    const BundleReader bundle(r.bundle_file, p.f.trust_anchor);
    EXPECT_EQ(i.channel, "stable");
    EXPECT_EQ(i.compatible, "cairn-test");
    EXPECT_EQ(i.version, "2.0");
    EXPECT_EQ(i.build_id, bundle.manifest().build_id);
    EXPECT_EQ(i.bundle, p.o.bundle.filename().string());
    EXPECT_EQ(i.size, fs::file_size(p.o.bundle));
    EXPECT_FALSE(i.expires);
    EXPECT_EQ(resolve_bundle_url("https://u.example/site/stable.json", i.bundle), "https://u.example/site/" + i.bundle);
    // Nothing half-written is left beside them.
    for (const auto& e : fs::directory_iterator(p.o.out_dir))
        EXPECT_TRUE(e.path() == r.index_file || e.path() == r.bundle_file) << e.path();
}

TEST(Publish, EachIndexIsPublishedAfterTheOneItReplaces) {
    Publishing p;
    p.o.now = 2000000000;
    imager::publish(p.o);
    const int64_t first = json::parse(read_file(p.o.out_dir / "stable.json"))["signed"]["published"];
    EXPECT_EQ(first, 2000000000);
    // A second publish in the same second, or from a machine whose clock is behind, still moves
    // forward: devices refuse an index older than one they accepted.
    p.o.bundle = p.f.bundle("2.1");
    p.o.now = 1999999000;
    imager::publish(p.o);
    const json second = json::parse(read_file(p.o.out_dir / "stable.json"))["signed"];
    EXPECT_EQ(second["published"], first + 1);
    EXPECT_EQ(second["version"], "2.1");
}

TEST(Publish, AnotherChannelAUrlAndAnExpiry) {
    Publishing p;
    p.o.channel = "beta";
    p.o.url = "https://cdn.example/bundles/test-2.0.cairn";
    p.o.expires_days = 30;
    const imager::PublishResult r = imager::publish(p.o);
    EXPECT_TRUE(r.bundle_file.empty());
    EXPECT_FALSE(fs::exists(p.o.out_dir / p.o.bundle.filename()));  // it lives on the CDN
    const ChannelIndex i = p.device_reads("beta");
    EXPECT_EQ(i.bundle, p.o.url);
    ASSERT_TRUE(i.expires);
    EXPECT_EQ(*i.expires, i.published + 30 * 86400);
}

TEST(Publish, RefusesWhatDevicesWouldRefuse) {
    Publishing p;
    auto attempt = [&](const std::function<void(imager::PublishOptions&)>& edit, const std::vector<std::string>& parts) {
        imager::PublishOptions o = p.o;
        edit(o);
        expect_error([&] { imager::publish(o); }, parts);
        EXPECT_FALSE(fs::exists(o.out_dir / (o.channel + ".json"))) << "an index was written";
    };
    attempt([&](auto& o) { o.channel = "../stable"; }, {"channel name"});
    attempt([&](auto& o) { o.channel = ""; }, {"channel name"});
    attempt([&](auto& o) { o.bundle = p.s / "absent.cairn"; }, {"absent.cairn", "no such file"});
    attempt([&](auto& o) { o.url = "ftp://x/b.cairn"; }, {"only http:// and https://"});
    attempt([&](auto& o) { o.url = "../b.cairn"; }, {".."});
    // A signer that may not sign bundles, and one the device does not trust.
    TestPki pki(p.s / "pki");
    make_signer(p.s.path(), "tls", pki / "root.pem", pki / "root.key", "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    attempt([&](auto& o) { o.key = p.s / "tls.key", o.cert = p.s / "tls.pem"; }, {"tls.pem"});
    make_signer(p.s.path(), "stranger", pki / "root.pem", pki / "root.key", bundle_signer_extensions());
    attempt([&](auto& o) { o.key = p.s / "stranger.key", o.cert = p.s / "stranger.pem"; }, {"stable.json", "stranger"});
    // A bundle cut short, or altered after signing.
    const std::string bytes = read_file(p.o.bundle);
    write_text(p.s / "short.cairn", bytes.substr(0, bytes.size() - 4096));
    attempt([&](auto& o) { o.bundle = p.s / "short.cairn"; }, {"short.cairn", "cut short"});
    std::string altered = bytes;
    altered[bundle_header_size + 20] ^= 1;  // inside the signed manifest
    write_text(p.s / "altered.cairn", altered);
    attempt([&](auto& o) { o.bundle = p.s / "altered.cairn"; }, {"altered.cairn"});
}

TEST(Publish, TheCommandLine) {
    Publishing p;
    RunResult r = run({CAIRN_BINARY, "publish", p.o.bundle.string(), "-o", p.o.out_dir.string(), "--key", p.f.key.string(), "--cert",
                       p.f.cert.string(), "--channel", "lts", "--expires", "7", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["signed"]["channel"], "lts");
    EXPECT_EQ(p.device_reads("lts").version, "2.0");
    r = run({CAIRN_BINARY, "publish", p.o.bundle.string(), "-o", p.o.out_dir.string(), "--key", p.f.key.string(), "--cert", p.f.cert.string(),
             "--expires", "soon"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--expires"), std::string::npos) << r.err;
    r = run({CAIRN_BINARY, "publish", "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("--channel NAME"), std::string::npos) << r.out;
}
