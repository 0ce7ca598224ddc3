#include "imager/uki.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/cpio.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::expect_error;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

const std::string cmdline = "console=ttyS0 cairn.slot=a roothash=0123456789abcdef panic=10";
const std::string os_release = "ID=cairn\nNAME=\"Cairn\"\nVERSION_ID=1\n";
// Debian's OVMF test key and certificate, enrolled in OVMF_VARS_4M.snakeoil.fd.
const fs::path snakeoil_cert = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const SigningKey snakeoil{"/usr/share/ovmf/PkKek-1-snakeoil.key", snakeoil_cert, "snakeoil"};

fs::path kernel() { return test::test_images() / "minimal/vmlinuz"; }

// Why the tests that need a real stub and kernel cannot run, or empty.
std::string missing_parts() {
    if (!fs::exists(UkiParts{}.stub)) return UkiParts{}.stub.string() + " is missing (install systemd-boot-efi)";
    if (!fs::exists(kernel()))
        return kernel().string() + " is missing (the integration fixture builds it: ctest -L integration)";
    for (const char* tool : {"objcopy", "objdump", "sbverify", "openssl"})
        if (!find_program(tool)) return std::string(tool) + " is not installed";
    return {};
}

#define SKIP_WITHOUT_PARTS()                                               \
    do {                                                                   \
        if (auto why = missing_parts(); !why.empty()) GTEST_SKIP() << why; \
    } while (0)

UkiParts sample_parts(const Scratch& dir) {
    test::write_text(dir / "init", "#!/bin/sh\n");
    write_initrd(dir / "initrd.img",
                 {{.path = "init", .mode = S_IFREG | 0755, .source = dir / "init"},
                  {.path = "etc/os-release", .mode = S_IFREG | 0644, .content = os_release}},
                 "gzip", 1700000000);
    UkiParts parts;
    parts.kernel = kernel();
    parts.initrd = dir / "initrd.img";
    parts.cmdline = cmdline;
    parts.os_release = os_release;
    parts.uname = "6.1.0-99-cloud-amd64";
    return parts;
}

struct ObjdumpSection {
    std::string name;
    uint64_t size = 0, vma = 0;
};

// The section table as objdump -h reads it.
std::vector<ObjdumpSection> objdump_sections(const fs::path& pe) {
    std::istringstream lines(run_checked({"objdump", "-h", pe.string()}));
    std::vector<ObjdumpSection> result;
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string index, name, size, vma;
        if (!(fields >> index >> name >> size >> vma)) continue;
        if (index.empty() || !std::all_of(index.begin(), index.end(), ::isdigit)) continue;
        result.push_back({name, std::stoull(size, nullptr, 16), std::stoull(vma, nullptr, 16)});
    }
    return result;
}

std::string section_content(const fs::path& pe, const std::string& name, const Scratch& dir) {
    auto out = dir / ("section" + name);
    run_checked({"objcopy", "-O", "binary", "--only-section=" + name, pe.string(), out.string()});
    return read_file(out);
}

std::string pe_time(const fs::path& pe) {
    std::istringstream lines(run_checked({"objdump", "-p", pe.string()}));
    std::string line;
    while (std::getline(lines, line))
        if (line.rfind("Time/Date", 0) == 0) return line;
    return {};
}

bool verifies(const fs::path& pe, const fs::path& cert) {
    return run({"sbverify", "--cert", cert.string(), pe.string()}).exit_code == 0;
}

// The first hex word after `label` in `text`, lower-cased, or empty.
std::string hex_after(const std::string& text, const std::string& label) {
    auto at = text.find(label);
    if (at == std::string::npos) return {};
    at = text.find_first_of("0123456789abcdefABCDEF", at + label.size());
    auto end = text.find_first_not_of("0123456789abcdefABCDEF", at);
    std::string word = text.substr(at, end - at);
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
    return word;
}

}  // namespace

TEST(Uki, SectionsFollowTheStubAtPageAlignedAddresses) {
    SKIP_WITHOUT_PARTS();
    Scratch dir;
    auto uki = dir / "uki.efi";
    assemble_uki(sample_parts(dir), uki);

    auto stub = objdump_sections(UkiParts{}.stub);
    auto sections = objdump_sections(uki);
    ASSERT_EQ(sections.size(), stub.size() + 5);
    uint64_t stub_end = 0;
    for (size_t i = 0; i < stub.size(); ++i) {
        EXPECT_EQ(sections[i].name, stub[i].name);
        EXPECT_EQ(sections[i].vma, stub[i].vma);
        stub_end = std::max(stub_end, stub[i].vma + stub[i].size);
    }
    std::vector<std::string> added;
    for (size_t i = stub.size(); i < sections.size(); ++i) {
        added.push_back(sections[i].name);
        EXPECT_EQ(sections[i].vma % 4096, 0u) << sections[i].name;
        EXPECT_GE(sections[i].vma, stub_end) << sections[i].name;
    }
    EXPECT_EQ(added, (std::vector<std::string>{".osrel", ".cmdline", ".uname", ".initrd", ".linux"}));
    // Increasing addresses, no overlaps, across the whole image.
    for (size_t i = 1; i < sections.size(); ++i)
        EXPECT_LE(sections[i - 1].vma + sections[i - 1].size, sections[i].vma) << sections[i].name;

    // pe_sections reads the same table.
    auto ours = pe_sections(uki);
    ASSERT_EQ(ours.size(), sections.size());
    for (size_t i = 0; i < ours.size(); ++i) {
        EXPECT_EQ(ours[i].first, sections[i].name);
        EXPECT_EQ(ours[i].second, sections[i].size) << sections[i].name;
    }
    EXPECT_EQ(ours.back().second, fs::file_size(kernel()));
}

