#include "updater/signature.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>

#include "common/error.hpp"
#include "common/openssl.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;

std::string cms_sign(std::string_view data, const fs::path& key_file, const fs::path& cert_file,
                     const std::string& passphrase, std::optional<int64_t> signing_time) {
    PkeyPtr key = load_private_key(key_file, passphrase);
    std::vector<X509Ptr> certs = load_certificates(cert_file);
    if (X509_check_private_key(certs.front().get(), key.get()) != 1) {
        ERR_clear_error();
        fail(cert_file.string() + ": the certificate does not belong to the key " + key_file.string());
    }
    X509StackPtr chain(sk_X509_new_null());
    for (size_t i = 1; i < certs.size(); ++i) {
        if (!sk_X509_push(chain.get(), certs[i].get())) fail("signing: out of memory");
        X509_up_ref(certs[i].get());
    }
    BioPtr in(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    const unsigned flags = CMS_DETACHED | CMS_BINARY | CMS_NOSMIMECAP | CMS_PARTIAL;
    CmsPtr cms(CMS_sign(nullptr, nullptr, chain.get(), nullptr, flags));
    if (!cms) fail("signing: " + openssl_error());
    CMS_SignerInfo* si = CMS_add1_signer(cms.get(), certs.front().get(), key.get(), EVP_sha256(), CMS_BINARY | CMS_NOSMIMECAP);
    if (!si) fail("signing with " + key_file.string() + ": " + openssl_error());
    // CMS_final adds the clock's time as signingTime unless the signer already has one.
    if (signing_time) {
        Asn1StringPtr when(ASN1_TIME_set(nullptr, static_cast<time_t>(*signing_time)));
        if (!when) fail("signing: " + std::to_string(*signing_time) + " is not a valid signing time");
        if (CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, ASN1_STRING_type(when.get()), when.get(), -1) != 1)
            fail("signing: cannot add the signing time: " + openssl_error());
    }
    if (CMS_final(cms.get(), in.get(), nullptr, flags) != 1) fail("signing: " + openssl_error());
    BioPtr out(BIO_new(BIO_s_mem()));
    if (i2d_CMS_bio(out.get(), cms.get()) != 1) fail("signing: " + openssl_error());
    char* bytes = nullptr;
    long size = BIO_get_mem_data(out.get(), &bytes);
    return std::string(bytes, static_cast<size_t>(size));
}

namespace {

std::string subject_of(X509* cert) {
    BioPtr out(BIO_new(BIO_s_mem()));
    if (!out || X509_NAME_print_ex(out.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
        ERR_clear_error();
        return "(unprintable subject)";
    }
    char* bytes = nullptr;
    long size = BIO_get_mem_data(out.get(), &bytes);
    return std::string(bytes, static_cast<size_t>(size));
}

std::string asn1_time_text(const ASN1_TIME* t) {
    BioPtr out(BIO_new(BIO_s_mem()));
    if (!out || ASN1_TIME_print(out.get(), t) != 1) {
        ERR_clear_error();
        return "(unprintable time)";
    }
    char* bytes = nullptr;
    long size = BIO_get_mem_data(out.get(), &bytes);
    return std::string(bytes, static_cast<size_t>(size));
}

std::string time_text(int64_t t) {
    Asn1StringPtr a(ASN1_TIME_set(nullptr, static_cast<time_t>(t)));
    return a ? asn1_time_text(a.get()) : std::to_string(t) + " s after the epoch";
}

bool has_extended_key_usage(X509* cert, const char* oid) {
    // NULL also when the extension is there twice or malformed: refused like a missing one.
    ExtendedKeyUsagePtr eku(static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr)));
    ERR_clear_error();
    if (!eku) return false;
    for (int i = 0; i < sk_ASN1_OBJECT_num(eku.get()); ++i) {
        char text[128];
        int n = OBJ_obj2txt(text, sizeof text, sk_ASN1_OBJECT_value(eku.get(), i), 1);
        if (n > 0 && static_cast<size_t>(n) < sizeof text && std::string_view(text) == oid) return true;
    }
    return false;
}

