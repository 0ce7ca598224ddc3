// End to end: `cairn build` on the shipped recipes, checked with independent tools
// (sfdisk, veritysetup, fsck.erofs, fsck.ext4, dump.erofs, systemd-dissect), and `cairn inspect`.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

#include "attestation/reference.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"
#include "updater/bundle.hpp"
#include "updater/signature.hpp"

using namespace cairn;
using cairn::test::Scratch;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* epoch = "1700000000";

RunResult cairn_run(const std::vector<std::string>& args, const std::vector<std::string>& prefix = {}) {
    std::vector<std::string> argv = prefix;
    argv.push_back(test::cairn_binary().string());
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions o;
    o.extra_env = {std::string("SOURCE_DATE_EPOCH=") + epoch};
    return run(argv, o);
}

json read_json(const fs::path& p) { return json::parse(read_file(p)); }

// Copies [offset, offset+size) of the disk into its own file.
fs::path extract(const fs::path& disk, uint64_t offset, uint64_t size, const fs::path& to) {
    UniqueFd in = open_file(disk, O_RDONLY);
    UniqueFd out = open_file(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    copy_sparse(in.get(), offset, out.get(), 0, size, disk.string());
    if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) throw std::runtime_error("ftruncate");
    return to;
}

const json& partition(const json& manifest, const std::string& label) {
    for (const auto& p : manifest["partitions"])
        if (p["label"] == label) return p;
    throw std::runtime_error("no partition " + label);
}

// Checks every slot of a built image with veritysetup and the filesystem's own checker.
void check_slots(const fs::path& out, const json& manifest, const Scratch& scratch) {
    const fs::path disk = out / "disk.raw";
    for (const char* slot : {"a", "b"}) {
        SCOPED_TRACE(std::string("slot ") + slot);
        const json& s = manifest["slots"][slot];
        const json& v = s["verity"];
        const json& root = partition(manifest, s["root"]);
        const json& hash = partition(manifest, v["partition"]);
        uint64_t data_size = v["data_blocks"].get<uint64_t>() * 4096;
        auto data = extract(disk, root["offset"], data_size, scratch / (std::string("root_") + slot));
        auto tree = extract(disk, hash["offset"], v["hash_size"], scratch / (std::string("hash_") + slot));
        RunResult r = run({"veritysetup", "verify", data.string(), tree.string(), v["root_hash"].get<std::string>()});
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        // The Discoverable Partitions rule: the partition UUIDs are the root hash's two halves.
        std::string hex = v["root_hash"];
        auto uuid_hex = [](std::string u) { return u.erase(8, 1).erase(12, 1).erase(16, 1).erase(20, 1); };
        EXPECT_EQ(uuid_hex(root["uuid"]), hex.substr(0, 32));
        EXPECT_EQ(uuid_hex(hash["uuid"]), hex.substr(32));
        if (s["filesystem"] == "erofs") r = run({"fsck.erofs", data.string()});
        else r = run({"fsck.ext4", "-n", "-f", data.string()});
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    }
    EXPECT_NE(manifest["slots"]["a"]["verity"]["root_hash"], manifest["slots"]["b"]["verity"]["root_hash"])
        << "each slot has its own salt, so its own root hash and partition UUIDs";
}

void check_sfdisk(const fs::path& disk, const json& manifest) {
    json table = json::parse(run_checked({"sfdisk", "--json", disk.string()}))["partitiontable"];
    EXPECT_EQ(table["label"], "gpt");
    ASSERT_EQ(table["partitions"].size(), manifest["partitions"].size());
    for (size_t i = 0; i < table["partitions"].size(); ++i) {
        const json& got = table["partitions"][i];
        const json& want = manifest["partitions"][i];
        EXPECT_EQ(got["name"], want["label"]);
        std::string type = got["type"];
        std::transform(type.begin(), type.end(), type.begin(), ::tolower);
        EXPECT_EQ(type, want["type"]);
        std::string uuid = got["uuid"];
        std::transform(uuid.begin(), uuid.end(), uuid.begin(), ::tolower);
        EXPECT_EQ(uuid, want["uuid"]);
        EXPECT_EQ(got["start"].get<uint64_t>() * 512, want["offset"].get<uint64_t>());
        EXPECT_EQ(got["size"].get<uint64_t>() * 512, want["size"].get<uint64_t>());
    }
}

