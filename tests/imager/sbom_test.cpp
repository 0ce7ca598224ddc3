#include "imager/sbom.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/dpkg.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager::sbom;
using cairn::test::Scratch;
using nlohmann::json;

namespace {

const char* dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n";

std::vector<std::string> spdx_terms(const LicenseInfo& info) {
    std::vector<std::string> r;
    for (const auto& t : info.terms) r.push_back(t.spdx);
    return r;
}

// ---- the independent validator: CycloneDX's own, from npm (scripts/install-deps) ----

const char* tools_prefix = "/opt/cairn-tools";

// Runs scripts/cyclonedx-validate on files (one node process for all: it takes a second to start);
// returns each file's verdict. Fails the test with a clear message when the validator is not
// installed.
std::map<std::string, bool> validate(const std::vector<std::filesystem::path>& files) {
    std::filesystem::path library = std::filesystem::path(tools_prefix) / "node_modules/@cyclonedx/cyclonedx-library/package.json";
    if (!std::filesystem::exists(library) || !find_program("node")) {
        ADD_FAILURE() << "the CycloneDX validator is not installed: no " << library.string()
                      << " or no node in PATH; run scripts/install-deps as root (npm install into " << tools_prefix << ")";
        return {};
    }
    std::vector<std::string> argv = {(test::source_dir() / "scripts/cyclonedx-validate").string()};
    for (const auto& f : files) argv.push_back(f.string());
    auto result = run(argv, RunOptions{.extra_env = {std::string("CAIRN_TOOLS=") + tools_prefix}});
    EXPECT_NE(result.exit_code, 2) << "the validator did not run: " << result.out << result.err;
    std::map<std::string, bool> verdicts;
    std::istringstream lines(result.out);
    std::string line;
    while (std::getline(lines, line)) {
        for (const auto& f : files) {
            std::string prefix = f.string() + ": ";
            if (line.rfind(prefix, 0) != 0) continue;
            verdicts[f.string()] = line.substr(prefix.size()).rfind("valid CycloneDX 1.5", 0) == 0;
            if (!verdicts[f.string()]) std::cerr << line << "\n";
        }
    }
    EXPECT_EQ(verdicts.size(), files.size()) << result.out << result.err;
    bool all_valid = std::all_of(verdicts.begin(), verdicts.end(), [](const auto& v) { return v.second; });
    EXPECT_EQ(result.exit_code, all_valid ? 0 : 1) << result.out << result.err;
    return verdicts;
}

bool valid(const std::filesystem::path& file) {
    auto verdicts = validate({file});
    return verdicts.count(file.string()) && verdicts[file.string()];
}

Image test_image() {
    return Image{.name = "cairn-test", .version = "1.2.3", .build_id = "0123456789abcdef", .epoch = 1700000000,
                 .cairn_version = "0.1.0", .distro = "debian-12"};
}

std::string fake_sha(const std::string& seed) { return to_hex(sha256(seed)); }

// The build host's installed packages as dpkg-query lists them (not through our status parser),
// with licences from the host's /usr/share/doc and dependencies from our status parser.
std::vector<DebPackage> host_packages() {
    std::string out = run_checked({"dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n"});
    auto status = cairn::imager::parse_dpkg_status(read_file("/var/lib/dpkg/status"), "/var/lib/dpkg/status");
    std::map<std::string, std::vector<std::string>> depends;
    for (const auto& p : status) depends[p.name] = p.depends;
    std::vector<DebPackage> packages;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        std::vector<std::string> f;
        std::istringstream fields(line);
        std::string field;
        while (std::getline(fields, field, '\t')) f.push_back(field);
        if (f.size() < 6 || f[0] != "installed") continue;
        DebPackage p;
        p.name = f[1];
        p.version = f[2];
        p.architecture = f[3];
        p.source = f[4];
        p.source_version = f[5];
        // A host package's .deb is not at hand: a stand-in checksum of the right shape.
        p.sha256 = fake_sha(p.name + " " + p.version + " " + p.architecture);
        p.depends = depends[p.name];
        p.license = read_package_license("/", p.name);
        packages.push_back(std::move(p));
    }
    return packages;
}

Bom host_bom() {
    Bom bom;
    bom.image = test_image();
    bom.packages = host_packages();
    bom.programs.push_back({"cairn", "/usr/bin/cairn", "0.1.0", sha256_file_hex("/proc/self/exe")});
    bom.files.push_back({"/etc/cairn/recipe.toml", sha256_file_hex(test::source_dir() / "recipes/minimal.toml")});
    return bom;
}

}  // namespace

