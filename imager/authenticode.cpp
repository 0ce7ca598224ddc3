#include "imager/authenticode.hpp"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/openssl.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

namespace {

uint16_t le16(const std::string& d, size_t at) {
    return static_cast<uint16_t>(uint8_t(d[at]) | uint8_t(d[at + 1]) << 8);
}
uint32_t le32(const std::string& d, size_t at) { return uint32_t(le16(d, at)) | uint32_t(le16(d, at + 2)) << 16; }
void put32(std::string& d, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) d[at + i] = static_cast<char>(v >> (8 * i) & 0xff);
}

// Where the fields Authenticode skips sit in a PE32+ image.
struct PeLayout {
    size_t checksum = 0;    // offset of OptionalHeader.CheckSum
    size_t cert_entry = 0;  // offset of the Certificate Table data directory entry
    size_t size_of_headers = 0;
    std::vector<std::pair<uint32_t, uint32_t>> sections;  // PointerToRawData, SizeOfRawData
};

PeLayout parse_pe(const std::string& d, const std::string& what) {
    auto need = [&](size_t end) {
        if (end > d.size()) fail(what + ": not a PE image (truncated headers)");
    };
    need(0x40);
    if (d[0] != 'M' || d[1] != 'Z') fail(what + ": not a PE image (no MZ header)");
    size_t pe = le32(d, 0x3c);
    need(pe + 24);
    if (std::memcmp(d.data() + pe, "PE\0\0", 4) != 0) fail(what + ": not a PE image (no PE signature)");
    const size_t coff = pe + 4;
    const uint16_t sections = le16(d, coff + 2);
    const uint16_t optional_size = le16(d, coff + 16);
    const size_t opt = coff + 20;
    need(opt + optional_size);
    if (le16(d, opt) != 0x20b) fail(what + ": not a PE32+ image (UEFI x86-64 images are PE32+)");
    if (optional_size < 112 + 5 * 8 || le32(d, opt + 108) < 5)
        fail(what + ": the PE image has no certificate table directory entry");
    PeLayout l;
    l.checksum = opt + 64;
    l.cert_entry = opt + 112 + 4 * 8;
    l.size_of_headers = le32(d, opt + 60);
    size_t table = opt + optional_size;
    need(table + size_t(sections) * 40);
    for (uint16_t i = 0; i < sections; ++i) {
        size_t s = table + size_t(i) * 40;
        uint32_t raw_size = le32(d, s + 16), raw_pointer = le32(d, s + 20);
        if (raw_size == 0) continue;
        if (size_t(raw_pointer) + raw_size > d.size())
            fail(what + ": PE section " + std::to_string(i) + " lies past the end of the file");
        l.sections.push_back({raw_pointer, raw_size});
    }
    std::sort(l.sections.begin(), l.sections.end());
    if (l.size_of_headers > d.size() || l.size_of_headers < l.cert_entry + 8)
        fail(what + ": bad SizeOfHeaders in the PE image");
    return l;
}

// The standard PE checksum: 16-bit one's-complement-style sum without the CheckSum field, plus the length.
uint32_t pe_checksum(const std::string& d, size_t checksum_at) {
    uint64_t sum = 0;
    for (size_t i = 0; i + 1 < d.size(); i += 2) {
        if (i == checksum_at || i == checksum_at + 2) continue;
        sum += le16(d, i);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if (d.size() % 2) sum += uint8_t(d.back());
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint32_t>(sum + d.size());
}

std::string der_length(size_t n) {
    if (n < 0x80) return std::string(1, static_cast<char>(n));
    std::string bytes;
    for (size_t v = n; v; v >>= 8) bytes.insert(bytes.begin(), static_cast<char>(v & 0xff));
    return std::string(1, static_cast<char>(0x80 | bytes.size())) + bytes;
}

std::string der(uint8_t tag, const std::string& content) {
    return std::string(1, static_cast<char>(tag)) + der_length(content.size()) + content;
}

// SpcIndirectDataContent: { SpcAttributeTypeAndOptionalValue { SPC_PE_IMAGE_DATAOBJ, SpcPeImageData },
// DigestInfo { sha256, digest } }, with the customary empty SpcPeImageData (no flags, an empty file link).
std::string indirect_data_content(const std::array<uint8_t, 32>& digest) {
    const std::string pe_image_data_oid("\x2b\x06\x01\x04\x01\x82\x37\x02\x01\x0f", 10);  // 1.3.6.1.4.1.311.2.1.15
    const std::string sha256_oid("\x60\x86\x48\x01\x65\x03\x04\x02\x01", 9);              // 2.16.840.1.101.3.4.2.1
    const std::string pe_image_data =
        der(0x30, std::string("\x03\x01\x00", 3) + der(0xa0, der(0xa2, std::string("\x80\x00", 2))));
    const std::string attribute = der(0x30, der(0x06, pe_image_data_oid) + pe_image_data);
    const std::string digest_info = der(0x30, der(0x30, der(0x06, sha256_oid) + std::string("\x05\x00", 2)) +
                                                  der(0x04, std::string(digest.begin(), digest.end())));
    return der(0x30, attribute + digest_info);
}

// Adds a signed attribute. `value` passes to OpenSSL before the call: it frees it itself when the attribute cannot be
// stored, so keeping it here could free it twice (at worst it leaks when memory runs out).
void add_signed_attribute(PKCS7_SIGNER_INFO* si, int nid, int type, Asn1StringPtr value, const std::string& what) {
    if (!value) fail("signing: cannot make " + what + ": " + openssl_error());
    if (PKCS7_add_signed_attribute(si, nid, type, value.release()) != 1)
        fail("signing: cannot add " + what + ": " + openssl_error());
}

}  // namespace