// One build of each shipped recipe, shared by the tests below: CTest makes it once (the
// integration_build_* fixture tests); a test program run by hand builds what is missing.
class Built : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        for (const char* name : {"minimal", "eflow"}) {
            if (fs::exists(out(name) / "manifest.json")) continue;
            RunResult r = cairn_run({"build", (test::source_dir() / "recipes" / (std::string(name) + ".toml")).string(), "-o",
                                     out(name).string(), "--quiet"});
            ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
        }
    }
    static fs::path out(const char* name) { return test::test_images() / name; }
};

}  // namespace

TEST_F(Built, MinimalHasTheDesignLayoutAndFinishedOutputs) {
    json m = read_json(out("minimal") / "manifest.json");
    std::vector<std::string> labels;
    for (const auto& p : m["partitions"]) labels.push_back(p["label"]);
    EXPECT_EQ(labels, (std::vector<std::string>{"esp_a", "root_a", "root_a_verity", "esp_b", "root_b", "root_b_verity", "log", "data"}));
    for (const char* f : {"disk.raw", "rootfs.img", "root_a.verity", "root_b.verity", "vmlinuz"}) EXPECT_TRUE(fs::exists(out("minimal") / f)) << f;
    for (const auto& e : fs::directory_iterator(out("minimal")))
        EXPECT_FALSE(e.path().filename().string().starts_with(".cairn-build")) << "left behind: " << e.path();
    EXPECT_EQ(m["kernel"]["package"].get<std::string>().rfind("linux-image-", 0), 0u);
    EXPECT_FALSE(m["kernel"]["release"].get<std::string>().empty());
    bool has_busybox = false;
    for (const auto& i : m["inputs"]) has_busybox = has_busybox || (i.value("package", "") == "busybox-static" && i["sha256"].get<std::string>().size() == 64);
    EXPECT_TRUE(has_busybox) << "every input is recorded with its sha256";
    check_sfdisk(out("minimal") / "disk.raw", m);
}

TEST_F(Built, MinimalSlotsVerifyWithVeritysetupAndFsck) {
    Scratch s;
    check_slots(out("minimal"), read_json(out("minimal") / "manifest.json"), s);
}

TEST_F(Built, MinimalOwnersAndModesComeFromTheRecipe) {
    Scratch s;
    json m = read_json(out("minimal") / "manifest.json");
    const json& root = partition(m, "root_a");
    auto fsimg = extract(out("minimal") / "disk.raw", root["offset"], m["rootfs"]["size"], s / "root.erofs");
    auto stat_of = [&](const std::string& path) {
        std::string o = run_checked({"dump.erofs", "--path=" + path, fsimg.string()});
        size_t uid = o.find("Uid: "), access = o.find("Access: ");
        if (uid == std::string::npos || access == std::string::npos) return o;
        std::istringstream in(o.substr(uid));
        std::string u, g, word;
        in >> word >> u >> word >> g;
        return u + ":" + g + " " + o.substr(access + 8, 4);
    };
    EXPECT_EQ(stat_of("/etc/shadow"), "0:42 0640");
    EXPECT_EQ(stat_of("/home/cairn"), "1000:1000 0750");
    EXPECT_EQ(stat_of("/root"), "0:0 0700");
    EXPECT_EQ(stat_of("/sbin/init"), "0:0 0755");
    EXPECT_EQ(stat_of("/bin/busybox"), "0:0 0755");

    if (!test::is_root() || !fs::exists("/dev/loop-control")) GTEST_SKIP() << "loop-mount check needs root and loop devices";
    fs::create_directories(s / "mnt");
    RunResult r = run({"mount", "-t", "erofs", "-o", "ro,loop", fsimg.string(), (s / "mnt").string()});
    if (r.exit_code != 0) GTEST_SKIP() << "cannot mount erofs here: " << r.err;
    struct stat st {};
    ::stat((s / "mnt/etc/shadow").c_str(), &st);
    EXPECT_EQ(st.st_gid, 42u);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    ::stat((s / "mnt/tmp").c_str(), &st);
    EXPECT_EQ(st.st_mode & 07777, 01777u);
    ::stat((s / "mnt/home/cairn").c_str(), &st);
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_TRUE(fs::exists(s / "mnt/lib/modules"));
    run({"umount", (s / "mnt").string()});
}