// ---- Debian licence names ----

TEST(SpdxLicenseId, MapsDebianShortNamesThatNameTheSameLicence) {
    EXPECT_EQ(spdx_license_id("GPL-2+"), "GPL-2.0-or-later");
    EXPECT_EQ(spdx_license_id("GPL-2"), "GPL-2.0-only");
    EXPECT_EQ(spdx_license_id("GPL-3.0+"), "GPL-3.0-or-later");
    EXPECT_EQ(spdx_license_id("GPL-1+"), "GPL-1.0-or-later");
    EXPECT_EQ(spdx_license_id("LGPL-2.1+"), "LGPL-2.1-or-later");
    EXPECT_EQ(spdx_license_id("LGPL-2.0+"), "LGPL-2.0-or-later");
    EXPECT_EQ(spdx_license_id("lgpl-3"), "LGPL-3.0-only");
    EXPECT_EQ(spdx_license_id("AGPL-3+"), "AGPL-3.0-or-later");
    EXPECT_EQ(spdx_license_id("GFDL-NIV-1.3+"), "GFDL-1.3-no-invariants-or-later");
    EXPECT_EQ(spdx_license_id("GFDL-1.2"), "GFDL-1.2-only");
    EXPECT_EQ(spdx_license_id("Expat"), "MIT");
    EXPECT_EQ(spdx_license_id("BSD-3-clause"), "BSD-3-Clause");
    EXPECT_EQ(spdx_license_id("bsd-2-clause"), "BSD-2-Clause");
    EXPECT_EQ(spdx_license_id("Apache-2"), "Apache-2.0");
    EXPECT_EQ(spdx_license_id("Apache-2.0"), "Apache-2.0");
    EXPECT_EQ(spdx_license_id("Artistic-2"), "Artistic-2.0");
    EXPECT_EQ(spdx_license_id("MPL-2.0"), "MPL-2.0");
    EXPECT_EQ(spdx_license_id("CC-BY-SA-4.0"), "CC-BY-SA-4.0");
    EXPECT_EQ(spdx_license_id("cc-by-nc-nd-3.0"), "CC-BY-NC-ND-3.0");
    EXPECT_EQ(spdx_license_id("CC0-1.0"), "CC0-1.0");
    EXPECT_EQ(spdx_license_id("CC0"), "CC0-1.0");
    EXPECT_EQ(spdx_license_id("BSL-1"), "BSL-1.0");
    EXPECT_EQ(spdx_license_id("LPPL-1.3c"), "LPPL-1.3c");
    EXPECT_EQ(spdx_license_id("Zope-2.1"), "ZPL-2.1");
    EXPECT_EQ(spdx_license_id("Zlib"), "Zlib");
    EXPECT_EQ(spdx_license_id(" ISC "), "ISC");
}

TEST(SpdxLicenseId, LeavesOutNamesWithoutAnEquivalent) {
    for (const char* name : {"GPL", "LGPL", "Artistic", "public-domain", "Apache-2.0+", "MIT+", "BSD-4-clause-UC",
                             "GPL-4+", "GPL-2+ with OpenSSL exception", "", "+", "-", "GPL-", "CC-BY-9.0", "Perl"})
        EXPECT_FALSE(spdx_license_id(name).has_value()) << name;
}

TEST(LicenseRef, KeepsOnlyCharactersSpdxAllows) {
    EXPECT_EQ(license_ref("public-domain"), "LicenseRef-public-domain");
    EXPECT_EQ(license_ref("GPL-2+ with OpenSSL exception"), "LicenseRef-GPL-2-plus-with-OpenSSL-exception");
    EXPECT_EQ(license_ref("a/b\x01\xff"), "LicenseRef-a-b");
    EXPECT_EQ(license_ref(""), "LicenseRef-unnamed");
    EXPECT_LE(license_ref(std::string(10000, 'x')).size(), 140u);
}

// ---- the copyright parser on crafted files ----

TEST(ParseCopyright, OneLicence) {
    auto info = parse_copyright(std::string(dep5) + "\nFiles: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n");
    ASSERT_TRUE(info.expression) << info.reason;
    EXPECT_EQ(*info.expression, "GPL-2.0-or-later");
    EXPECT_TRUE(info.conjunction);
    ASSERT_EQ(info.terms.size(), 1u);
    EXPECT_TRUE(info.terms[0].is_spdx_id);
    EXPECT_EQ(info.terms[0].debian, "GPL-2+");
}

