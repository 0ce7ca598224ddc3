// `cairn inspect` on what people actually give it: images cut short, empty files, build folders,
// bundles (shown and their signature checked), and images whose build says what they are.
#include "imager/inspect.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/esp.hpp"
#include "imager/uki.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using cairn::imager::InspectOptions;
namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(Inspect, SaysWhatIsReallyWrongWithThePath) {
    Scratch s;
    expect_error([&] { imager::inspect(s / "none.raw", {}); }, {(s / "none.raw").string(), "no such file"});

    write_text(s / "empty.raw", "");
    expect_error([&] { imager::inspect(s / "empty.raw", {}); }, {(s / "empty.raw").string(), "an empty file (0 bytes)"});

    fs::create_directories(s / "out");
    expect_error([&] { imager::inspect(s / "out", {}); }, {(s / "out").string(), "is a directory"});
    write_text(s / "out/disk.raw", "");
    expect_error([&] { imager::inspect(s / "out", {}); }, {"is a directory", "cairn inspect " + (s / "out/disk.raw").string()});

    write_text(s / "notes.txt", std::string(100000, 'x'));
    expect_error([&] { imager::inspect(s / "notes.txt", {}); }, {(s / "notes.txt").string(), "no valid GPT"});
}

TEST(Inspect, ATruncatedImageSaysHowMuchIsMissing) {
    Scratch s;
    fs::create_directories(s / "fixture");
    UpdateFixture f(s / "fixture");
    const uint64_t full = fs::file_size(f.disk);
    run_checked({"cp", "--sparse=always", f.disk.string(), (s / "cut.raw").string()});
    fs::resize_file(s / "cut.raw", full / 2);
    expect_error([&] { imager::inspect(s / "cut.raw", {}); },
                 {(s / "cut.raw").string(), "truncated", std::to_string(full / 2) + " bytes", std::to_string(full) + " bytes"});
    // Cut short by less than the backup table: still the size, not "both copies are damaged".
    fs::resize_file(s / "cut.raw", full - 512);
    expect_error([&] { imager::inspect(s / "cut.raw", {}); }, {"truncated", std::to_string(full - 512) + " bytes"});
}

TEST(Inspect, ShowsTheImagesNameAndVersionFromItsBuild) {
    Scratch s;
    fs::create_directories(s / "fixture");
    UpdateFixture f(s / "fixture");
    fs::create_directories(s / "out");
    run_checked({"cp", "--sparse=always", f.disk.string(), (s / "out/disk.raw").string()});
    write_text(s / "out/manifest.json",
               json{{"recipe", {{"name", "Cairn test"}, {"version", "4.5.6"}, {"compatible", "cairn-test"}}}, {"debug", true}}.dump());
    imager::InspectResult r = imager::inspect(s / "out/disk.raw", {});
    EXPECT_EQ(r.report["kind"], "image");
    EXPECT_EQ(r.report["name"], "Cairn test");
    EXPECT_EQ(r.report["version"], "4.5.6");
    EXPECT_EQ(r.report["debug"], true);
    const std::string text = imager::format_report(r.report);
    EXPECT_NE(text.find("Cairn test 4.5.6 (cairn-test), debug build"), std::string::npos) << text;
}