std::array<uint8_t, 32> authenticode_digest(const std::string& d, const std::string& what) {
    PeLayout l = parse_pe(d, what);
    const uint32_t cert_size = le32(d, l.cert_entry + 4);
    Sha256 h;
    h.update(d.data(), l.checksum);
    h.update(d.data() + l.checksum + 4, l.cert_entry - (l.checksum + 4));
    h.update(d.data() + l.cert_entry + 8, l.size_of_headers - (l.cert_entry + 8));
    size_t hashed = l.size_of_headers;
    for (auto [pointer, size] : l.sections) {
        h.update(d.data() + pointer, size);
        hashed += size;
    }
    // As the firmware does (EDK2 DxeImageVerificationLib): whatever follows, up to the certificate table, counted from
    // the sum of the above (the COFF symbol table of the stub and the 8-byte padding lie there).
    if (d.size() < hashed + cert_size)
        fail(what + ": the PE sections and certificate table claim more bytes than the file has");
    if (d.size() > hashed + cert_size) h.update(d.data() + hashed, d.size() - cert_size - hashed);
    return h.final();
}

void sign_pe(const fs::path& in, const fs::path& out, const SigningKey& k, int64_t epoch) {
    std::string image = read_file(in);
    PeLayout layout = parse_pe(image, in.string());
    if (le32(image, layout.cert_entry) != 0 || le32(image, layout.cert_entry + 4) != 0)
        fail(in.string() + ": already signed (remove the signature first)");
    PkeyPtr key = load_private_key(k.key, k.passphrase);
    X509Ptr cert = load_certificate(k.cert);
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
        ERR_clear_error();
        fail(k.key.string() + ": the private key does not match the certificate " + k.cert.string());
    }

    // The certificate table starts on an 8-byte boundary; the padding is part of what is signed.
    image.resize((image.size() + 7) / 8 * 8, '\0');
    const std::string content = indirect_data_content(authenticode_digest(image, in.string()));

    // SignedData { SHA-256, content SPC_INDIRECT_DATA, the certificate, one SignerInfo with the signed attributes
    // contentType, signingTime, SpcSpOpusInfo and messageDigest }. OpenSSL writes the attributes DER-sorted (a SET),
    // signs them as written, and adds nothing of its own: PKCS7_dataFinal, which would add the current time as
    // signingTime, is never called. RSA PKCS#1 v1.5 signatures are deterministic, so the bytes depend only on the
    // image, the key and the epoch.
    const int spc_indirect_data = object_nid("1.3.6.1.4.1.311.2.1.4", "spcIndirectData", "SPC_INDIRECT_DATA");
    const int spc_sp_opus_info = object_nid("1.3.6.1.4.1.311.2.1.12", "spcSpOpusInfo", "SPC_SP_OPUS_INFO");
    Pkcs7Ptr p7(PKCS7_new());
    if (!p7 || PKCS7_set_type(p7.get(), NID_pkcs7_signed) != 1) fail("signing: " + openssl_error());
    PKCS7_SIGNER_INFO* si = PKCS7_add_signature(p7.get(), cert.get(), key.get(), EVP_sha256());  // owned by p7
    if (!si) fail("signing with " + k.key.string() + ": " + openssl_error());
    if (PKCS7_add_certificate(p7.get(), cert.get()) != 1) fail("signing: " + openssl_error());

    if (PKCS7_add_attrib_content_type(si, OBJ_nid2obj(spc_indirect_data)) != 1)
        fail("signing: cannot add the content type: " + openssl_error());
    // UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5652), as ASN1_TIME_set chooses.
    Asn1StringPtr when(ASN1_TIME_set(nullptr, static_cast<time_t>(epoch)));
    if (!when) fail("signing: the epoch " + std::to_string(epoch) + " is not a valid signing time");
    const int when_type = ASN1_STRING_type(when.get());
    add_signed_attribute(si, NID_pkcs9_signingTime, when_type, std::move(when), "the signing time");
    Asn1StringPtr opus(ASN1_STRING_type_new(V_ASN1_SEQUENCE));  // SpcSpOpusInfo: an empty SEQUENCE
    if (opus && ASN1_STRING_set(opus.get(), "\x30\x00", 2) != 1) opus.reset();
    add_signed_attribute(si, spc_sp_opus_info, V_ASN1_SEQUENCE, std::move(opus), "the opus info");
    // messageDigest covers the content's value, without its outer SEQUENCE tag and length.
    const size_t header = uint8_t(content[1]) < 0x80 ? 2 : 2 + (uint8_t(content[1]) & 0x7f);
    Digest md = sha256(std::string_view(content).substr(header));
    if (PKCS7_add1_attrib_digest(si, md.data(), static_cast<int>(md.size())) != 1)
        fail("signing: cannot add the message digest: " + openssl_error());
    if (PKCS7_SIGNER_INFO_sign(si) != 1) fail("signing with " + k.key.string() + ": " + openssl_error());

    // The signed content: SpcIndirectDataContent, as "other" content of type SPC_INDIRECT_DATA.
    Asn1StringPtr value(ASN1_STRING_type_new(V_ASN1_SEQUENCE));  // for a SEQUENCE: its whole encoding
    if (!value || ASN1_STRING_set(value.get(), content.data(), static_cast<int>(content.size())) != 1)
        fail("signing: " + openssl_error());
    Asn1TypePtr other(ASN1_TYPE_new());
    if (!other) fail("signing: " + openssl_error());
    ASN1_TYPE_set(other.get(), V_ASN1_SEQUENCE, value.release());
    Pkcs7Ptr inner(PKCS7_new());
    if (!inner || PKCS7_set0_type_other(inner.get(), spc_indirect_data, other.get()) != 1)
        fail("signing: " + openssl_error());
    other.release();  // now inner's
    if (PKCS7_set_content(p7.get(), inner.get()) != 1) fail("signing: " + openssl_error());
    inner.release();  // now p7's

    unsigned char* der_out = nullptr;
    const int der_size = i2d_PKCS7(p7.get(), &der_out);
    OpensslBufferPtr der_buffer(der_out);
    if (der_size <= 0) fail("signing: cannot encode the signature: " + openssl_error());
    const std::string signature(reinterpret_cast<const char*>(der_buffer.get()), static_cast<size_t>(der_size));

    // WIN_CERTIFICATE { dwLength, wRevision 0x0200, wCertificateType PKCS_SIGNED_DATA }, 8-byte aligned.
    std::string certificate(8, '\0');
    certificate += signature;
    certificate.resize((certificate.size() + 7) / 8 * 8, '\0');
    put32(certificate, 0, static_cast<uint32_t>(certificate.size()));
    certificate[4] = 0x00, certificate[5] = 0x02, certificate[6] = 0x02, certificate[7] = 0x00;
    if (image.size() + certificate.size() > UINT32_MAX)
        fail(in.string() + ": too large to sign (PE images end at 4 GiB)");
    const uint32_t table_offset = static_cast<uint32_t>(image.size());
    image += certificate;
    put32(image, layout.cert_entry, table_offset);
    put32(image, layout.cert_entry + 4, static_cast<uint32_t>(certificate.size()));
    put32(image, layout.checksum, pe_checksum(image, layout.checksum));

    write_file_atomic(out, image);
}

}  // namespace cairn::imager
