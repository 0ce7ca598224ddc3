// Reference values predicted from a signed UKI, checked against other people's tools:
// osslsigncode (Authenticode, PCR 4), systemd-measure (PCR 11, with the pcrphase words), and
// python3's hashlib over the UTF-16LE command line and the initrd (PCR 9).
#include "imager/measure.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/recipe.hpp"
#include "imager/uki.hpp"
#include "tests/support/test_support.hpp"
#include "updater/signature.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::expect_error;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

const fs::path snakeoil_cert = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const SigningKey snakeoil{"/usr/share/ovmf/PkKek-1-snakeoil.key", snakeoil_cert, "snakeoil"};
const fs::path systemd_measure = "/lib/systemd/systemd-measure";
const std::string cmdline = "cairn.slot=b cairn.disk=5d3c0000-0000-4000-8000-000000000001 cairn.roothash=0123456789abcdef panic=10 console=ttyS0";
const std::string os_release = "NAME=\"Cairn test\"\nID=cairn\nVERSION_ID=0.2.0\nIMAGE_ID=cairn-test\n";

std::string hex(const Digest& d) { return to_hex(d); }

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    return text;
}

// The text after "<name>:" on the first line that starts with `name` (blanks trimmed), or empty.
std::string field(const std::string& text, const std::string& name) {
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        auto start = line.find_first_not_of(" \t");
        if (start == std::string::npos || line.compare(start, name.size(), name) != 0) continue;
        auto colon = line.find(':', start + name.size());
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t\r") + 1);
        return value;
    }
    return {};
}

// A signed UKI of the real systemd-stub with a stand-in kernel and initrd (the stub only measures
// them), and the files it was made of.
struct Uki {
    fs::path file, kernel, initrd, cmdline, osrel;
};

Uki make_uki(const Scratch& dir, const std::string& line = cmdline) {
    Uki u{dir / "uki.efi", dir / "vmlinuz", dir / "initrd.img", dir / "cmdline", dir / "osrel"};
    test::write_random(u.kernel, 3 * 1024 * 1024 + 123, 1);
    test::write_random(u.initrd, 1024 * 1024 + 7, 2);  // sizes that are no multiple of any alignment
    test::write_text(u.cmdline, line);
    test::write_text(u.osrel, os_release);
    UkiParts parts;
    parts.kernel = u.kernel;
    parts.initrd = u.initrd;
    parts.cmdline = line;
    parts.os_release = os_release;
    parts.uname = "6.1.0-57-cloud-amd64";  // a .uname section: systemd-stub 252 does not measure it
    assemble_uki(parts, dir / "uki.unsigned");
    sign_pe(dir / "uki.unsigned", u.file, snakeoil, 1700000000);
    return u;
}

std::string missing_tools() {
    if (!fs::exists(UkiParts{}.stub)) return UkiParts{}.stub.string() + " is missing (install systemd-boot-efi)";
    if (!fs::exists(snakeoil.key)) return snakeoil.key.string() + " is missing (install ovmf)";
    if (!find_program("objcopy")) return "objcopy is not installed";
    return {};
}

#define SKIP_WITHOUT_TOOLS()                                               \
    do {                                                                   \
        if (auto why = missing_tools(); !why.empty()) GTEST_SKIP() << why; \
    } while (0)

// systemd-measure's PCR 11 for the UKI's parts after `phase` ("" = the stub's own value).
std::string systemd_measure_pcr11(const Uki& u, const std::string& phase) {
    RunResult r = run({systemd_measure.string(), "calculate", "--linux=" + u.kernel.string(), "--osrel=" + u.osrel.string(),
                       "--cmdline=" + u.cmdline.string(), "--initrd=" + u.initrd.string(), "--bank=sha256", "--phase=" + phase});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    const std::string prefix = "11:sha256=";
    auto at = r.out.find(prefix);
    EXPECT_NE(at, std::string::npos) << r.out;
    if (at == std::string::npos) return {};
    return lower(r.out.substr(at + prefix.size(), 64));
}

}  // namespace

TEST(Measure, ExtendIsSha256OfTheOldValueAndTheDigest) {
    const Digest zero{};
    const Digest d = sha256("x");
    EXPECT_EQ(pcr_extend(zero, d), sha256(std::string(32, '\0') + std::string(d.begin(), d.end())));
    const auto chain = pcr11_chain(d, {"sysinit", "ready"});
    ASSERT_EQ(chain.size(), 3u);
    EXPECT_EQ(chain[0], d);
    EXPECT_EQ(chain[1], pcr_extend(d, sha256("sysinit")));
    EXPECT_EQ(chain[2], pcr_extend(chain[1], sha256("ready")));
    EXPECT_EQ(pcr11_chain(d, {}).size(), 1u);
}

