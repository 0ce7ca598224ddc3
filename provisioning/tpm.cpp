#include "provisioning/tpm.hpp"

#include <cstring>

#include "common/error.hpp"
#include "common/hash.hpp"
#include "provisioning/activation.hpp"
#include "common/encoding.hpp"

namespace cairn::provisioning {

using tpm::check;
using tpm::Closed;
using tpm::EsysPtr;
using tpm::Flushed;

Tpm::Tpm(TpmOptions options) : options_(std::move(options)), tpm_(tpm::Options{options_.tcti, options_.endorsement_auth, options_.owner_auth}) {}

void Tpm::import_authentication_key(const std::string& blob) {
    ActivationBlob parts = parse_activation_blob(blob);
    tpm_.endorsement_key();
    tpm_.storage_root_key();
    ESYS_CONTEXT* esys = tpm_.esys();
    Closed srk = tpm_.persistent(tpm::srk_handle);

    // 1. ActivateCredential: the EK releases the 16-byte inner wrapper key, bound to the SRK's name.
    const std::string inner_key = tpm_.activate_credential(srk.get(), parts.credential_blob, parts.secret,
                                                           "ActivateCredential (the authenticationKey was not made for this TPM's EK and SRK)");

    // 2. Import the HMAC key under the SRK with that inner key, load it, persist it.
    TPM2B_DATA encryption_key{};
    if (inner_key.size() > sizeof encryption_key.buffer) fail("TPM: ActivateCredential released " + std::to_string(inner_key.size()) + " bytes");
    encryption_key.size = static_cast<uint16_t>(inner_key.size());
    std::memcpy(encryption_key.buffer, inner_key.data(), inner_key.size());
    TPMT_SYM_DEF_OBJECT inner{};
    inner.algorithm = TPM2_ALG_AES;
    inner.keyBits.aes = 128;
    inner.mode.aes = TPM2_ALG_CFB;
    TPM2B_PRIVATE* raw_private = nullptr;
    check("Import of the DPS key", Esys_Import(esys, srk.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &encryption_key, &parts.key_public,
                                               &parts.duplicate, &parts.sym_seed, &inner, &raw_private));
    EsysPtr<TPM2B_PRIVATE> key_private(raw_private);
    ESYS_TR loaded = ESYS_TR_NONE;
    check("Load of the DPS key",
          Esys_Load(esys, srk.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, key_private.get(), &parts.key_public, &loaded));
    Flushed key(esys, loaded);
    tpm_.evict(options_.auth_key_handle);
    tpm_.set_hierarchy_auth(ESYS_TR_RH_OWNER);
    ESYS_TR stored = ESYS_TR_NONE;
    check("persisting the DPS key", Esys_EvictControl(esys, ESYS_TR_RH_OWNER, key.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                                      options_.auth_key_handle, &stored));
    Esys_TR_Close(esys, &stored);
}

Digest Tpm::sign(std::string_view data) {
    TPM2B_MAX_BUFFER buffer{};
    if (data.size() > sizeof buffer.buffer) fail("TPM: HMAC input of " + std::to_string(data.size()) + " bytes is over the TPM's limit");
    buffer.size = static_cast<uint16_t>(data.size());
    std::memcpy(buffer.buffer, data.data(), data.size());
    if (!persistent_exists(options_.auth_key_handle)) fail("TPM: no DPS key at its persistent handle: register again to import one");
    Closed key = tpm_.persistent(options_.auth_key_handle);
    TPM2B_DIGEST* raw = nullptr;
    check("HMAC with the DPS key",
          Esys_HMAC(tpm_.esys(), key.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer, TPM2_ALG_SHA256, &raw));
    EsysPtr<TPM2B_DIGEST> mac(raw);
    if (mac->size != 32) fail("TPM: HMAC returned " + std::to_string(mac->size) + " bytes, not 32");
    Digest d{};
    std::memcpy(d.data(), mac->buffer, d.size());
    return d;
}

std::string Tpm::info_text() {
    const std::string ek = endorsement_key();
    return "Registration Id:\n" + tpm_registration_id(ek) + "\n\nEndorsement Key:\n" + base64_encode(ek) + "\n";
}

}  // namespace cairn::provisioning
