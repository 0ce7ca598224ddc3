#include "provisioning/openssl.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"

namespace cairn::provisioning {

std::vector<X509Ptr> parse_pem_certificates(std::string_view pem, const std::string& what) { return cairn::parse_certificates(pem, what); }

std::vector<X509Ptr> load_pem_certificates(const std::filesystem::path& file) { return cairn::load_certificates(file); }

EvpPkeyPtr load_private_key(const std::filesystem::path& file) { return cairn::load_private_key(file, ""); }

std::string certificate_pem(X509* cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) fail("certificate: cannot write PEM: " + openssl_errors());
    char* data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(size));
}

std::string subject_common_name(X509* cert) {
    X509_NAME* name = X509_get_subject_name(cert);
    int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) return "";
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char* utf8 = nullptr;
    int length = ASN1_STRING_to_UTF8(&utf8, data);
    if (length < 0) return "";
    std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(length));
    OPENSSL_free(utf8);
    return out;
}

std::string subject_text(X509* cert) {
    char buffer[512];
    X509_NAME_oneline(X509_get_subject_name(cert), buffer, sizeof buffer);
    return buffer;
}

std::string certificate_thumbprint(X509* cert) {
    unsigned char* der = nullptr;
    int length = i2d_X509(cert, &der);
    if (length <= 0) fail("certificate: cannot encode DER: " + openssl_errors());
    Digest d = sha256(std::string_view(reinterpret_cast<char*>(der), static_cast<size_t>(length)));
    OPENSSL_free(der);
    return to_hex(d);
}

std::string verify_certificate(X509* leaf, const std::vector<X509*>& chain, const std::vector<X509*>& anchors) {
    X509StorePtr store(X509_STORE_new());
    for (X509* anchor : anchors) X509_STORE_add_cert(store.get(), anchor);
    X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
    X509StackPtr untrusted(sk_X509_new_null());
    for (X509* c : chain) {
        X509_up_ref(c);
        sk_X509_push(untrusted.get(), c);
    }
    X509StoreCtxPtr ctx(X509_STORE_CTX_new());
    if (!store || !ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get()) != 1)
        fail("certificate check: cannot set up OpenSSL: " + openssl_errors());
    if (X509_verify_cert(ctx.get()) == 1) return "";
    ERR_clear_error();
    return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

}  // namespace cairn::provisioning
