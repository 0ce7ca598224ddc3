#include "imager/authenticode.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;
using cairn::test::expect_error;
namespace fs = std::filesystem;

namespace {

const fs::path stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";  // a PE32+ image to sign
const fs::path snakeoil_key = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const fs::path snakeoil_cert = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
SigningKey snakeoil() { return {snakeoil_key, snakeoil_cert, "snakeoil"}; }

bool verifies(const fs::path& pe, const fs::path& cert) { return run({"sbverify", "--cert", cert.string(), pe.string()}).exit_code == 0; }

void make_other_key(const Scratch& dir) {
    run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", (dir / "other.key").string(), "-out",
                 (dir / "other.pem").string(), "-days", "1", "-subj", "/CN=Cairn test other"});
}


}  // namespace

TEST(Authenticode, SbverifyAcceptsOurSignatureOnlyWithTheRightCertificate) {
    Scratch dir;
    sign_pe(stub, dir / "signed.efi", snakeoil(), 1700000000);
    EXPECT_TRUE(verifies(dir / "signed.efi", snakeoil_cert));
    EXPECT_FALSE(verifies(stub, snakeoil_cert)) << "the unsigned stub verified";
    make_other_key(dir);
    EXPECT_FALSE(verifies(dir / "signed.efi", dir / "other.pem"));
    // An unencrypted key, and signing in place.
    fs::copy_file(stub, dir / "inplace.efi");
    sign_pe(dir / "inplace.efi", dir / "inplace.efi", {dir / "other.key", dir / "other.pem", ""}, 1700000000);
    EXPECT_TRUE(verifies(dir / "inplace.efi", dir / "other.pem"));
}

TEST(Authenticode, SameInputsAndEpochGiveTheSameBytes) {
    Scratch dir;
    sign_pe(stub, dir / "one.efi", snakeoil(), 1700000000);
    sign_pe(stub, dir / "two.efi", snakeoil(), 1700000000);
    sign_pe(stub, dir / "later.efi", snakeoil(), 1800000000);
    EXPECT_EQ(read_file(dir / "one.efi"), read_file(dir / "two.efi"));
    EXPECT_NE(read_file(dir / "one.efi"), read_file(dir / "later.efi")) << "the epoch is the signing time";
    // The signing time is in the signature: openssl shows it.
    run_checked({"sbattach", "--detach", (dir / "sig.p7").string(), (dir / "one.efi").string()});
    std::string printed = run_checked({"openssl", "pkcs7", "-inform", "DER", "-in", (dir / "sig.p7").string(), "-print"});
    EXPECT_NE(printed.find("UTCTIME:Nov 14 22:13:20 2023 GMT"), std::string::npos) << "signingTime is the epoch";
}

TEST(Authenticode, DigestSkipsTheChecksumAndCertificateTable) {
    Scratch dir;
    const std::string image = read_file(stub);
    sign_pe(stub, dir / "signed.efi", snakeoil(), 1700000000);
    const std::string signed_image = read_file(dir / "signed.efi");
    // Signing changes the checksum and the certificate table entry, and appends the table: none of it is hashed,
    // but the padding to 8 bytes is.
    std::string padded = image;
    padded.resize((padded.size() + 7) / 8 * 8, '\0');
    EXPECT_EQ(authenticode_digest(signed_image, "signed"), authenticode_digest(padded, "padded"));
    std::string changed = padded;
    changed[changed.size() / 2] ^= 1;
    EXPECT_NE(authenticode_digest(changed, "changed"), authenticode_digest(padded, "padded"));
}

TEST(Authenticode, ErrorsNameTheFile) {
    Scratch dir;
    auto out = dir / "signed.efi";
    expect_error([&] { sign_pe(stub, out, {snakeoil_key, snakeoil_cert, "wrong"}, 0); }, {snakeoil_key.string(), "wrong passphrase"});
    expect_error([&] { sign_pe(stub, out, {snakeoil_key, snakeoil_cert, ""}, 0); }, {snakeoil_key.string(), "no passphrase"});
    expect_error([&] { sign_pe(stub, out, {dir / "no.key", snakeoil_cert, "x"}, 0); }, {(dir / "no.key").string(), "cannot open"});
    expect_error([&] { sign_pe(stub, out, {snakeoil_key, dir / "no.pem", "snakeoil"}, 0); }, {(dir / "no.pem").string()});
    test::write_text(dir / "junk.pem", "not a certificate\n");
    expect_error([&] { sign_pe(stub, out, {snakeoil_key, dir / "junk.pem", "snakeoil"}, 0); }, {(dir / "junk.pem").string(), "not a PEM certificate"});
    expect_error([&] { sign_pe(stub, out, {dir / "junk.pem", snakeoil_cert, ""}, 0); }, {(dir / "junk.pem").string(), "not a PEM private key"});
    make_other_key(dir);
    expect_error([&] { sign_pe(stub, out, {dir / "other.key", snakeoil_cert, ""}, 0); },
                 {(dir / "other.key").string(), "does not match", snakeoil_cert.string()});
    expect_error([&] { sign_pe(dir / "junk.pem", out, snakeoil(), 0); }, {(dir / "junk.pem").string(), "not a PE image"});
    EXPECT_FALSE(fs::exists(out));
    sign_pe(stub, out, snakeoil(), 0);
    expect_error([&] { sign_pe(out, dir / "twice.efi", snakeoil(), 0); }, {out.string(), "already signed"});
}
