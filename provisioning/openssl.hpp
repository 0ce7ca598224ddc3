// One owner per OpenSSL handle used by provisioning (certificates, keys, TLS contexts), and the
// few operations on them: PEM loading, subject CN, chain verification, random bytes, error text.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::provisioning {

template <typename T, void (*Free)(T*)>
struct OsslDeleter {
    void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, OsslDeleter<X509, X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OsslDeleter<EVP_PKEY, EVP_PKEY_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OsslDeleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, OsslDeleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, OsslDeleter<SSL_CTX, SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OsslDeleter<SSL, SSL_free>>;
using BioPtr = std::unique_ptr<BIO, OsslDeleter<BIO, BIO_free_all>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OsslDeleter<X509_STORE, X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OsslDeleter<X509_STORE_CTX, X509_STORE_CTX_free>>;

inline void free_x509_stack(STACK_OF(X509)* s) { sk_X509_pop_free(s, X509_free); }
using X509StackPtr = std::unique_ptr<STACK_OF(X509), OsslDeleter<STACK_OF(X509), free_x509_stack>>;

// The queued OpenSSL errors as one line (and clears the queue); "no OpenSSL detail" when empty.
std::string openssl_errors();

// All certificates in PEM text / a PEM file, in order; throws Error naming `what` when there are none.
std::vector<X509Ptr> parse_pem_certificates(std::string_view pem, const std::string& what);
std::vector<X509Ptr> load_pem_certificates(const std::filesystem::path& file);
EvpPkeyPtr load_private_key(const std::filesystem::path& file);

X509Ptr copy_certificate(X509* cert);
std::string certificate_pem(X509* cert);
// The subject's commonName, or "" when there is none.
std::string subject_common_name(X509* cert);
std::string subject_text(X509* cert);
// SHA-256 over the DER encoding, lowercase hex.
std::string certificate_thumbprint(X509* cert);

// Verifies `leaf` with `chain` as untrusted intermediates against `anchors`; a trusted anchor may be
// an intermediate (partial chains allowed). Returns "" when valid, else OpenSSL's reason.
std::string verify_certificate(X509* leaf, const std::vector<X509*>& chain, const std::vector<X509*>& anchors);

std::string random_bytes(size_t count);

}  // namespace cairn::provisioning