TEST(ParseCopyright, ParagraphsJoinWithAndAndKeepLicenceRefTexts) {
    auto info = parse_copyright(std::string(dep5) +
                                "Upstream-Name: x\n\n"
                                "Files: *\nCopyright: a\nLicense: Expat\n\n"
                                "Files: lib/*\nCopyright: b\nLicense: public-domain\n\n"
                                "Files: doc/*\nCopyright: c\nLicense: Expat\n\n"
                                "License: public-domain\n This is in the\n .\n public domain.\n");
    ASSERT_TRUE(info.expression) << info.reason;
    EXPECT_EQ(*info.expression, "MIT AND LicenseRef-public-domain");
    EXPECT_TRUE(info.conjunction);
    ASSERT_EQ(info.terms.size(), 2u);
    EXPECT_EQ(info.terms[1].spdx, "LicenseRef-public-domain");
    EXPECT_FALSE(info.terms[1].is_spdx_id);
    EXPECT_EQ(info.terms[1].text, "This is in the\n\npublic domain.\n");
}

TEST(ParseCopyright, OrAndCommasAndExceptions) {
    auto one = [](const std::string& license) {
        auto info = parse_copyright(std::string(dep5) + "\nFiles: *\nCopyright: x\nLicense: " + license + "\n");
        return info.expression.value_or("NOASSERTION");
    };
    EXPECT_EQ(one("GPL-1+ or Artistic"), "GPL-1.0-or-later OR LicenseRef-Artistic");
    EXPECT_EQ(one("GPL-2+ or Artistic, and BSD-3-clause"), "(GPL-2.0-or-later OR LicenseRef-Artistic) AND BSD-3-Clause");
    EXPECT_EQ(one("MIT and ISC or Zlib"), "MIT AND ISC OR Zlib");
    EXPECT_EQ(one("MIT, or ISC and Zlib"), "MIT OR (ISC AND Zlib)");
    EXPECT_EQ(one("GPL-2+ with OpenSSL exception"), "LicenseRef-GPL-2-plus-with-OpenSSL-exception");
    EXPECT_EQ(one("GPL-3+ with Bison exception or MIT"), "LicenseRef-GPL-3-plus-with-Bison-exception OR MIT");
    auto info = parse_copyright(std::string(dep5) + "\nFiles: *\nCopyright: x\nLicense: GPL-1+ or Artistic\n\n"
                                "Files: b\nCopyright: y\nLicense: Zlib\n");
    EXPECT_EQ(info.expression, "(GPL-1.0-or-later OR LicenseRef-Artistic) AND Zlib");
    EXPECT_FALSE(info.conjunction);
}

TEST(ParseCopyright, NotMachineReadableIsNoAssertion) {
    for (const std::string& text : {std::string("This is Debian's prepackaged version of foo.\n\nCopyright: GPL\nLicense: GPL-2+\n"),
                                   std::string(""), std::string("\n\n\n"), std::string("Format: something else\n\nFiles: *\nLicense: MIT\n")}) {
        auto info = parse_copyright(text);
        EXPECT_FALSE(info.expression) << text;
        EXPECT_FALSE(info.reason.empty());
    }
}