TEST(Measure, StubPcr11FollowsTheStubsOrderNotTheMapsOrEmptySections) {
    std::map<std::string, std::string> s = {{".cmdline", "c"}, {".linux", "k"}, {".osrel", "o"}, {".initrd", "i"}, {".uname", "u"}, {".dtb", ""}};
    Digest want{};
    for (const char* name : {".linux", ".osrel", ".cmdline", ".initrd"}) {
        want = pcr_extend(want, sha256(std::string(name) + std::string(1, '\0')));
        want = pcr_extend(want, sha256(s[name]));
    }
    EXPECT_EQ(stub_pcr11(s), want) << ".uname and the empty .dtb stay out, the rest in the stub's order";
    s[".splash"] = "bmp";
    EXPECT_NE(stub_pcr11(s), want);
}

TEST(Measure, LoadOptionsAreUtf16WithTheNulAsSystemdStubPassesThem) {
    using namespace std::string_literals;
    EXPECT_EQ(stub_load_options("ab"), "a\0b\0\0\0"s);
    EXPECT_EQ(stub_load_options(""), "\0\0"s);
    // systemd's mangle_stub_cmdline: outer whitespace goes, inner control characters become spaces.
    EXPECT_EQ(stub_load_options(" \ta\nb  \n"), "a\0 \0b\0\0\0"s);
    // UTF-8 into UCS-2; a character outside the BMP is skipped; the section ends at a NUL.
    EXPECT_EQ(stub_load_options("\xc3\xa9\xe2\x82\xac"), "\xe9\x00\xac\x20\0\0"s);
    EXPECT_EQ(stub_load_options("a\xf0\x9f\x98\x80z"), "a\0z\0\0\0"s);
    EXPECT_EQ(stub_load_options("a\0b"s), "a\0\0\0"s);
}

TEST(Measure, SectionContentsAreTheLoadedBytes) {
    SKIP_WITHOUT_TOOLS();
    Scratch dir;
    Uki u = make_uki(dir);
    auto sections = pe_section_contents(u.file, {".linux", ".initrd", ".cmdline", ".osrel", ".dtb"});
    EXPECT_EQ(sections.size(), 4u) << "no .dtb in this UKI";
    EXPECT_EQ(sections[".linux"], read_file(u.kernel));
    EXPECT_EQ(sections[".initrd"], read_file(u.initrd));
    EXPECT_EQ(sections[".cmdline"], cmdline);
    EXPECT_EQ(sections[".osrel"], os_release);
    expect_error([&] { pe_section_contents(u.cmdline, {".linux"}); }, {u.cmdline.string(), "not a PE image"});
}

TEST(Measure, AuthenticodeMatchesOsslsigncode) {
    SKIP_WITHOUT_TOOLS();
    if (!find_program("osslsigncode")) GTEST_SKIP() << "osslsigncode is not installed (scripts/install-deps)";
    Scratch dir;
    Uki u = make_uki(dir);
    const auto ref = measure_uki(u.file, "b", "6.1.0-57-cloud-amd64", {});
    EXPECT_EQ(ref.slot, "b");
    EXPECT_EQ(ref.kernel_release, "6.1.0-57-cloud-amd64");
    RunResult r = run({"osslsigncode", "verify", "-CAfile", snakeoil_cert.string(), "-in", u.file.string()});
    const std::string out = r.out + r.err;
    EXPECT_EQ(r.exit_code, 0) << out;
    EXPECT_EQ(lower(field(out, "Calculated message digest")), hex(ref.uki_authenticode)) << out;
    EXPECT_EQ(lower(field(out, "Current message digest")), hex(ref.uki_authenticode)) << out;
    // The firmware hashes the signed file: a signature made again over other bytes changes it.
    Scratch other;
    Uki v = make_uki(other, cmdline + " quiet");
    EXPECT_NE(measure_uki(v.file, "b", "r", {}).uki_authenticode, ref.uki_authenticode);
}

