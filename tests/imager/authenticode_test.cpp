#include "imager/authenticode.hpp"

#include <gtest/gtest.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::expect_error;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

const fs::path stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";  // a PE32+ image to sign
const fs::path snakeoil_key = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const fs::path snakeoil_cert = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
SigningKey snakeoil() { return {snakeoil_key, snakeoil_cert, "snakeoil"}; }

bool verifies(const fs::path& pe, const fs::path& cert) {
    return run({"sbverify", "--cert", cert.string(), pe.string()}).exit_code == 0;
}

void make_other_key(const Scratch& dir) {
    run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", (dir / "other.key").string(),
                 "-out", (dir / "other.pem").string(), "-days", "1", "-subj", "/CN=Cairn test other"});
}

uint32_t le32(const std::string& d, size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | uint8_t(d[at + i]);
    return v;
}

std::string digest_hex(const fs::path& pe) { return to_hex(authenticode_digest(read_file(pe), pe.string())); }

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    return text;
}

// The text after "<name>:" on the first line of `text` that starts with `name` (blanks trimmed), or empty.
std::string field(const std::string& text, const std::string& name) {
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        auto start = line.find_first_not_of(" \t");
        if (start == std::string::npos || line.compare(start, name.size(), name) != 0) continue;
        auto colon = line.find(':', start + name.size());
        if (colon == std::string::npos) continue;
        auto value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t") + 1);
        return value;
    }
    return {};
}

// The PKCS#7 signature of a signed image, as sbattach detaches it.
std::string detached_signature(const fs::path& pe, const Scratch& dir) {
    const fs::path sig = dir / (pe.filename().string() + ".p7");
    run_checked({"sbattach", "--detach", sig.string(), pe.string()});
    return read_file(sig);
}

template <typename T, void (*Free)(T*)>
struct Deleter {
    void operator()(T* p) const { Free(p); }
};
using Pkcs7Ptr = std::unique_ptr<PKCS7, Deleter<PKCS7, PKCS7_free>>;
void free_openssl_buffer(unsigned char* p) { OPENSSL_free(p); }
using OpensslBufferPtr = std::unique_ptr<unsigned char, Deleter<unsigned char, free_openssl_buffer>>;

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
    std::string printed =
        run_checked({"openssl", "pkcs7", "-inform", "DER", "-in", (dir / "sig.p7").string(), "-print"});
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
    expect_error(
        [&] {
            sign_pe(stub, out, {snakeoil_key, snakeoil_cert, "wrong"}, 0);
        },
        {snakeoil_key.string(), "wrong passphrase"});
    expect_error(
        [&] {
            sign_pe(stub, out, {snakeoil_key, snakeoil_cert, ""}, 0);
        },
        {snakeoil_key.string(), "no passphrase"});
    expect_error(
        [&] {
            sign_pe(stub, out, {dir / "no.key", snakeoil_cert, "x"}, 0);
        },
        {(dir / "no.key").string(), "cannot open"});
    expect_error(
        [&] {
            sign_pe(stub, out, {snakeoil_key, dir / "no.pem", "snakeoil"}, 0);
        },
        {(dir / "no.pem").string()});
    test::write_text(dir / "junk.pem", "not a certificate\n");
    expect_error(
        [&] {
            sign_pe(stub, out, {snakeoil_key, dir / "junk.pem", "snakeoil"}, 0);
        },
        {(dir / "junk.pem").string(), "not a PEM certificate"});
    expect_error(
        [&] {
            sign_pe(stub, out, {dir / "junk.pem", snakeoil_cert, ""}, 0);
        },
        {(dir / "junk.pem").string(), "not a PEM private key"});
    make_other_key(dir);
    expect_error(
        [&] {
            sign_pe(stub, out, {dir / "other.key", snakeoil_cert, ""}, 0);
        },
        {(dir / "other.key").string(), "does not match", snakeoil_cert.string()});
    expect_error([&] { sign_pe(dir / "junk.pem", out, snakeoil(), 0); },
                 {(dir / "junk.pem").string(), "not a PE image"});
    EXPECT_FALSE(fs::exists(out));
    sign_pe(stub, out, snakeoil(), 0);
    expect_error([&] { sign_pe(out, dir / "twice.efi", snakeoil(), 0); }, {out.string(), "already signed"});
}