TEST_F(Built, SystemdDissectRecognisesThePartitions) {
    if (!test::is_root() || !fs::exists("/dev/loop-control")) GTEST_SKIP() << "systemd-dissect needs root and loop devices";
    RunResult r = run({"systemd-dissect", "--json=short", (out("minimal") / "disk.raw").string()});
    if (r.exit_code != 0 && r.err.find("loop") != std::string::npos) GTEST_SKIP() << "no loop device: " << r.err;
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json d = json::parse(r.out);
    std::set<std::string> designators;
    for (const auto& m : d["mounts"]) designators.insert(m.value("designator", ""));
    EXPECT_TRUE(designators.count("root")) << r.out;
    EXPECT_TRUE(designators.count("root-verity")) << r.out;
    EXPECT_TRUE(designators.count("esp")) << r.out;
}

TEST_F(Built, InspectVerifiesAndCatchesAFlippedByte) {
    RunResult r = cairn_run({"inspect", (out("minimal") / "disk.raw").string()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("all slots verified"), std::string::npos) << r.out;
    json m = read_json(out("minimal") / "manifest.json");
    EXPECT_NE(r.out.find(m["slots"]["b"]["verity"]["root_hash"].get<std::string>()), std::string::npos);

    // Flip one byte in the middle of root_b's data, in a copy.
    Scratch s;
    const fs::path disk = s / "disk.raw";
    run_checked({"cp", "--sparse=always", (out("minimal") / "disk.raw").string(), disk.string()});
    uint64_t at = partition(m, "root_b")["offset"].get<uint64_t>() + m["rootfs"]["size"].get<uint64_t>() / 2;
    UniqueFd fd = open_file(disk, O_RDWR);
    char c = 0;
    pread_exact(fd.get(), &c, 1, at, "disk");
    char flipped = static_cast<char>(c ^ 0x40);
    pwrite_exact(fd.get(), &flipped, 1, at, "disk");
    r = cairn_run({"inspect", "--json", "--manifest", (out("minimal") / "manifest.json").string(), disk.string()});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    json report = json::parse(r.out);
    EXPECT_FALSE(report["ok"].get<bool>());
    EXPECT_TRUE(report["slots"][0]["ok"].get<bool>());
    EXPECT_FALSE(report["slots"][1]["ok"].get<bool>());
    EXPECT_NE(report["slots"][1]["problems"].dump().find("root_b"), std::string::npos) << report.dump(2);
}

TEST_F(Built, EflowHasTheApplianceSizesAndStaysSparse) {
    json m = read_json(out("eflow") / "manifest.json");
    auto size_of = [&](const std::string& label) { return partition(m, label)["size"].get<uint64_t>() >> 20; };
    EXPECT_EQ(size_of("esp_a"), 200u);
    EXPECT_EQ(size_of("esp_b"), 200u);
    EXPECT_EQ(size_of("root_a"), 4096u);
    EXPECT_EQ(size_of("root_b"), 4096u);
    EXPECT_EQ(size_of("log"), 1024u);
    EXPECT_EQ(size_of("data"), 2048u);
    struct stat st {};
    ASSERT_EQ(::stat((out("eflow") / "disk.raw").c_str(), &st), 0);
    EXPECT_GT(static_cast<uint64_t>(st.st_size), 11ull << 30);
    // Two slots of a ~370 MiB Debian root and the ESPs: well under a tenth of the disk.
    EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, static_cast<uint64_t>(st.st_size) / 10) << "disk.raw must stay sparse";
    check_sfdisk(out("eflow") / "disk.raw", m);
    Scratch s;
    check_slots(out("eflow"), m, s);
    EXPECT_EQ(cairn_run({"inspect", (out("eflow") / "disk.raw").string()}).exit_code, 0);
}