TEST(Measure, Pcr11MatchesSystemdMeasure) {
    SKIP_WITHOUT_TOOLS();
    if (!fs::exists(systemd_measure)) GTEST_SKIP() << systemd_measure << " is missing (package systemd)";
    Scratch dir;
    Uki u = make_uki(dir);
    const auto plain = measure_uki(u.file, "a", "r", {});
    ASSERT_EQ(plain.pcr11.size(), 1u);
    EXPECT_EQ(hex(plain.pcr11[0]), systemd_measure_pcr11(u, ""));
    const auto chained = measure_uki(u.file, "a", "r", {"sysinit", "ready"});
    ASSERT_EQ(chained.pcr11.size(), 3u);
    EXPECT_EQ(chained.pcr11[0], plain.pcr11[0]);
    EXPECT_EQ(hex(chained.pcr11[1]), systemd_measure_pcr11(u, "sysinit"));
    EXPECT_EQ(hex(chained.pcr11[2]), systemd_measure_pcr11(u, "sysinit:ready"));
    EXPECT_NE(hex(chained.pcr11[2]), systemd_measure_pcr11(u, "ready")) << "the words' order counts";

    // Another command line, another PCR 11; systemd-measure agrees on that one too.
    Scratch other;
    Uki v = make_uki(other, cmdline + " quiet");
    const auto changed = measure_uki(v.file, "a", "r", {});
    EXPECT_NE(changed.pcr11[0], plain.pcr11[0]);
    EXPECT_EQ(hex(changed.pcr11[0]), systemd_measure_pcr11(v, ""));
}

