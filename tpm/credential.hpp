// The software side of TPM 2.0 credential protection (Part 1 §24, what TPM2_MakeCredential does),
// done with OpenSSL by whoever checks a TPM from outside (the DPS service, an attestation
// verifier), and the building blocks it shares with duplication (Part 1 §23): KDFa, object Names,
// seeds encrypted to an RSA storage key, AES-128-CFB with a zero IV. The TPM side is
// Tpm::activate_credential (tpm/tpm.hpp).
#pragma once

#include <tss2/tss2_tpm2_types.h>

#include <cstdint>
#include <string>

#include "common/openssl.hpp"

namespace cairn::tpm {

// KDFa of TPM 2.0 Part 1 §11.4.10.2 with SHA-256; `bits` a multiple of 8.
std::string kdfa_sha256(const std::string& key, const std::string& label, const std::string& context_u, const std::string& context_v,
                        uint32_t bits);

// The object's Name: nameAlg ‖ H(TPMT_PUBLIC) (SHA-256 objects only).
std::string object_name(const TPM2B_PUBLIC& pub);

// A protector (the EK, an SRK): an RSA restricted decryption key with SHA-256 names and
// AES-128-CFB. Throws Error naming `what` when the marshaled TPM2B_PUBLIC is not one.
struct StorageKey {
    TPM2B_PUBLIC pub;
    PkeyPtr key;
};
StorageKey storage_key(const std::string& marshaled_public, const std::string& what);

// A seed encrypted to a storage key: RSA-OAEP with SHA-256 and the label ("IDENTITY",
// "DUPLICATE", ...) with its terminating zero.
std::string encrypt_seed(EVP_PKEY* key, const std::string& seed, const char* label);

// AES-128-CFB with a zero IV (Part 1: the IV of these wrappers is zero).
std::string aes128_cfb(const std::string& key, const std::string& data);

// Size-prefixed (big-endian u16) bytes, as TPM2B_* structures are marshaled.
std::string tpm2b(const std::string& data);

// TPM2_MakeCredential in software: `credential` (at most 32 bytes) protected to `protector`
// (usually the EK) and to the Name of the object that must be loaded in the same TPM.
struct MadeCredential {
    std::string id_object;         // marshaled TPM2B_ID_OBJECT
    std::string encrypted_secret;  // marshaled TPM2B_ENCRYPTED_SECRET
};
MadeCredential make_credential(const StorageKey& protector, const std::string& object_name, const std::string& credential);

}  // namespace cairn::tpm