// Why `cert` may not sign bundles, or "" when it may.
std::string usage_problem(X509* cert) {
    if (!has_extended_key_usage(cert, bundle_signing_eku))
        return std::string("may not sign bundles: it lacks the Cairn bundle-signing extended key usage ") + bundle_signing_eku +
               " (see docs/bundle.md)";
    const uint32_t key_usage = X509_get_key_usage(cert);
    if (key_usage != UINT32_MAX && !(key_usage & KU_DIGITAL_SIGNATURE)) return "may not sign: its key usage lacks digitalSignature";
    return "";
}

// The signer's certificate: chains to the anchor at time `at`, and is meant for signing bundles.
void check_signer(X509* signer, X509_STORE* store, STACK_OF(X509) * untrusted, int64_t at, const std::string& anchor,
                  const std::string& what) {
    const std::string name = "the signer's certificate \"" + subject_of(signer) + "\"";
    X509StoreCtxPtr ctx(X509_STORE_CTX_new());
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store, signer, untrusted) != 1) fail(what + ": " + openssl_error());
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), static_cast<time_t>(at));
    if (X509_verify_cert(ctx.get()) != 1) {
        const int error = X509_STORE_CTX_get_error(ctx.get());
        X509* cert = X509_STORE_CTX_get_current_cert(ctx.get());
        ERR_clear_error();
        if (!cert) cert = signer;
        const std::string which = cert == signer ? name : "the certificate \"" + subject_of(cert) + "\" in the signer's chain";
        const std::string when = time_text(at) + " (the clock, or the running image's build time when the clock is earlier)";
        if (error == X509_V_ERR_CERT_NOT_YET_VALID)
            fail(what + ": " + which + " is not valid before " + asn1_time_text(X509_get0_notBefore(cert)) + "; it was checked at " + when);
        if (error == X509_V_ERR_CERT_HAS_EXPIRED)
            fail(what + ": " + which + " expired on " + asn1_time_text(X509_get0_notAfter(cert)) + "; it was checked at " + when);
        fail(what + ": " + name + " does not chain to the trust anchor " + anchor + " (" +
             X509_verify_cert_error_string(error) + ")");
    }
    if (std::string problem = usage_problem(signer); !problem.empty()) fail(what + ": " + name + " " + problem);
}

}  // namespace

void check_bundle_signer(const fs::path& cert_file) {
    X509Ptr cert = load_certificate(cert_file);
    if (std::string problem = usage_problem(cert.get()); !problem.empty())
        fail(cert_file.string() + ": the certificate \"" + subject_of(cert.get()) + "\" " + problem + "; devices would refuse the bundle");
}

int64_t certificate_time(int64_t now, int64_t floor) { return std::max(now, floor); }

namespace {

// The signature, parsed and checked to have signed exactly `data` (which also finds each signer's
// certificate among those it carries); no decision yet about whom to trust.
CmsPtr signature_over(std::string_view data, std::string_view signature, const std::string& what) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(signature.data());
    CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(signature.size())));
    if (!cms || p != reinterpret_cast<const unsigned char*>(signature.data()) + signature.size()) {
        ERR_clear_error();
        fail(what + ": the signature is not a DER CMS structure");
    }
    if (OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_pkcs7_signed) fail(what + ": the signature is not CMS SignedData");
    if (!CMS_is_detached(cms.get())) fail(what + ": the signature is not detached");
    // First the signature over the bytes, then each signer's certificate, here rather than by
    // CMS_verify: the verification time, the messages and the extended key usage are ours.
    // The bytes go in through a null filter: given a memory BIO itself, CMS_verify (OpenSSL 3.0)
    // reads a copy it makes, and leaks that copy when the signature names a digest it cannot set
    // up (found by fuzz/channel_index).
    BioPtr content(BIO_new(BIO_f_null()));
    BIO* bytes = BIO_new_mem_buf(data.data(), static_cast<int>(data.size()));
    if (!content || !bytes || !BIO_push(content.get(), bytes)) {
        BIO_free(bytes);
        fail(what + ": " + openssl_error());
    }
    if (CMS_verify(cms.get(), nullptr, nullptr, content.get(), nullptr, CMS_BINARY | CMS_DETACHED | CMS_NO_SIGNER_CERT_VERIFY) != 1) {
        unsigned long e = ERR_peek_last_error();
        std::string reason = openssl_error();
        if (ERR_GET_REASON(e) == CMS_R_VERIFICATION_FAILURE || ERR_GET_REASON(e) == CMS_R_CONTENT_VERIFY_ERROR)
            fail(what + ": the signature does not match the manifest (" + reason + ")");
        fail(what + ": the signature does not verify: " + reason);
    }
    return cms;
}

