#include "updater/signature.hpp"

#include <openssl/err.h>

#include "common/error.hpp"
#include "common/openssl.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;

std::string cms_sign(std::string_view data, const fs::path& key_file, const fs::path& cert_file,
                     const std::string& passphrase) {
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
    // No signing time: the same manifest and key give the same signed attributes.
    CMS_SignerInfo* si = CMS_add1_signer(cms.get(), certs.front().get(), key.get(), EVP_sha256(), CMS_BINARY | CMS_NOSMIMECAP);
    if (!si) fail("signing with " + key_file.string() + ": " + openssl_error());
    if (CMS_final(cms.get(), in.get(), nullptr, flags) != 1) fail("signing: " + openssl_error());
    BioPtr out(BIO_new(BIO_s_mem()));
    if (i2d_CMS_bio(out.get(), cms.get()) != 1) fail("signing: " + openssl_error());
    char* bytes = nullptr;
    long size = BIO_get_mem_data(out.get(), &bytes);
    return std::string(bytes, static_cast<size_t>(size));
}

void cms_verify(std::string_view data, std::string_view signature, const fs::path& trust_anchor, const std::string& what) {
    X509StorePtr store(X509_STORE_new());
    for (X509Ptr& cert : load_certificates(trust_anchor))
        if (X509_STORE_add_cert(store.get(), cert.get()) != 1) fail(trust_anchor.string() + ": " + openssl_error());
    // Any purpose: the anchor is ours alone, for bundles only; e-mail protection does not apply.
    X509_STORE_set_purpose(store.get(), X509_PURPOSE_ANY);

    const unsigned char* p = reinterpret_cast<const unsigned char*>(signature.data());
    CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(signature.size())));
    if (!cms || p != reinterpret_cast<const unsigned char*>(signature.data()) + signature.size()) {
        ERR_clear_error();
        fail(what + ": the signature is not a DER CMS structure");
    }
    if (OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_pkcs7_signed) fail(what + ": the signature is not CMS SignedData");
    if (!CMS_is_detached(cms.get())) fail(what + ": the signature is not detached");
    BioPtr content(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (CMS_verify(cms.get(), nullptr, store.get(), content.get(), nullptr, CMS_BINARY | CMS_DETACHED) != 1) {
        unsigned long e = ERR_peek_last_error();
        std::string reason = openssl_error();
        if (ERR_GET_REASON(e) == CMS_R_CERTIFICATE_VERIFY_ERROR)
            fail(what + ": the signer's certificate does not chain to the trust anchor " + trust_anchor.string() + " (" + reason + ")");
        if (ERR_GET_REASON(e) == CMS_R_VERIFICATION_FAILURE || ERR_GET_REASON(e) == CMS_R_CONTENT_VERIFY_ERROR)
            fail(what + ": the signature does not match the manifest (" + reason + ")");
        fail(what + ": the signature does not verify: " + reason);
    }
}

}  // namespace cairn::updater
