// One owner per OpenSSL handle used by provisioning (certificates, keys, TLS contexts), and the
// few operations on them: PEM loading, subject CN, chain verification, random bytes, error text.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "common/openssl.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::provisioning {

// The handle owners are common/openssl.hpp's (the TLS ones, libssl's, are http/server.hpp's).
using cairn::BioPtr;
using cairn::X509Ptr;
using cairn::X509StackPtr;
using cairn::X509StorePtr;
using cairn::X509StoreCtxPtr;
using cairn::copy_certificate;
using EvpPkeyPtr = cairn::PkeyPtr;
using EvpPkeyCtxPtr = cairn::PkeyCtxPtr;
using EvpCipherCtxPtr = cairn::CipherCtxPtr;
using cairn::openssl_errors;
using cairn::random_bytes;


// All certificates in PEM text / a PEM file, in order; throws Error naming `what` when there are none.
std::vector<X509Ptr> parse_pem_certificates(std::string_view pem, const std::string& what);
std::vector<X509Ptr> load_pem_certificates(const std::filesystem::path& file);
EvpPkeyPtr load_private_key(const std::filesystem::path& file);

std::string certificate_pem(X509* cert);
// The subject's commonName, or "" when there is none.
std::string subject_common_name(X509* cert);
std::string subject_text(X509* cert);
// SHA-256 over the DER encoding, lowercase hex.
std::string certificate_thumbprint(X509* cert);

// Verifies `leaf` with `chain` as untrusted intermediates against `anchors`; a trusted anchor may be
// an intermediate (partial chains allowed). Returns "" when valid, else OpenSSL's reason.
std::string verify_certificate(X509* leaf, const std::vector<X509*>& chain, const std::vector<X509*>& anchors);

}  // namespace cairn::provisioning
