// One owner per OpenSSL handle type, and the loading of PEM keys and certificates, shared by
// everything that signs or verifies (UKI Authenticode signatures, bundle signatures).
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cairn {

template <typename T, void (*Free)(T*)>
struct OpensslDeleter {
    void operator()(T* p) const { Free(p); }
};
void free_openssl_buffer(unsigned char* p);
void free_x509_stack(STACK_OF(X509) * s);

using BioPtr = std::unique_ptr<BIO, OpensslDeleter<BIO, BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509, X509_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpensslDeleter<X509_STORE, X509_STORE_free>>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), OpensslDeleter<STACK_OF(X509), free_x509_stack>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY, EVP_PKEY_free>>;
using Pkcs7Ptr = std::unique_ptr<PKCS7, OpensslDeleter<PKCS7, PKCS7_free>>;
using CmsPtr = std::unique_ptr<CMS_ContentInfo, OpensslDeleter<CMS_ContentInfo, CMS_ContentInfo_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OpensslDeleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, OpensslDeleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpensslDeleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using Asn1StringPtr = std::unique_ptr<ASN1_STRING, OpensslDeleter<ASN1_STRING, ASN1_STRING_free>>;  // also ASN1_TIME
using ExtendedKeyUsagePtr = std::unique_ptr<EXTENDED_KEY_USAGE, OpensslDeleter<EXTENDED_KEY_USAGE, EXTENDED_KEY_USAGE_free>>;
using Asn1TypePtr = std::unique_ptr<ASN1_TYPE, OpensslDeleter<ASN1_TYPE, ASN1_TYPE_free>>;
using OpensslBufferPtr = std::unique_ptr<unsigned char, OpensslDeleter<unsigned char, free_openssl_buffer>>;
// Building keys from raw numbers (TPM public areas): OSSL_PARAM lists, big numbers, ECDSA (r, s).
using OsslParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, OpensslDeleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using OsslParamPtr = std::unique_ptr<OSSL_PARAM, OpensslDeleter<OSSL_PARAM, OSSL_PARAM_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BIGNUM, BN_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpensslDeleter<ECDSA_SIG, ECDSA_SIG_free>>;

// The oldest queued OpenSSL error as text (and the queue cleared).
std::string openssl_error();

// The NID of an object identifier ("1.3.6.1.4.1.311.2.1.12"), registered with OpenSSL under the
// names given when it does not know it. Safe on several threads at once (two could otherwise both
// find it unknown, and the second registration fail with "oid exists"). Throws Error.
int object_nid(const char* oid, const char* short_name, const char* long_name);
// Every queued OpenSSL error as one line (and the queue cleared); "no OpenSSL detail" when empty.
std::string openssl_errors();
// `count` bytes from OpenSSL's CSPRNG (Error when it has none).
std::string random_bytes(size_t count);

// A PEM private key, decrypted with `passphrase` when encrypted. Errors name the file and say
// whether a passphrase is missing or wrong.
PkeyPtr load_private_key(const std::filesystem::path& file, const std::string& passphrase);
// An RSA public key from its modulus (big-endian bytes) and public exponent; Error naming `what`.
PkeyPtr rsa_public_key(std::string_view modulus, uint32_t exponent, const std::string& what);
// The first PEM certificate in a file.
X509Ptr load_certificate(const std::filesystem::path& file);
// Another owner of the same certificate (X509_up_ref).
X509Ptr copy_certificate(X509* cert);
// Every PEM certificate in a file, or in PEM text (at least one, else Error naming `what`).
std::vector<X509Ptr> load_certificates(const std::filesystem::path& file);
std::vector<X509Ptr> parse_certificates(std::string_view pem, const std::string& what);

}  // namespace cairn
