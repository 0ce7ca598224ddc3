// A TPM 2.0 quote checked from outside the TPM: the attestation key's public area (TPM2B_PUBLIC),
// the signed TPMS_ATTEST of a TPM2_Quote and its TPMT_SIGNATURE, all big-endian TPM marshaling
// (TPM 2.0 Part 2), all hostile input: parsers check every size against what is left and throw
// Error naming `what` and the field at fault. Verification is OpenSSL's (common/openssl.hpp).
//
// What is checked and where (`../shared/notes/attestation.md` §4; Keylime's checkquote):
//   parse_ak_public    the key is an attestation key: restricted, sign, no decrypt, fixedTPM,
//                      fixedParent, sensitiveDataOrigin; SHA-256 name; RSA-2048 RSASSA-SHA256 or
//                      ECC P-256 ECDSA-SHA256;
//   quote_signature_valid  the signature over SHA-256(attest bytes) with that key, of the AK's scheme;
//   check_quote        magic and type, extraData == nonce, the PCR selection == the one asked
//                      for, pcrDigest == SHA-256(the PCR values, ascending index), clockInfo.safe;
//   quote_time_goes_backwards  resetCount/restartCount/clock against the last accepted quote.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/openssl.hpp"

namespace cairn::attestation {

// TPMA_OBJECT bits an AK is judged by.
namespace object_attribute {
inline constexpr uint32_t fixed_tpm = 0x00000002;
inline constexpr uint32_t fixed_parent = 0x00000010;
inline constexpr uint32_t sensitive_data_origin = 0x00000020;
inline constexpr uint32_t user_with_auth = 0x00000040;
inline constexpr uint32_t restricted = 0x00010000;
inline constexpr uint32_t decrypt = 0x00020000;
inline constexpr uint32_t sign = 0x00040000;
}  // namespace object_attribute

inline constexpr uint16_t alg_rsa = 0x0001;
inline constexpr uint16_t alg_ecc = 0x0023;
inline constexpr uint16_t alg_null = 0x0010;
inline constexpr uint16_t alg_rsassa = 0x0014;
inline constexpr uint16_t alg_ecdsa = 0x0018;
inline constexpr uint16_t ecc_nist_p256 = 0x0003;

// TPMT_PUBLIC, the fields an AK needs (other key types parse as far as their layout is known).
struct PublicArea {
    uint16_t type = 0;        // alg_rsa, alg_ecc
    uint16_t name_alg = 0;
    uint32_t attributes = 0;
    std::string auth_policy;
    uint16_t symmetric = alg_null;
    uint16_t scheme = alg_null, scheme_hash = alg_null;
    uint16_t rsa_bits = 0;
    uint32_t rsa_exponent = 0;  // 0 means 65537
    uint16_t curve = 0;
    std::string rsa_modulus;    // unique.rsa
    std::string ecc_x, ecc_y;   // unique.ecc
    std::string marshaled;      // the TPMT_PUBLIC bytes (what the Name hashes)
};
// Parses a TPM2B_PUBLIC (the whole input; a TPMT_PUBLIC of RSA or ECC type).
PublicArea parse_public(std::string_view tpm2b_public, const std::string& what);

// An attestation key, checked and ready to verify with.
struct AttestationKey {
    PublicArea area;
    std::string name;  // 0x000B ‖ SHA-256(TPMT_PUBLIC)
    PkeyPtr key;
};
// parse_public, then the AK checks listed above; Error names `what` and the failed property.
AttestationKey parse_ak_public(std::string_view tpm2b_public, const std::string& what);

// One TPMS_PCR_SELECTION.
struct PcrSelection {
    uint16_t hash = 0;
    std::vector<unsigned> pcrs;  // ascending
    bool operator==(const PcrSelection&) const = default;
};

inline constexpr uint32_t tpm_generated_value = 0xFF544347;
inline constexpr uint16_t st_attest_quote = 0x8018;

// TPMS_ATTEST of a quote.
struct Quote {
    uint32_t magic = 0;
    uint16_t type = 0;
    std::string qualified_signer;  // TPM2B_NAME contents (the AK's qualified name)
    std::string extra_data;        // the nonce the verifier sent (qualifyingData)
    uint64_t clock = 0;
    uint32_t reset_count = 0, restart_count = 0;
    bool safe = false;
    uint64_t firmware_version = 0;
    std::vector<PcrSelection> selection;
    std::string pcr_digest;
};
// Parses the whole input as a TPMS_ATTEST; one that is not of type quote is refused (Error).
Quote parse_attest(std::string_view attest, const std::string& what);

// TPMT_SIGNATURE: RSASSA (one big number) or ECDSA (r, s); other schemes are refused (Error).
struct Signature {
    uint16_t scheme = 0;  // alg_rsassa, alg_ecdsa
    uint16_t hash = 0;
    std::string rsa;      // the PKCS#1 v1.5 signature
    std::string ecc_r, ecc_s;
};
Signature parse_signature(std::string_view tpmt_signature, const std::string& what);

// Whether `signature` is the AK's signature over SHA-256(attest). False (not Error) for any
// mismatch: another scheme or hash than the AK's, a wrong or malformed signature.
bool quote_signature_valid(const AttestationKey& ak, std::string_view attest, const Signature& signature);

// SHA-256 of the PCR values of `pcrs` in ascending order: what pcrDigest of a SHA-256 quote
// holds. Error when a value is missing or not 32 bytes.
std::string pcr_composite_digest(const std::vector<unsigned>& pcrs, const std::map<unsigned, std::string>& values);

// The content checks of a quote (not the signature): magic, type, extraData == nonce, selection
// == one SHA-256 selection of `pcrs`, pcrDigest == pcr_composite_digest(pcrs, values), safe.
// Each failure is one line in the result (empty: all passed).
std::vector<std::string> check_quote(const Quote& quote, std::string_view nonce, const std::vector<unsigned>& pcrs,
                                     const std::map<unsigned, std::string>& values);

// Everything at once, for callers that want an exception: parses the three blobs, checks the
// signature and check_quote; throws Error naming the first failure, else returns the quote.
Quote verify_quote(std::string_view ak_public, std::string_view attest, std::string_view signature, std::string_view nonce,
                   const std::vector<unsigned>& pcrs, const std::map<unsigned, std::string>& values);

// The clock state of the last quote accepted from a device; a new quote whose resetCount or
// restartCount is smaller, or whose clock is not later with equal counts, goes backwards (a replay
// or a rolled-back TPM). Empty when it does not, else why.
struct QuoteClock {
    uint64_t clock = 0;
    uint32_t reset_count = 0, restart_count = 0;
};
std::string quote_time_goes_backwards(const Quote& quote, const QuoteClock& last);

}  // namespace cairn::attestation