TEST(Authenticode, SignedAttributesAreTheFourOfAuthenticodeInDerOrder) {
    Scratch dir;
    sign_pe(stub, dir / "signed.efi", snakeoil(), 1700000000);
    const std::string der = detached_signature(dir / "signed.efi", dir);
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
    Pkcs7Ptr p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der.size())));
    ASSERT_TRUE(p7);
    ASSERT_TRUE(PKCS7_type_is_signed(p7.get()));
    char oid[80];
    OBJ_obj2txt(oid, sizeof oid, p7->d.sign->contents->type, 1);
    EXPECT_STREQ(oid, "1.3.6.1.4.1.311.2.1.4") << "content type SPC_INDIRECT_DATA";
    STACK_OF(PKCS7_SIGNER_INFO)* signers = PKCS7_get_signer_info(p7.get());
    ASSERT_EQ(sk_PKCS7_SIGNER_INFO_num(signers), 1);
    STACK_OF(X509_ATTRIBUTE)* attributes = sk_PKCS7_SIGNER_INFO_value(signers, 0)->auth_attr;
    std::vector<std::string> oids, encodings;
    for (int i = 0; i < sk_X509_ATTRIBUTE_num(attributes); ++i) {
        X509_ATTRIBUTE* a = sk_X509_ATTRIBUTE_value(attributes, i);
        OBJ_obj2txt(oid, sizeof oid, X509_ATTRIBUTE_get0_object(a), 1);
        oids.push_back(oid);
        unsigned char* raw = nullptr;
        int size = i2d_X509_ATTRIBUTE(a, &raw);
        OpensslBufferPtr owner(raw);
        ASSERT_GT(size, 0);
        encodings.emplace_back(reinterpret_cast<const char*>(raw), static_cast<size_t>(size));
    }
    std::sort(oids.begin(), oids.end());
    EXPECT_EQ(oids, (std::vector<std::string>{"1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.5",
                                              "1.3.6.1.4.1.311.2.1.12"}))
        << "contentType, messageDigest, signingTime, SpcSpOpusInfo and nothing else";
    // A SET OF in DER: the encodings in ascending order, as they were signed.
    EXPECT_TRUE(std::is_sorted(encodings.begin(), encodings.end(), [](const std::string& a, const std::string& b) {
        return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                            [](char x, char y) { return uint8_t(x) < uint8_t(y); });
    }));
    // The message digest covers SpcIndirectDataContent, whose DigestInfo holds the image's digest.
    ASN1_TYPE* other = p7->d.sign->contents->d.other;
    ASSERT_EQ(other->type, V_ASN1_SEQUENCE);
    const std::string content(reinterpret_cast<const char*>(other->value.sequence->data),
                              other->value.sequence->length);
    const auto digest = authenticode_digest(read_file(dir / "signed.efi"), "signed");
    EXPECT_EQ(content.substr(content.size() - 32), std::string(digest.begin(), digest.end()));
}

TEST(Authenticode, SigningTimesAfter2049AreGeneralizedTime) {
    Scratch dir;
    sign_pe(stub, dir / "signed.efi", snakeoil(), 2524608000);  // 2050-01-01
    EXPECT_TRUE(verifies(dir / "signed.efi", snakeoil_cert));
    test::write_text(dir / "sig.p7", detached_signature(dir / "signed.efi", dir));
    std::string printed =
        run_checked({"openssl", "pkcs7", "-inform", "DER", "-in", (dir / "sig.p7").string(), "-print"});
    EXPECT_NE(printed.find("GENERALIZEDTIME:Jan  1 00:00:00 2050 GMT"), std::string::npos) << printed;
}

// The COFF symbol table of the stub lies after its last section: the firmware hashes it (as the bytes between the
// sections and the certificate table), so the signature must cover it.
TEST(Authenticode, BytesAfterTheLastSectionAreSigned) {
    Scratch dir;
    sign_pe(stub, dir / "signed.efi", snakeoil(), 1700000000);
    std::string image = read_file(dir / "signed.efi");
    const size_t pe = le32(image, 0x3c), symbol_table = le32(image, pe + 12);
    const size_t cert_table = le32(image, pe + 24 + 112 + 4 * 8);
    ASSERT_GT(symbol_table, 0u) << "the stub has no symbol table any more; pick another trailing byte";
    ASSERT_LT(symbol_table, cert_table);
    image[symbol_table + 4] ^= 0x20;
    test::write_text(dir / "changed.efi", image);
    EXPECT_FALSE(verifies(dir / "changed.efi", snakeoil_cert)) << "a change after the last section went unnoticed";
    EXPECT_NE(digest_hex(dir / "changed.efi"), digest_hex(dir / "signed.efi"));
}

TEST(Authenticode, OsslsigncodeVerifiesAndComputesTheSameDigest) {
    if (!find_program("osslsigncode")) GTEST_SKIP() << "osslsigncode is not installed";
    Scratch dir;
    sign_pe(stub, dir / "signed.efi", snakeoil(), 1700000000);
    auto r = run({"osslsigncode", "verify", "-CAfile", snakeoil_cert.string(), "-in", (dir / "signed.efi").string()});
    const std::string out = r.out + r.err;
    EXPECT_EQ(r.exit_code, 0) << out;
    EXPECT_NE(out.find("Signature verification: ok"), std::string::npos) << out;
    EXPECT_EQ(lower(field(out, "Current message digest")), digest_hex(dir / "signed.efi")) << out;
    EXPECT_EQ(lower(field(out, "Calculated message digest")), digest_hex(dir / "signed.efi")) << out;
    EXPECT_EQ(out.find("invalid PE checksum"), std::string::npos) << out;
    EXPECT_EQ(field(out, "Signing time"), "Nov 14 22:13:20 2023 GMT") << out;
    make_other_key(dir);
    r = run({"osslsigncode", "verify", "-CAfile", (dir / "other.pem").string(), "-in", (dir / "signed.efi").string()});
    EXPECT_NE(r.exit_code, 0) << "osslsigncode accepted the signature with another CA\n" << r.out << r.err;
}

TEST(Authenticode, PesignShowsTheSignatureAndComputesTheSameDigest) {
    if (!find_program("pesign")) GTEST_SKIP() << "pesign is not installed";
    Scratch dir;
    sign_pe(stub, dir / "signed.efi", snakeoil(), 1700000000);
    auto shown = run({"pesign", "-S", "-i", (dir / "signed.efi").string()});
    EXPECT_EQ(shown.exit_code, 0) << shown.err;
    EXPECT_EQ(field(shown.out, "Signing time"), "Tue Nov 14, 2023") << shown.out << shown.err;
    auto hashed = run({"pesign", "-h", "-i", (dir / "signed.efi").string()});
    EXPECT_EQ(hashed.exit_code, 0) << hashed.err;
    EXPECT_EQ(field(hashed.out, "hash"), digest_hex(dir / "signed.efi")) << hashed.out << hashed.err;
}

