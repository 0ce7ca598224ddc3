#include "common/openssl.hpp"

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>

#include <cstring>
#include <mutex>

#include "common/error.hpp"
#include "common/file.hpp"

namespace cairn {

void free_openssl_buffer(unsigned char* p) { OPENSSL_free(p); }
void free_x509_stack(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }

std::string openssl_error() {
    unsigned long e = ERR_get_error();
    char buffer[256] = "unknown OpenSSL error";
    if (e) ERR_error_string_n(e, buffer, sizeof buffer);
    ERR_clear_error();
    return buffer;
}

std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(e, buffer, sizeof buffer);
        if (!out.empty()) out += "; ";
        out += buffer;
    }
    return out.empty() ? "no OpenSSL detail" : out;
}

PkeyPtr load_private_key(const std::filesystem::path& file, const std::string& passphrase) {
    BioPtr bio(BIO_new_file(file.c_str(), "r"));
    if (!bio) {
        ERR_clear_error();
        fail(file.string() + ": cannot open the private key");
    }
    auto passphrase_cb = [](char* buf, int size, int, void* user) -> int {
        const std::string* p = static_cast<const std::string*>(user);
        if (p->empty() || static_cast<int>(p->size()) > size) return -1;
        std::memcpy(buf, p->data(), p->size());
        return static_cast<int>(p->size());
    };
    PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_cb, const_cast<std::string*>(&passphrase)));
    if (!key) {
        ERR_clear_error();
        bool encrypted = read_file(file).find("ENCRYPTED") != std::string::npos;
        if (encrypted && passphrase.empty()) fail(file.string() + ": the key is encrypted and no passphrase was given");
        if (encrypted) fail(file.string() + ": cannot decrypt the private key (wrong passphrase?)");
        fail(file.string() + ": not a PEM private key");
    }
    return key;
}

std::vector<X509Ptr> parse_certificates(std::string_view pem, const std::string& what) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) fail(what + ": out of memory");
    std::vector<X509Ptr> out;
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(cert);
    ERR_clear_error();  // the end of the data shows as an error
    if (out.empty()) fail(what + ": not a PEM certificate");
    return out;
}

std::vector<X509Ptr> load_certificates(const std::filesystem::path& file) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec)) fail(file.string() + ": cannot open the certificate file");
    return parse_certificates(read_file(file), file.string());
}

PkeyPtr rsa_public_key(std::string_view modulus, uint32_t exponent, const std::string& what) {
    BignumPtr n(BN_bin2bn(reinterpret_cast<const unsigned char*>(modulus.data()), int(modulus.size()), nullptr));
    BignumPtr e(BN_new());
    OsslParamBldPtr build(OSSL_PARAM_BLD_new());
    if (!n || !e || !build || BN_set_word(e.get(), exponent) != 1 || OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1)
        fail(what + ": cannot build an RSA key: " + openssl_errors());
    OsslParamPtr params(OSSL_PARAM_BLD_to_param(build.get()));
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    EVP_PKEY* key = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 || EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
        fail(what + ": cannot build an RSA key: " + openssl_errors());
    return PkeyPtr(key);
}

X509Ptr copy_certificate(X509* cert) {
    X509_up_ref(cert);
    return X509Ptr(cert);
}

X509Ptr load_certificate(const std::filesystem::path& file) { return std::move(load_certificates(file).front()); }

std::string random_bytes(size_t count) {
    std::string out(count, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(count)) != 1)
        fail("OpenSSL: no random bytes: " + openssl_errors());
    return out;
}

int object_nid(const char* oid, const char* short_name, const char* long_name) {
    static std::mutex registering;
    std::lock_guard lock(registering);
    int nid = OBJ_txt2nid(oid);
    if (nid == NID_undef) nid = OBJ_create(oid, short_name, long_name);
    if (nid == NID_undef) nid = OBJ_txt2nid(oid);  // registered meanwhile, outside this function
    if (nid == NID_undef) fail(std::string("cannot register the object identifier ") + oid + " with OpenSSL: " + openssl_error());
    return nid;
}

}  // namespace cairn