TEST(Measure, Pcr9MatchesAnIndependentComputation) {
    SKIP_WITHOUT_TOOLS();
    if (!find_program("python3")) GTEST_SKIP() << "python3 is not installed";
    Scratch dir;
    Uki u = make_uki(dir);
    const auto ref = measure_uki(u.file, "a", "r", {});
    // The Linux EFI stub's two EV_EVENT_TAG digests and the PCR they leave, by python's hashlib.
    const char* script =
        "import hashlib, sys\n"
        "cmd = open(sys.argv[1], 'rb').read().decode('utf-8')\n"
        "c = hashlib.sha256((cmd + '\\0').encode('utf-16-le')).digest()\n"
        "i = hashlib.sha256(open(sys.argv[2], 'rb').read()).digest()\n"
        "p = hashlib.sha256(hashlib.sha256(bytes(32) + c).digest() + i).digest()\n"
        "print(c.hex(), i.hex(), p.hex())\n";
    RunResult r = run({"python3", "-c", script, u.cmdline.string(), u.initrd.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream words(r.out);
    std::string c, i, p;
    words >> c >> i >> p;
    EXPECT_EQ(hex(ref.cmdline_event), c);
    EXPECT_EQ(hex(ref.initrd_event), i);
    EXPECT_EQ(hex(ref.pcr9), p);
}

TEST(Measure, RefusesAUkiWithoutItsSections) {
    SKIP_WITHOUT_TOOLS();
    Scratch dir;
    sign_pe(UkiParts{}.stub, dir / "stub.efi", snakeoil, 1700000000);
    expect_error([&] { measure_uki(dir / "stub.efi", "a", "r", {}); }, {(dir / "stub.efi").string(), "no .linux section"});
}

TEST(Measure, CertificateDigestIsOfTheDer) {
    if (!fs::exists(snakeoil_cert)) GTEST_SKIP() << snakeoil_cert << " is missing (install ovmf)";
    Scratch dir;
    run_checked({"openssl", "x509", "-in", snakeoil_cert.string(), "-outform", "DER", "-out", (dir / "cert.der").string()});
    EXPECT_EQ(hex(certificate_sha256(snakeoil_cert)), to_hex(sha256(read_file(dir / "cert.der"))));
}

namespace {

// A tree with what Debian 12's systemd package ships for systemd-pcrphase, where it ships it.
void add_pcrphase(Tree& t, bool with_links = true) {
    for (const char* d : {"/usr", "/usr/lib", "/usr/lib/systemd", "/usr/lib/systemd/system", "/usr/lib/systemd/system/sysinit.target.wants"})
        t.add_directory(d, Meta{0, 0, 0755}, "t");
    t.add_file("/usr/lib/systemd/systemd", "", Meta{0, 0, 0755}, "t");
    t.add_file("/usr/lib/systemd/systemd-pcrphase", "", Meta{0, 0, 0755}, "t");
    for (const char* unit : {"systemd-pcrphase-sysinit.service", "systemd-pcrphase.service", "systemd-pcrphase-initrd.service"}) {
        t.add_file(std::string("/usr/lib/systemd/system/") + unit, "[Unit]\n", Meta{0, 0, 0644}, "t");
        if (with_links && std::string(unit) != "systemd-pcrphase-initrd.service")
            t.add_symlink(std::string("/usr/lib/systemd/system/sysinit.target.wants/") + unit, std::string("../") + unit, Meta{0, 0, 0777}, "t");
    }
}

}  // namespace

TEST(Measure, PcrphaseWordsComeFromTheUnitsTheImageRuns) {
    Scratch dir;
    {
        Tree t(dir / "none");
        EXPECT_TRUE(pcrphase_words(t).empty()) << "no systemd: the stub's value only";
    }
    {
        Tree t(dir / "debian");
        add_pcrphase(t);
        EXPECT_EQ(pcrphase_words(t), (std::vector<std::string>{"sysinit", "ready"}));
        // Masked as `systemctl mask` does it.
        for (const char* d : {"/etc", "/etc/systemd", "/etc/systemd/system"}) t.add_directory(d, Meta{0, 0, 0755}, "t");
        t.add_symlink("/etc/systemd/system/systemd-pcrphase.service", "/dev/null", Meta{0, 0, 0777}, "t");
        EXPECT_EQ(pcrphase_words(t), (std::vector<std::string>{"sysinit"}));
        t.add_file("/etc/systemd/system/systemd-pcrphase-sysinit.service", "", Meta{0, 0, 0644}, "t");
        EXPECT_TRUE(pcrphase_words(t).empty());
    }
    {
        Tree t(dir / "unlinked");
        add_pcrphase(t, false);
        EXPECT_TRUE(pcrphase_words(t).empty()) << "units nothing wants never run";
    }
    {
        Tree t(dir / "no-binary");
        add_pcrphase(t);
        t.remove("/usr/lib/systemd/systemd-pcrphase", false, "t");
        EXPECT_TRUE(pcrphase_words(t).empty());
    }
}

TEST(Measure, AttestationSignerMustSignBundlesUnderTheTrustAnchor) {
    const fs::path keys = test::source_dir() / "recipes" / "keys";
    Recipe recipe;
    recipe.file = "r.toml";
    recipe.update.trust_anchor = keys / "update-ca.pem";
    recipe.attestation.enabled = true;
    recipe.attestation.key = keys / "attestation-signer.key";
    recipe.attestation.cert = keys / "attestation-signer.pem";
    recipe.attestation.where = "r.toml:9: attestation";
    check_attestation_signer(recipe);  // the test signer under the test CA
    const std::string text = "{\"format\": 1}\n";
    const std::string signature = sign_reference(text, recipe, 1700000000);
    updater::cms_verify(text, signature, recipe.update.trust_anchor, "reference");
    RunOptions print_options;
    print_options.input = signature;
    const std::string printed = run_checked({"openssl", "cms", "-cmsout", "-inform", "DER", "-print"}, print_options);
    EXPECT_NE(printed.find("UTCTIME:Nov 14 22:13:20 2023 GMT"), std::string::npos) << "the build's epoch is the signing time\n" << printed;
    ::sleep(1);  // the clock moves on: the signature does not
    EXPECT_EQ(sign_reference(text, recipe, 1700000000), signature) << "an RSA signer signs the same document the same way (reproducible ESPs)";
    EXPECT_NE(sign_reference(text, recipe, 1700000001), signature);

    // An ECDSA signer may sign, with a warning: its signatures differ on every build.
    Recipe ecdsa = recipe;
    ecdsa.attestation.key = keys / "update-signer.key";
    ecdsa.attestation.cert = keys / "update-signer.pem";
    testing::internal::CaptureStderr();
    check_attestation_signer(ecdsa);
    const std::string warned = testing::internal::GetCapturedStderr();
    EXPECT_NE(warned.find("cairn: warning: r.toml:9: attestation: attestation.key"), std::string::npos) << warned;
    EXPECT_NE(warned.find("not an RSA key"), std::string::npos) << warned;
    testing::internal::CaptureStderr();
    check_attestation_signer(recipe);
    EXPECT_EQ(testing::internal::GetCapturedStderr(), "");

    // A certificate without the bundle-signing usage (the UKI signer), and one under another CA.
    Recipe uki_signer = recipe;
    uki_signer.attestation.key = snakeoil.key;
    uki_signer.attestation.cert = snakeoil_cert;
    uki_signer.attestation.key_passphrase = "snakeoil";
    if (fs::exists(snakeoil_cert)) expect_error([&] { check_attestation_signer(uki_signer); }, {"r.toml:9: attestation", "update.trust_anchor"});
    Scratch dir;
    run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", (dir / "k.pem").string(), "-out", (dir / "c.pem").string(),
                 "-days", "2", "-subj", "/CN=Elsewhere", "-addext", "keyUsage=critical,digitalSignature", "-addext",
                 "extendedKeyUsage=2.25.198164079061254716068797520048519226823"});
    Recipe elsewhere = recipe;
    elsewhere.attestation.key = dir / "k.pem";
    elsewhere.attestation.cert = dir / "c.pem";
    expect_error([&] { check_attestation_signer(elsewhere); }, {"r.toml:9: attestation", "Elsewhere"});
}