TEST(Inspect, ShowsABundlesManifestAndChecksItsSignature) {
    Scratch s;
    fs::create_directories(s / "fixture");
    UpdateFixture f(s / "fixture");
    const fs::path bundle = f.bundle("2.0");
    imager::InspectResult r = imager::inspect(bundle, {});
    EXPECT_TRUE(r.ok) << r.report.dump(2);
    EXPECT_EQ(r.report["kind"], "bundle");
    EXPECT_EQ(r.report["version"], "2.0");
    EXPECT_EQ(r.report["compatible"], "cairn-test");
    EXPECT_EQ(r.report["signature"]["ok"], true);
    EXPECT_EQ(r.report["signature"]["signers"][0]["subject"].get<std::string>().find("CN="), 0u);
    EXPECT_TRUE(r.report["signature"]["trust_anchor"].is_null());
    ASSERT_TRUE(r.report["payloads"].is_array());
    EXPECT_GE(r.report["payloads"].size(), 5u);
    for (const auto& p : r.report["payloads"]) EXPECT_TRUE(p["ok"].get<bool>()) << p.dump();
    const std::string text = imager::format_report(r.report);
    EXPECT_NE(text.find("bundle: cairn-test 2.0"), std::string::npos) << text;
    EXPECT_NE(text.find("signed by"), std::string::npos) << text;
    EXPECT_NE(text.find("root-verity-a"), std::string::npos) << text;

    // Against the trust anchor: the test CA signs it; a stranger's CA does not.
    InspectOptions o;
    o.trust_anchor = f.trust_anchor;
    r = imager::inspect(bundle, o);
    EXPECT_TRUE(r.ok) << r.report.dump(2);
    EXPECT_EQ(r.report["signature"]["trusted"], true);
    run_checked({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                 (s / "other-ca.key").string(), "-out", (s / "other-ca.pem").string(), "-subj", "/CN=Some other CA", "-days", "3650"});
    o.trust_anchor = s / "other-ca.pem";
    r = imager::inspect(bundle, o);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.report["signature"]["trusted"], false);
    EXPECT_NE(r.report["signature"]["problem"].get<std::string>().find("does not chain to the trust anchor"), std::string::npos)
        << r.report.dump(2);
    // A build folder as the anchor: its manifest's update.trust_anchor.
    fs::create_directories(s / "build");
    write_text(s / "build/manifest.json", json{{"update", {{"trust_anchor", read_file(f.trust_anchor)}}}}.dump());
    o.trust_anchor = s / "build";
    EXPECT_TRUE(imager::inspect(bundle, o).ok);

    // A flipped payload byte and a flipped manifest byte are found.
    run_checked({"cp", bundle.string(), (s / "flipped.cairn").string()});
    {
        UniqueFd fd = open_file(s / "flipped.cairn", O_RDWR);
        const uint64_t at = fs::file_size(s / "flipped.cairn") - 100;
        char c = 0;
        pread_exact(fd.get(), &c, 1, at, "bundle");
        c = static_cast<char>(c ^ 1);
        pwrite_exact(fd.get(), &c, 1, at, "bundle");
    }
    r = imager::inspect(s / "flipped.cairn", {});
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.report["signature"]["ok"], true);
    bool some_bad = false;
    for (const auto& p : r.report["payloads"]) some_bad = some_bad || !p["ok"].get<bool>();
    EXPECT_TRUE(some_bad) << r.report.dump(2);
    run_checked({"cp", bundle.string(), (s / "forged.cairn").string()});
    {
        UniqueFd fd = open_file(s / "forged.cairn", O_RDWR);
        std::string head(200, '\0');
        pread_exact(fd.get(), head.data(), head.size(), 0, "bundle");
        const size_t at = head.find("2.0");
        ASSERT_NE(at, std::string::npos);
        pwrite_exact(fd.get(), "9", 1, at, "bundle");
    }
    r = imager::inspect(s / "forged.cairn", {});
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.report["signature"]["ok"], false);
    EXPECT_NE(r.report["signature"]["problem"].get<std::string>().find("does not match the manifest"), std::string::npos)
        << r.report.dump(2);
}

// Without its build's manifest, the name and version come from the os-release in the first slot's
// unified kernel image (the .osrel section systemd-stub reads).
TEST(Inspect, ShowsTheNameAndVersionFromTheUkiWithoutAManifest) {
    if (!fs::exists(imager::UkiParts{}.stub)) GTEST_SKIP() << imager::UkiParts{}.stub << " is missing (install systemd-boot-efi)";
    Scratch s;
    fs::create_directories(s / "fixture");
    UpdateFixture f(s / "fixture");
    write_random(s / "vmlinuz", 4096, 3);
    write_text(s / "initrd.img", "not really an initrd\n");
    imager::UkiParts parts;
    parts.kernel = s / "vmlinuz";
    parts.initrd = s / "initrd.img";
    parts.cmdline = "console=ttyS0";
    parts.os_release = "ID=cairn\nNAME=\"Cairn widget\"\nVERSION_ID=7.8.9\nPRETTY_NAME=\"Cairn widget 7.8.9\"\n";
    imager::assemble_uki(parts, s / "uki.efi");
    imager::make_esp(s / "esp.img", 2 << 20, "ESP_A", 0x1234, {{"EFI/BOOT/BOOTX64.EFI", s / "uki.efi"}}, 1700000000);
    const fs::path disk = s / "disk.raw";
    run_checked({"cp", "--sparse=always", f.disk.string(), disk.string()});
    {
        const std::string esp = read_file(s / "esp.img");
        UniqueFd fd = open_file(disk, O_RDWR);
        pwrite_exact(fd.get(), esp.data(), esp.size(), 1 << 20, "disk");  // esp_a starts at 1 MiB
    }
    imager::InspectResult r = imager::inspect(disk, {});
    EXPECT_EQ(r.report["name"], "Cairn widget");
    EXPECT_EQ(r.report["version"], "7.8.9");
    EXPECT_NE(imager::format_report(r.report).find("Cairn widget 7.8.9"), std::string::npos) << imager::format_report(r.report);
}