TEST(Uki, SectionContentRoundTrips) {
    SKIP_WITHOUT_PARTS();
    Scratch dir;
    auto parts = sample_parts(dir);
    auto uki = dir / "uki.efi";
    assemble_uki(parts, uki);
    EXPECT_EQ(section_content(uki, ".cmdline", dir), cmdline);
    EXPECT_EQ(section_content(uki, ".osrel", dir), os_release);
    EXPECT_EQ(section_content(uki, ".uname", dir), parts.uname);
    EXPECT_EQ(section_content(uki, ".initrd", dir), read_file(parts.initrd));
    EXPECT_EQ(section_content(uki, ".linux", dir), read_file(kernel()));
}

TEST(Uki, NoUnameNoSection) {
    SKIP_WITHOUT_PARTS();
    Scratch dir;
    auto parts = sample_parts(dir);
    parts.uname.clear();
    assemble_uki(parts, dir / "uki.efi");
    for (const auto& [name, size] : pe_sections(dir / "uki.efi")) EXPECT_NE(name, ".uname");
}

TEST(Uki, AssemblyIsReproducible) {
    SKIP_WITHOUT_PARTS();
    Scratch dir;
    auto parts = sample_parts(dir);
    assemble_uki(parts, dir / "one.efi");
    ::sleep(1);  // objcopy without -p stamps the wall clock into the COFF header
    assemble_uki(parts, dir / "two.efi");
    EXPECT_EQ(read_file(dir / "one.efi"), read_file(dir / "two.efi"));
    EXPECT_EQ(pe_time(dir / "one.efi"), pe_time(UkiParts{}.stub));
    parts.cmdline += " quiet";
    assemble_uki(parts, dir / "three.efi");
    EXPECT_NE(read_file(dir / "one.efi"), read_file(dir / "three.efi"));
}

TEST(Uki, AssemblyErrorsNameTheFile) {
    SKIP_WITHOUT_PARTS();
    Scratch dir;
    auto parts = sample_parts(dir);
    auto out = dir / "uki.efi";
    auto bad = parts;
    bad.kernel = dir / "no-vmlinuz";
    expect_error([&] { assemble_uki(bad, out); }, {(dir / "no-vmlinuz").string(), "kernel"});
    bad = parts;
    bad.initrd = dir / "no-initrd";
    expect_error([&] { assemble_uki(bad, out); }, {(dir / "no-initrd").string(), "initrd"});
    bad = parts;
    bad.cmdline.clear();
    expect_error([&] { assemble_uki(bad, out); }, {out.string(), "command line is empty"});
    bad = parts;
    bad.stub = parts.initrd;  // not a PE image
    expect_error([&] { assemble_uki(bad, out); }, {parts.initrd.string(), "not a PE image"});
    EXPECT_FALSE(fs::exists(out));
    EXPECT_THROW(pe_sections(dir / "missing.efi"), Error);
}

// A UKI carries more than the stub (its COFF symbol table now lies between .linux and the certificate table): the
// signature must still verify, and the tools that compute the Authenticode digest must agree with ours.
TEST(Uki, SignedUkiVerifiesAndToolsAgreeOnItsDigest) {
    SKIP_WITHOUT_PARTS();
    Scratch dir;
    auto uki = dir / "uki.efi", signed_uki = dir / "signed.efi";
    assemble_uki(sample_parts(dir), uki);
    sign_pe(uki, signed_uki, snakeoil, 1700000000);
    EXPECT_TRUE(verifies(signed_uki, snakeoil_cert));
    EXPECT_FALSE(verifies(uki, snakeoil_cert)) << "the unsigned UKI verified";
    run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", (dir / "other.key").string(),
                 "-out", (dir / "other.pem").string(), "-days", "1", "-subj", "/CN=Cairn test other"});
    EXPECT_FALSE(verifies(signed_uki, dir / "other.pem"));
    EXPECT_EQ(pe_sections(signed_uki), pe_sections(uki));

    // Reproducible: the same UKI, key and epoch give the same bytes; the epoch is the signing time.
    sign_pe(uki, dir / "again.efi", snakeoil, 1700000000);
    EXPECT_EQ(read_file(dir / "again.efi"), read_file(signed_uki));
    sign_pe(uki, dir / "later.efi", snakeoil, 1700000001);
    EXPECT_NE(read_file(dir / "later.efi"), read_file(signed_uki));

    const std::string ours = to_hex(authenticode_digest(read_file(signed_uki), signed_uki.string()));
    if (find_program("osslsigncode")) {
        auto r = run({"osslsigncode", "verify", "-CAfile", snakeoil_cert.string(), "-in", signed_uki.string()});
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        EXPECT_EQ(hex_after(r.out, "Calculated message digest"), ours) << r.out;
        EXPECT_EQ(hex_after(r.out, "Current message digest"), ours) << r.out;
        EXPECT_EQ(r.out.find("invalid PE checksum"), std::string::npos) << r.out;
    }
    if (find_program("pesign")) {
        auto r = run({"pesign", "-h", "-i", signed_uki.string()});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(hex_after(r.out, "hash:"), ours) << r.out << r.err;
    }
}