TEST(ParseCopyright, BadLicenseFieldsAreNoAssertionNotACrash) {
    for (const std::string& license : std::vector<std::string>{"", "and", "MIT or", "or MIT", "MIT GPL-2", ", and MIT", "MIT,", "MIT, MIT",
                                      "MIT and and ISC", "MIT with", "with MIT", "MIT,, and ISC", std::string(5000, 'x')}) {
        auto info = parse_copyright(std::string(dep5) + "\nFiles: *\nCopyright: x\nLicense: " + license + "\n");
        EXPECT_FALSE(info.expression) << "'" << license << "' gave " << info.expression.value_or("");
        EXPECT_NE(info.reason, "");
    }
    // Too many terms.
    std::string many = "MIT";
    for (int i = 0; i < 400; ++i) many += " and L" + std::to_string(i);
    EXPECT_FALSE(parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: " + many + "\n").expression);
    // Too many different License fields over few names (each distinct pair is a new expression).
    std::string fields = dep5;
    for (int a = 0; a < 20; ++a)
        for (int b = 0; b < 20; ++b) fields += "\nFiles: f\nLicense: L" + std::to_string(a) + " and L" + std::to_string(b) + "\n";
    EXPECT_FALSE(parse_copyright(fields).expression);
    // No Files paragraph, no header licence.
    EXPECT_FALSE(parse_copyright(std::string(dep5) + "\nLicense: MIT\n text\n").expression);
    // Binary junk, NUL bytes, lone continuation lines, CRLF.
    std::string junk = std::string(dep5) + std::string("\0\0\xff\n \n\t\n:\n", 10) + "\r\nFiles: *\r\nLicense: MIT\r\n";
    auto info = parse_copyright(junk);
    EXPECT_EQ(info.expression.value_or(""), "MIT");
    // Larger than the cap.
    EXPECT_FALSE(parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: MIT\n" + std::string(max_copyright_bytes, '#')).expression);
}

TEST(ParseCopyright, HeaderLicenceWhenNoFilesParagraph) {
    auto info = parse_copyright("Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0\nLicense: GPL-3+\n");
    EXPECT_EQ(info.expression.value_or(""), "GPL-3.0-or-later");
}

// ---- the copyright parser on the build host's real files (packages scripts/install-deps installs) ----

TEST(ReadPackageLicense, RealCopyrightFilesOfSeveralShapes) {
    // One licence (zlib).
    auto zlib = read_package_license("/", "zlib1g");
    EXPECT_EQ(zlib.expression.value_or(zlib.reason), "Zlib");
    // Several paragraphs, an SPDX id and a LicenseRef with its text (dash: GPL-2+, BSD-3-clause, public-domain).
    auto dash = read_package_license("/", "dash");
    ASSERT_TRUE(dash.expression) << dash.reason;
    auto terms = spdx_terms(dash);
    EXPECT_NE(std::find(terms.begin(), terms.end(), "GPL-2.0-or-later"), terms.end()) << *dash.expression;
    EXPECT_NE(std::find(terms.begin(), terms.end(), "BSD-3-Clause"), terms.end()) << *dash.expression;
    auto pd = std::find_if(dash.terms.begin(), dash.terms.end(), [](const LicenseTerm& t) { return t.spdx == "LicenseRef-public-domain"; });
    ASSERT_NE(pd, dash.terms.end()) << *dash.expression;
    EXPECT_NE(pd->text.find("Public Domain"), std::string::npos) << pd->text;
    // A choice of licences (openssl: "Artistic or GPL-1+").
    auto openssl = read_package_license("/", "openssl");
    ASSERT_TRUE(openssl.expression) << openssl.reason;
    EXPECT_NE(openssl.expression->find("LicenseRef-Artistic OR GPL-1.0-or-later"), std::string::npos) << *openssl.expression;
    EXPECT_FALSE(openssl.conjunction);
    // Not machine-readable (glibc's copyright file is prose).
    auto libc = read_package_license("/", "libc6");
    EXPECT_FALSE(libc.expression);
    EXPECT_NE(libc.reason.find("not a machine-readable"), std::string::npos) << libc.reason;
    // The doc folder is a symlink to another package's (kmod -> libkmod2).
    auto kmod = read_package_license("/", "kmod");
    auto libkmod = read_package_license("/", "libkmod2");
    ASSERT_TRUE(kmod.expression) << kmod.reason;
    EXPECT_EQ(kmod.expression, libkmod.expression);
    // No such package.
    EXPECT_FALSE(read_package_license("/", "cairn-no-such-package").expression);
}

// ---- reading inside a staged tree: untrusted symlinks, special files, names ----

TEST(ReadPackageLicense, SymlinksStayInsideTheTree) {
    Scratch dir;
    auto root = dir / "root";
    test::write_text(dir / "outside/copyright", std::string(dep5) + "\nFiles: *\nLicense: MIT\n");
    std::filesystem::create_directories(root / "usr/share/doc/abs");
    std::filesystem::create_directories(root / "usr/share/doc/rel");
    std::filesystem::create_directory_symlink(dir.path() / "outside", root / "usr/share/doc/absdir");
    std::filesystem::create_symlink(dir / "outside/copyright", root / "usr/share/doc/abs/copyright");
    std::filesystem::create_symlink("../../../../../../../../outside/copyright", root / "usr/share/doc/rel/copyright");
    for (const char* p : {"abs", "rel", "absdir"}) {
        auto info = read_package_license(root, p);
        EXPECT_FALSE(info.expression) << p << " read a file outside the tree";
    }
    // An absolute symlink inside the tree resolves against the tree's root.
    test::write_text(root / "usr/share/common/copyright", std::string(dep5) + "\nFiles: *\nLicense: ISC\n");
    std::filesystem::create_directories(root / "usr/share/doc/inside");
    std::filesystem::create_symlink("/usr/share/common/copyright", root / "usr/share/doc/inside/copyright");
    EXPECT_EQ(read_package_license(root, "inside").expression.value_or("none"), "ISC");
}

TEST(ReadPackageLicense, FifoDirectoryAndBadNamesAreNoAssertion) {
    Scratch dir;
    auto root = dir / "root";
    std::filesystem::create_directories(root / "usr/share/doc/fifo");
    ASSERT_EQ(::mkfifo((root / "usr/share/doc/fifo/copyright").c_str(), 0644), 0);
    EXPECT_FALSE(read_package_license(root, "fifo").expression);  // and does not hang
    std::filesystem::create_directories(root / "usr/share/doc/dir/copyright");
    EXPECT_FALSE(read_package_license(root, "dir").expression);
    test::write_text(root / "usr/share/doc/big/copyright", std::string(dep5) + "\nFiles: *\nLicense: MIT\n" + std::string(max_copyright_bytes, '#'));
    auto big = read_package_license(root, "big");
    EXPECT_FALSE(big.expression);
    EXPECT_NE(big.reason.find("larger than"), std::string::npos) << big.reason;
    for (const char* name : {"..", "../x", "a/b", "", "A", "x"}) EXPECT_FALSE(read_package_license(root, name).expression) << name;
}

// ---- dpkg's status file (parsed by imager/dpkg.hpp: tests/imager/dpkg_test.cpp) ----

TEST(ReadInstalledPackages, StatusAndLicencesFromAStagedTree) {
    Scratch dir;
    auto root = dir / "root";
    test::expect_error([&] { read_installed_packages(root); }, {"var/lib/dpkg/status", root.string()});
    test::write_text(root / "var/lib/dpkg/status",
                     "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nArchitecture: amd64\nDepends: libc6\n\n"
                     "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n");
    test::write_text(root / "usr/share/doc/hello/copyright", std::string(dep5) + "\nFiles: *\nLicense: GPL-3+\n");
    auto packages = read_installed_packages(root);
    ASSERT_EQ(packages.size(), 2u);
    EXPECT_EQ(packages[0].license.expression.value_or(packages[0].license.reason), "GPL-3.0-or-later");
    EXPECT_EQ(packages[0].depends, std::vector<std::string>{"libc6"});
    EXPECT_FALSE(packages[1].license.expression);  // no copyright file in the tree (the host's is not read)
}

// ---- the document ----

TEST(ToCycloneDx, PurlsChecksumsLicencesAndDependencies) {
    Bom bom;
    bom.image = test_image();
    DebPackage a{.name = "liba", .version = "1:2.0+b1", .architecture = "amd64", .sha256 = std::string(64, 'A'),
                 .source = "a-src", .depends = {"libb", "not-in-image"}};
    a.license = parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: GPL-2+\n\nFiles: x\nLicense: public-domain\n\nLicense: public-domain\n PD.\n");
    DebPackage b{.name = "libb", .version = "3", .architecture = "all"};
    b.license = parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: MIT or GPL-1+\n");
    bom.packages = {b, a};
    bom.programs = {{"cairn-init", "/usr/lib/cairn/cairn-init", "0.1.0", std::string(64, '1')}};
    bom.files = {{"/etc/motd", std::string(64, '2')}};
    json doc = to_cyclonedx(bom);
    EXPECT_EQ(doc["bomFormat"], "CycloneDX");
    EXPECT_EQ(doc["specVersion"], "1.5");
    EXPECT_EQ(doc["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    EXPECT_EQ(doc["metadata"]["component"]["name"], "cairn-test");
    auto& c = doc["components"];
    ASSERT_EQ(c.size(), 4u);
    EXPECT_EQ(c[0]["name"], "liba");  // sorted
    EXPECT_EQ(c[0]["purl"], "pkg:deb/debian/liba@1%3A2.0%2Bb1?arch=amd64&distro=debian-12");
    EXPECT_EQ(c[0]["hashes"][0]["content"], std::string(64, 'a'));
    EXPECT_EQ(c[0]["licenses"][0]["license"]["id"], "GPL-2.0-or-later");
    EXPECT_EQ(c[0]["licenses"][1]["license"]["name"], "LicenseRef-public-domain");
    EXPECT_EQ(c[0]["licenses"][1]["license"]["text"]["content"], "PD.\n");
    EXPECT_EQ(c[1]["licenses"][0]["expression"], "MIT OR GPL-1.0-or-later");
    EXPECT_FALSE(c[1].contains("hashes"));
    EXPECT_EQ(c[2]["type"], "application");
    EXPECT_EQ(c[3]["type"], "file");
    auto& deps = doc["dependencies"];
    ASSERT_EQ(deps.size(), 2u);
    EXPECT_EQ(deps[0]["ref"], "cairn:image");
    EXPECT_EQ(deps[0]["dependsOn"].size(), 4u);
    EXPECT_EQ(deps[1]["ref"], c[0]["bom-ref"]);
    EXPECT_EQ(deps[1]["dependsOn"], json::array({c[1]["bom-ref"]}));
}

TEST(ToCycloneDx, SameInputSameBytesAndTheSerialFollowsTheBuild) {
    Bom bom;
    bom.image = test_image();
    bom.packages = {{.name = "x", .version = "1", .architecture = "all"}};
    std::string first = to_cyclonedx_text(bom);
    EXPECT_EQ(first, to_cyclonedx_text(bom));
    std::string serial = to_cyclonedx(bom)["serialNumber"];
    EXPECT_EQ(serial.rfind("urn:uuid:", 0), 0u);
    bom.image.build_id = "fedcba9876543210";
    EXPECT_NE(to_cyclonedx(bom)["serialNumber"], serial);
}

TEST(ToCycloneDx, InvalidUtf8FromAPackageIsReplacedNotAnException) {
    // Found by fuzz/copyright: a licence name and text that are not UTF-8 made the JSON writer throw.
    Bom bom;
    bom.image = test_image();
    DebPackage p{.name = "x", .version = "1", .architecture = "all", .maintainer = "M\xe9ller <m@example.org>"};
    p.license = parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: Exp\xffOt\n\nLicense: Exp\xffOt\n caf\xe9\n");
    ASSERT_TRUE(p.license.expression);
    bom.packages = {p};
    std::string text = to_cyclonedx_text(bom);
    json doc = json::parse(text);
    EXPECT_EQ(doc["components"][0]["publisher"], "M\xef\xbf\xbdller <m@example.org>");
    EXPECT_EQ(doc["components"][0]["licenses"][0]["license"]["text"]["content"], "caf\xef\xbf\xbd\n");
}

TEST(ToCycloneDx, RefusesInputThatWouldMakeAWrongBom) {
    Bom bom;
    bom.image = test_image();
    bom.packages = {{.name = "x", .version = "1", .architecture = "all", .sha256 = "abc"}};
    test::expect_error([&] { to_cyclonedx(bom); }, {"'x'", "sha256"});
    bom.packages = {{.name = "x", .version = "1", .architecture = "all"}, {.name = "x", .version = "2", .architecture = "all"}};
    test::expect_error([&] { to_cyclonedx(bom); }, {"'x'", "twice"});
    bom.packages = {{.name = "x", .version = "", .architecture = "all"}};
    test::expect_error([&] { to_cyclonedx(bom); }, {"'x'", "version"});
    bom.packages.clear();
    bom.image.build_id.clear();
    test::expect_error([&] { to_cyclonedx(bom); }, {"build id"});
}

// ---- validated by CycloneDX's own validator, not by our code ----

TEST(SbomValidator, AcceptsTheSbomOfTheHostsInstalledPackages) {
    Scratch dir;
    Bom bom = host_bom();
    ASSERT_GT(bom.packages.size(), 100u);
    size_t licensed = std::count_if(bom.packages.begin(), bom.packages.end(), [](const DebPackage& p) { return p.license.expression.has_value(); });
    EXPECT_GT(licensed, bom.packages.size() / 3) << "too few DEP-5 licences read from /usr/share/doc";
    auto file = dir / "sbom.cdx.json";
    write_file_atomic(file, to_cyclonedx_text(bom));
    EXPECT_TRUE(valid(file));
    json doc = json::parse(read_file(file));
    EXPECT_EQ(doc["components"].size(), bom.packages.size() + 2);
}

TEST(SbomValidator, AcceptsEveryLicenceIdTheMappingProduces) {
    // The validator checks licence ids against SPDX's list: a mapping to an id that does not
    // exist fails here.
    Scratch dir;
    Bom bom;
    bom.image = test_image();
    int i = 0;
    for (const char* name : {"GPL-1", "GPL-1+", "GPL-2", "GPL-2+", "GPL-3", "GPL-3+", "LGPL-2", "LGPL-2+", "LGPL-2.1", "LGPL-2.1+",
                             "LGPL-3", "LGPL-3+", "AGPL-3", "AGPL-3+", "GFDL-1.1", "GFDL-1.2+", "GFDL-1.3", "GFDL-NIV-1.1",
                             "GFDL-NIV-1.2+", "GFDL-NIV-1.3", "Apache-1.0", "Apache-1.1", "Apache-2.0", "Artistic-2.0", "MPL-1.0",
                             "MPL-1.1", "MPL-2.0", "EPL-1.0", "EPL-2.0", "CDDL-1.0", "CDDL-1.1", "CC0", "CC0-1.0", "Zope-2.0",
                             "Zope-2.1", "ZPL-2.1", "LPPL-1.3a", "LPPL-1.3c", "OFL-1.0", "OFL-1.1", "Python-2.0", "PSF-2", "BSL-1.0",
                             "bzip2-1.0.6", "CC-BY-1.0", "CC-BY-SA-2.5", "CC-BY-ND-3.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-2.0",
                             "CC-BY-NC-ND-4.0", "Expat", "MIT", "ISC", "Zlib", "BSD-2-clause", "BSD-3-clause", "BSD-4-clause",
                             "0BSD", "W3C", "X11", "OpenSSL", "curl", "Unlicense", "WTFPL", "libpng", "IJG", "Sleepycat", "TCL",
                             "FTL", "Beerware"}) {
        auto id = spdx_license_id(name);
        ASSERT_TRUE(id) << name;
        DebPackage p{.name = "p" + std::to_string(i++), .version = "1", .architecture = "all"};
        p.license = parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: " + name + "\n");
        ASSERT_TRUE(p.license.conjunction) << name;
        bom.packages.push_back(p);
    }
    auto file = dir / "licences.cdx.json";
    write_file_atomic(file, to_cyclonedx_text(bom));
    EXPECT_TRUE(valid(file));
}

TEST(SbomValidator, RejectsBrokenSboms) {
    Scratch dir;
    Bom bom;
    bom.image = test_image();
    DebPackage p{.name = "x", .version = "1", .architecture = "all", .sha256 = fake_sha("x")};
    p.license = parse_copyright(std::string(dep5) + "\nFiles: *\nLicense: GPL-2+\n");
    bom.packages = {p};
    json good = to_cyclonedx(bom);
    std::vector<std::pair<std::string, json>> docs = {{"good", good}};
    json no_format = good;
    no_format.erase("bomFormat");
    docs.emplace_back("no-bomFormat", no_format);
    json no_name = good;
    no_name["components"][0].erase("name");
    docs.emplace_back("component-without-name", no_name);
    json debian_id = good;
    debian_id["components"][0]["licenses"][0]["license"]["id"] = "GPL-2+";  // a Debian name is no SPDX id
    docs.emplace_back("debian-licence-id", debian_id);
    json short_hash = good;
    short_hash["components"][0]["hashes"][0]["content"] = "abc";
    docs.emplace_back("short-hash", short_hash);
    json bad_serial = good;
    bad_serial["serialNumber"] = "not-a-urn";
    docs.emplace_back("bad-serial", bad_serial);
    std::vector<std::filesystem::path> files;
    for (const auto& [name, doc] : docs) {
        files.push_back(dir / (name + ".json"));
        write_file_atomic(files.back(), doc.dump(2));
    }
    write_file_atomic(dir / "not-json.json", "{\"bomFormat\": ");
    files.push_back(dir / "not-json.json");
    auto verdicts = validate(files);
    for (const auto& f : files) {
        bool expected = f.filename() == "good.json";
        ASSERT_TRUE(verdicts.count(f.string())) << f.string();
        EXPECT_EQ(verdicts[f.string()], expected) << f.filename().string();
    }
}