namespace {

// osslsigncode's Authenticode digest of a signed PE file (lower-case hex), or "" when it says none.
std::string osslsigncode_digest(const fs::path& pe) {
    RunResult r = run({"osslsigncode", "verify", "-CAfile", "/usr/share/ovmf/PkKek-1-snakeoil.pem", "-in", pe.string()});
    const std::string out = r.out + r.err, key = "Current message digest";
    auto at = out.find(key);
    if (at == std::string::npos) return {};
    at = out.find(':', at);
    std::string hex = out.substr(at + 1, out.find('\n', at) - at - 1);
    hex.erase(0, hex.find_first_not_of(" \t"));
    hex.erase(hex.find_last_not_of(" \t\r") + 1);
    std::transform(hex.begin(), hex.end(), hex.begin(), ::tolower);
    return hex;
}

// A file out of a FAT filesystem at `offset` in `disk` (mtools), or "" when it is not there.
std::string esp_file(const fs::path& disk, uint64_t offset, const std::string& path, const fs::path& to) {
    RunResult r = run({"mcopy", "-n", "-i", disk.string() + "@@" + std::to_string(offset), "::/" + path, to.string()});
    return r.exit_code == 0 ? read_file(to) : std::string();
}

}  // namespace

// What a good boot of each slot measures, predicted by the build: in manifest.json, and with
// [attestation] in reference.json, signed under the update CA, beside the build and on every ESP
// next to the UKI whose Authenticode digest (osslsigncode's) and PCR 9 events (python's) it holds.
TEST_F(Built, ReferenceValuesArePredictedSignedAndOnEveryEsp) {
    if (!find_program("osslsigncode") || !find_program("python3")) GTEST_SKIP() << "needs osslsigncode and python3 (scripts/install-deps)";
    for (const char* name : {"minimal", "eflow"}) {
        SCOPED_TRACE(name);
        const fs::path dir = out(name);
        const json m = read_json(dir / "manifest.json");
        ASSERT_TRUE(m["reference"].is_object()) << m.dump(1).substr(0, 2000);
        const attestation::ReferenceDocument doc = attestation::parse_reference(m["reference"].dump(), "manifest.json");
        EXPECT_EQ(doc.image, m["recipe"]["name"]);
        EXPECT_EQ(doc.version, m["recipe"]["version"]);
        run_checked({"openssl", "x509", "-in", "/usr/share/ovmf/PkKek-1-snakeoil.pem", "-outform", "DER", "-out", (dir / ".cert.der").string()});
        EXPECT_EQ(to_hex(doc.uki_signer_certificate), to_hex(sha256(read_file(dir / ".cert.der"))));
        fs::remove(dir / ".cert.der");
        ASSERT_EQ(doc.slots.size(), 2u);
        // busybox has no systemd-pcrphase: the stub's value only; Debian's systemd adds sysinit and ready.
        const size_t pcr11 = std::string(name) == "eflow" ? 3 : 1;

        // The signed document: the manifest's values, signed by the test signer under the update CA.
        const std::string text = read_file(dir / "reference.json");
        EXPECT_EQ(text, attestation::to_json(doc));
        EXPECT_EQ(m["reference_document"]["sha256"], sha256_file_hex(dir / "reference.json"));
        RunResult v = run({"openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", (dir / "reference.json.sig").string(), "-content",
                           (dir / "reference.json").string(), "-CAfile", (test::source_dir() / "recipes/keys/update-ca.pem").string(), "-purpose",
                           "any", "-out", "/dev/null"});
        EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
        updater::cms_verify(text, read_file(dir / "reference.json.sig"), test::source_dir() / "recipes/keys/update-ca.pem", "reference.json");
        std::string forged = text;
        forged[forged.find("\"pcr9\": \"") + 9] ^= 1;
        EXPECT_THROW(updater::cms_verify(forged, read_file(dir / "reference.json.sig"), test::source_dir() / "recipes/keys/update-ca.pem", "forged"),
                     Error);

        Scratch s;
        for (const auto& slot : doc.slots) {
            SCOPED_TRACE("slot " + slot.slot);
            EXPECT_EQ(slot.kernel_release, m["kernel"]["release"]);
            EXPECT_EQ(slot.pcr11.size(), pcr11);
            const fs::path uki = dir / m["uki"][slot.slot]["file"].get<std::string>();
            EXPECT_EQ(to_hex(slot.uki_authenticode), osslsigncode_digest(uki));
            // PCR 9 from the manifest's command line and the initrd, by python's hashlib.
            test::write_text(s / "cmdline", m["uki"][slot.slot]["cmdline"].get<std::string>());
            RunResult p = run({"python3", "-c",
                               "import hashlib, sys\n"
                               "c = hashlib.sha256((open(sys.argv[1]).read() + '\\0').encode('utf-16-le')).digest()\n"
                               "i = hashlib.sha256(open(sys.argv[2], 'rb').read()).digest()\n"
                               "print(c.hex(), i.hex(), hashlib.sha256(hashlib.sha256(bytes(32) + c).digest() + i).hexdigest())\n",
                               (s / "cmdline").string(), (dir / "initrd.img").string()});
            ASSERT_EQ(p.exit_code, 0) << p.err;
            EXPECT_EQ(p.out, to_hex(slot.cmdline_event) + " " + to_hex(slot.initrd_event) + " " + to_hex(slot.pcr9) + "\n");
            // The slot's ESP: the UKI that was measured, the document and its signature beside it.
            const uint64_t esp = partition(m, "esp_" + slot.slot)["offset"];
            esp_file(dir / "disk.raw", esp, "EFI/BOOT/BOOTX64.EFI", s / "uki.efi");
            EXPECT_EQ(to_hex(slot.uki_authenticode), osslsigncode_digest(s / "uki.efi"));
            EXPECT_EQ(esp_file(dir / "disk.raw", esp, "EFI/BOOT/reference.json", s / "ref"), text);
            EXPECT_EQ(esp_file(dir / "disk.raw", esp, "EFI/BOOT/reference.json.sig", s / "sig"), read_file(dir / "reference.json.sig"));
        }
        EXPECT_NE(doc.slots[0].uki_authenticode, doc.slots[1].uki_authenticode) << "each slot's UKI names its own root hash";
        EXPECT_NE(doc.slots[0].pcr11[0], doc.slots[1].pcr11[0]);
        EXPECT_EQ(doc.slots[0].initrd_event, doc.slots[1].initrd_event);

        // cairn inspect shows them.
        RunResult r = cairn_run({"inspect", "--json", (dir / "disk.raw").string()});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(json::parse(r.out)["reference"], m["reference"]);
    }
}