std::vector<X509*> signers_of(CMS_ContentInfo* cms, const std::string& what) {
    std::vector<X509*> out;
    STACK_OF(CMS_SignerInfo)* signers = CMS_get0_SignerInfos(cms);
    for (int i = 0; i < sk_CMS_SignerInfo_num(signers); ++i) {
        X509* signer = nullptr;
        CMS_SignerInfo_get0_algs(sk_CMS_SignerInfo_value(signers, i), nullptr, &signer, nullptr, nullptr);
        if (!signer) fail(what + ": the signature does not carry its signer's certificate");
        out.push_back(signer);
    }
    return out;
}

void verify_against(std::string_view data, std::string_view signature, X509_STORE* store, const std::string& anchor_name,
                    const std::string& what, std::optional<int64_t> at) {
    CmsPtr cms = signature_over(data, signature, what);
    const int64_t when = at ? *at : static_cast<int64_t>(std::time(nullptr));
    X509StackPtr untrusted(CMS_get1_certs(cms.get()));
    for (X509* signer : signers_of(cms.get(), what)) check_signer(signer, store, untrusted.get(), when, anchor_name, what);
}

}  // namespace

void cms_verify(std::string_view data, std::string_view signature, const fs::path& trust_anchor, const std::string& what,
                std::optional<int64_t> at) {
    X509StorePtr store(X509_STORE_new());
    for (X509Ptr& cert : load_certificates(trust_anchor))
        if (X509_STORE_add_cert(store.get(), cert.get()) != 1) fail(trust_anchor.string() + ": " + openssl_error());
    verify_against(data, signature, store.get(), trust_anchor.string(), what, at);
}

void cms_verify_pem(std::string_view data, std::string_view signature, std::string_view anchor_pem, const std::string& anchor_name,
                    const std::string& what, std::optional<int64_t> at) {
    X509StorePtr store(X509_STORE_new());
    for (X509Ptr& cert : parse_certificates(anchor_pem, anchor_name))
        if (X509_STORE_add_cert(store.get(), cert.get()) != 1) fail(anchor_name + ": " + openssl_error());
    verify_against(data, signature, store.get(), anchor_name, what, at);
}

std::vector<SignerInfo> cms_signers(std::string_view data, std::string_view signature, const std::string& what) {
    CmsPtr cms = signature_over(data, signature, what);
    std::vector<SignerInfo> out;
    for (X509* signer : signers_of(cms.get(), what)) {
        SignerInfo info;
        info.subject = subject_of(signer);
        BioPtr issuer(BIO_new(BIO_s_mem()));
        if (issuer && X509_NAME_print_ex(issuer.get(), X509_get_issuer_name(signer), 0, XN_FLAG_RFC2253) >= 0) {
            char* bytes = nullptr;
            long size = BIO_get_mem_data(issuer.get(), &bytes);
            info.issuer.assign(bytes, static_cast<size_t>(size));
        }
        ERR_clear_error();
        info.not_before = asn1_time_text(X509_get0_notBefore(signer));
        info.not_after = asn1_time_text(X509_get0_notAfter(signer));
        info.usage_problem = usage_problem(signer);
        out.push_back(info);
    }
    return out;
}

}  // namespace cairn::updater
