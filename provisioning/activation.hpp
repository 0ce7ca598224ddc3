// The DPS TPM activation blob ("authenticationKey"), built on the service side with OpenSSL the
// way TPM 2.0 Part 1 defines credential protection (§24, tpm/credential.hpp) and duplication
// (§23), and parsed on the device side:
//   TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET (seed to the EK, "IDENTITY") ‖ TPM2B_PRIVATE (the
//   HMAC key duplicated to the SRK, inner wrapper keyed by the credential) ‖ TPM2B_ENCRYPTED_SECRET
//   (seed to the SRK, "DUPLICATE") ‖ TPM2B_PUBLIC (the HMAC key) ‖ 00 00
#pragma once

#include <tss2/tss2_tpm2_types.h>

#include <string>

#include "provisioning/dps_service.hpp"

namespace cairn::provisioning {

struct ActivationBlob {
    TPM2B_ID_OBJECT credential_blob{};
    TPM2B_ENCRYPTED_SECRET secret{};
    TPM2B_PRIVATE duplicate{};
    TPM2B_ENCRYPTED_SECRET sym_seed{};
    TPM2B_PUBLIC key_public{};
};

// Throws Error saying which part is missing or malformed (a truncated blob, say).
ActivationBlob parse_activation_blob(const std::string& blob);

// Builds the blob for an EK and SRK (marshaled TPM2B_PUBLIC) around a fresh random HMAC key.
TpmChallenge make_tpm_challenge(const std::string& ek_public, const std::string& srk_public);

}  // namespace cairn::provisioning
