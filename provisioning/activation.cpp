#include "provisioning/activation.hpp"

#include <tss2/tss2_mu.h>

#include <cstring>

#include "common/error.hpp"
#include "common/hash.hpp"
#include "provisioning/openssl.hpp"
#include "tpm/credential.hpp"
#include "tpm/tpm.hpp"

namespace cairn::provisioning {

namespace {

using tpm::aes128_cfb;
using tpm::encrypt_seed;
using tpm::kdfa_sha256;
using tpm::object_name;
using tpm::tpm2b;

std::string u16(size_t v) { return {static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)}; }
std::string bytes(const Digest& d) { return std::string(reinterpret_cast<const char*>(d.data()), d.size()); }

template <typename T>
void take(const std::string& blob, size_t& offset, T& out, TSS2_RC (*unmarshal)(const uint8_t*, size_t, size_t*, T*), const char* what) {
    if (unmarshal(reinterpret_cast<const uint8_t*>(blob.data()), blob.size(), &offset, &out) != TSS2_RC_SUCCESS)
        fail("authenticationKey: " + std::string(what) + " is missing or truncated (blob of " + std::to_string(blob.size()) + " bytes)");
}

}  // namespace

ActivationBlob parse_activation_blob(const std::string& blob) {
    ActivationBlob b;
    size_t offset = 0;
    take(blob, offset, b.credential_blob, Tss2_MU_TPM2B_ID_OBJECT_Unmarshal, "the credential blob (TPM2B_ID_OBJECT)");
    take(blob, offset, b.secret, Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal, "the encrypted seed (TPM2B_ENCRYPTED_SECRET)");
    take(blob, offset, b.duplicate, Tss2_MU_TPM2B_PRIVATE_Unmarshal, "the duplicated key (TPM2B_PRIVATE)");
    take(blob, offset, b.sym_seed, Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal, "the import seed (TPM2B_ENCRYPTED_SECRET)");
    take(blob, offset, b.key_public, Tss2_MU_TPM2B_PUBLIC_Unmarshal, "the key's public area (TPM2B_PUBLIC)");
    if (b.credential_blob.size == 0 || b.secret.size == 0 || b.duplicate.size == 0 || b.sym_seed.size == 0)
        fail("authenticationKey: an empty part (blob of " + std::to_string(blob.size()) + " bytes)");
    if (b.key_public.publicArea.type != TPM2_ALG_KEYEDHASH) fail("authenticationKey: the key is not a keyed-hash (HMAC) key");
    return b;  // an optional trailing TPM2B (encrypted "uriInfo") is ignored, as the SDKs do
}

TpmChallenge make_tpm_challenge(const std::string& ek_public, const std::string& srk_public) {
    tpm::StorageKey ek = tpm::storage_key(ek_public, "tpm.endorsementKey");
    tpm::StorageKey srk = tpm::storage_key(srk_public, "tpm.storageRootKey");

    // The HMAC key: KEYEDHASH, SHA-256, sign | noDA | userWithAuth, scheme HMAC-SHA256,
    // unique = H(seedValue ‖ key) as the TPM recomputes it on Load.
    const std::string hmac_key = random_bytes(32);
    const std::string seed_value = random_bytes(32);
    TPM2B_PUBLIC key_public{};
    TPMT_PUBLIC& area = key_public.publicArea;
    area.type = TPM2_ALG_KEYEDHASH;
    area.nameAlg = TPM2_ALG_SHA256;
    area.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA | TPMA_OBJECT_USERWITHAUTH;
    area.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
    area.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    const Digest unique = Sha256().update(seed_value).update(hmac_key).final();
    area.unique.keyedHash.size = 32;
    std::memcpy(area.unique.keyedHash.buffer, unique.data(), 32);
    const std::string key_name = object_name(key_public);

    // Credential protection (Part 1 §24): the 16-byte credential is the inner wrapper key below,
    // bound to the SRK's name.
    const std::string credential = random_bytes(16);
    const tpm::MadeCredential made = tpm::make_credential(ek, object_name(srk.pub), credential);

    // Duplication (Part 1 §23.3): inner wrapper keyed by the credential, outer wrapper to the SRK.
    std::string sensitive = u16(TPM2_ALG_KEYEDHASH) + tpm2b("") + tpm2b(seed_value) + tpm2b(hmac_key);
    sensitive = tpm2b(sensitive);
    const Digest inner_integrity = Sha256().update(sensitive).update(key_name).final();
    const std::string enc_sensitive = aes128_cfb(credential, tpm2b(bytes(inner_integrity)) + sensitive);
    const std::string dup_seed = random_bytes(32);
    const std::string encrypted_dup_seed = encrypt_seed(srk.key.get(), dup_seed, "DUPLICATE");
    const std::string dup_sensitive = aes128_cfb(kdfa_sha256(dup_seed, "STORAGE", key_name, "", 128), enc_sensitive);
    const Digest outer_hmac = hmac_sha256(kdfa_sha256(dup_seed, "INTEGRITY", "", "", 256), dup_sensitive + key_name);
    const std::string duplicate = tpm2b(tpm2b(bytes(outer_hmac)) + dup_sensitive);

    TpmChallenge challenge;
    challenge.blob = made.id_object + made.encrypted_secret + duplicate + tpm2b(encrypted_dup_seed) + tpm::marshal_public(key_public) + u16(0);
    challenge.hmac_key = hmac_key;
    return challenge;
}

}  // namespace cairn::provisioning