// `cairn bundle` of a real build: its signed manifest carries the build's reference values, and
// `cairn inspect` of the bundle shows them.
TEST_F(Built, MinimalBundleCarriesTheReferenceValues) {
    Scratch s;
    const fs::path keys = test::source_dir() / "recipes/keys";
    RunResult r = cairn_run({"bundle", out("minimal").string(), "-o", (s / "b.cairn").string(), "--key", (keys / "update-signer.key").string(),
                             "--cert", (keys / "update-signer.pem").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = cairn_run({"inspect", "--json", "--trust-anchor", out("minimal").string(), (s / "b.cairn").string()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(json::parse(r.out)["reference"], read_json(out("minimal") / "manifest.json")["reference"]);
    r = cairn_run({"inspect", (s / "b.cairn").string()});
    EXPECT_NE(r.out.find("reference values (cairn-minimal"), std::string::npos) << r.out;
    updater::BundleReader reader(s / "b.cairn", keys / "update-ca.pem");
    ASSERT_TRUE(reader.reference().has_value());
    EXPECT_EQ(attestation::to_json(*reader.reference()), read_file(out("minimal") / "reference.json"));
}

// Without [attestation]: the same values in manifest.json (the UKIs are the same), and no signed
// document, neither beside the build nor on the ESPs.
TEST_F(Built, WithoutAttestationTheValuesStayInTheManifest) {
    Scratch s;
    run_checked({"cp", "-r", (test::source_dir() / "recipes").string(), (s / "recipes").string()});
    std::string recipe = read_file(s / "recipes/minimal.toml");
    const size_t from = recipe.find("[attestation]"), to = recipe.find("\n[", from + 1);
    ASSERT_NE(from, std::string::npos);
    recipe.erase(from, to + 1 - from);
    ASSERT_EQ(recipe.find("attestation-signer"), std::string::npos);
    test::write_text(s / "recipes/minimal.toml", recipe);
    RunResult r = cairn_run({"build", (s / "recipes/minimal.toml").string(), "-o", (s / "out").string(), "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json m = read_json(s / "out/manifest.json");
    // The recipe's text is an input (its sha256 goes into the build id in the root), so the roots,
    // the command lines and the values differ from the signed build's; their shape does not.
    ASSERT_TRUE(m["reference"].is_object());
    const attestation::ReferenceDocument doc = attestation::parse_reference(m["reference"].dump(), "manifest.json");
    ASSERT_EQ(doc.slots.size(), 2u);
    for (const auto& slot : doc.slots) {
        EXPECT_EQ(slot.pcr11.size(), 1u);
        if (find_program("osslsigncode")) {
            EXPECT_EQ(to_hex(slot.uki_authenticode), osslsigncode_digest(s / "out" / ("uki_" + slot.slot + ".efi")));
        }
    }
    EXPECT_TRUE(m["reference_document"].is_null());
    EXPECT_FALSE(fs::exists(s / "out/reference.json"));
    EXPECT_FALSE(fs::exists(s / "out/reference.json.sig"));
    const uint64_t esp = partition(m, "esp_a")["offset"];
    EXPECT_EQ(esp_file(s / "out/disk.raw", esp, "EFI/BOOT/reference.json", s / "ref"), "");
    EXPECT_NE(esp_file(s / "out/disk.raw", esp, "EFI/BOOT/BOOTX64.EFI", s / "uki"), "");
}

// Reproducible: the same recipe and inputs with SOURCE_DATE_EPOCH give a bit-identical disk, from
// a copy of the recipes in another folder. As root, the second build runs as an ordinary user
// (nobody), which also proves that owners and modes come out right without root.
TEST_F(Built, RebuildIsBitIdentical) {
    Scratch again;
    std::vector<std::string> prefix;
    run_checked({"cp", "-r", (test::source_dir() / "recipes").string(), (again / "recipes").string()});
    if (test::is_root()) {
        run_checked({"chown", "-R", "65534:65534", again.path().string()});
        prefix = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
    }
    for (const char* name : {"minimal", "eflow"}) {
        SCOPED_TRACE(name);
        fs::path out_dir = again / (std::string("out-") + name);
        std::vector<std::string> argv = {"build", (again / "recipes" / (std::string(name) + ".toml")).string(), "-o", out_dir.string(), "--quiet"};
        std::vector<std::string> as = prefix;
        if (std::string(name) == "eflow") {
            // Debian packages: as root (maintainer scripts), the fixture's lock, the shared cache.
            if (!test::is_root()) continue;
            argv.insert(argv.end(), {"--lock", (test::test_images() / "eflow.lock").string()});
            as.clear();
        } else {
            argv.insert(argv.end(), {"--cache", (again / "cache").string()});
        }
        RunResult r = cairn_run(argv, as);
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(run({"cmp", (out(name) / "disk.raw").string(), (out_dir / "disk.raw").string()}).exit_code, 0)
            << "two builds of recipes/" << name << ".toml differ";
        EXPECT_EQ(read_json(out(name) / "manifest.json")["slots"], read_json(out_dir / "manifest.json")["slots"]);
        EXPECT_EQ(read_json(out(name) / "manifest.json")["reference"], read_json(out_dir / "manifest.json")["reference"]);
        EXPECT_EQ(run({"cmp", (out(name) / "reference.json.sig").string(), (out_dir / "reference.json.sig").string()}).exit_code, 0)
            << "the signed reference document (on every ESP) must come out the same";
    }
}

// The Debian image's SBOM names every installed package with its .deb's sha256 from the lock, and
// CycloneDX's own validator (npm, scripts/install-deps) accepts it.
TEST_F(Built, EflowSbomListsEveryLockedPackageAndValidates) {
    const fs::path sbom = out("eflow") / "sbom.cdx.json";
    const fs::path validator = test::source_dir() / "scripts/cyclonedx-validate";
    RunResult v = run({validator.string(), sbom.string()});
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
    json doc = read_json(sbom);
    json lock = read_json(out("eflow") / "packages.lock");
    std::map<std::string, std::string> sha;  // purl-less: name -> sha256
    for (const auto& c : doc["components"])
        if (c.value("purl", "").rfind("pkg:deb/", 0) == 0)
            for (const auto& h : c.value("hashes", json::array())) sha[c["name"]] = h["content"];
    for (const auto& p : lock["packages"]) EXPECT_EQ(sha[p["name"].get<std::string>()], p["sha256"].get<std::string>()) << p["name"];
    EXPECT_EQ(read_json(out("eflow") / "manifest.json")["packages"]["count"], lock["packages"].size());
    EXPECT_EQ(read_json(out("eflow") / "manifest.json")["packages"]["from_lock_file"], true);  // the fixture's --lock
}