namespace {

attestation::ReferenceDocument sample_reference(const std::string& version) {
    attestation::ReferenceDocument doc;
    doc.image = "cairn-test";
    doc.version = version;
    doc.uki_signer_certificate.fill(0xc1);
    for (const char* slot : {"a", "b"}) {
        attestation::SlotReference r;
        r.slot = slot;
        r.kernel_release = "6.1.0-57-cloud-amd64";
        r.uki_authenticode.fill(slot[0] == 'a' ? 0xa4 : 0xb4);
        attestation::Sha256 stub{}, ready{};
        stub.fill(0x11);
        ready.fill(0x12);
        r.pcr11 = {stub, ready};
        r.pcr9.fill(0x99);
        r.cmdline_event.fill(0xcc);
        r.initrd_event.fill(0xdd);
        doc.slots.push_back(r);
    }
    return doc;
}

}  // namespace

// The reference values: from the build's manifest for an image, from the signed manifest for a
// bundle; as text and in --json.
TEST(Inspect, ShowsTheReferenceValues) {
    Scratch s;
    fs::create_directories(s / "fixture");
    UpdateFixture f(s / "fixture");
    fs::create_directories(s / "out");
    run_checked({"cp", "--sparse=always", f.disk.string(), (s / "out/disk.raw").string()});
    const json reference = json::parse(attestation::to_json(sample_reference("4.5.6")));
    write_text(s / "out/manifest.json", json{{"recipe", {{"name", "Cairn test"}, {"version", "4.5.6"}}}, {"reference", reference}}.dump());
    imager::InspectResult r = imager::inspect(s / "out/disk.raw", {});
    EXPECT_EQ(r.report["reference"], reference);
    std::string text = imager::format_report(r.report);
    EXPECT_NE(text.find("reference values (cairn-test 4.5.6)"), std::string::npos) << text;
    EXPECT_NE(text.find("slot b: kernel 6.1.0-57-cloud-amd64"), std::string::npos) << text;
    std::string b4;
    for (int i = 0; i < 32; ++i) b4 += "b4";
    EXPECT_NE(text.find("PCR 4  UKI        " + b4), std::string::npos) << text;
    EXPECT_NE(text.find("PCR 11 stub       " + std::string(64, '1')), std::string::npos) << text;
    EXPECT_NE(text.find(std::string(32, '9')), std::string::npos) << text;

    // A broken reference in the manifest is a problem, not a crash.
    json broken = reference;
    broken["slots"][0]["pcr9"] = "nope";
    write_text(s / "out/manifest.json", json{{"recipe", {{"name", "Cairn test"}, {"version", "4.5.6"}}}, {"reference", broken}}.dump());
    r = imager::inspect(s / "out/disk.raw", {});
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.report["reference_problem"].get<std::string>().find("pcr9"), std::string::npos) << r.report.dump(2);

    const fs::path bundle = f.bundle("4.5.6", "cairn-test", [](updater::BundleManifest& m) { m.reference = sample_reference("4.5.6"); });
    r = imager::inspect(bundle, {});
    EXPECT_TRUE(r.ok) << r.report.dump(2);
    EXPECT_EQ(r.report["reference"], reference);
    text = imager::format_report(r.report);
    EXPECT_NE(text.find("PCR 9             " + std::string(64, '9')), std::string::npos) << text;
    r = imager::inspect(f.bundle("4.5.7"), {});
    EXPECT_TRUE(r.report["reference"].is_null());
    EXPECT_NE(imager::format_report(r.report).find("reference   none"), std::string::npos);
}
