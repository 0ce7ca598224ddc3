#include "tpm/tpm.hpp"

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.hpp"

namespace cairn::tpm {

namespace {

TPM2B_PUBLIC rsa_template(TPMA_OBJECT attributes) {
    TPM2B_PUBLIC pub{};
    pub.publicArea.type = TPM2_ALG_RSA;
    pub.publicArea.nameAlg = TPM2_ALG_SHA256;
    pub.publicArea.objectAttributes = attributes;
    pub.publicArea.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
    pub.publicArea.parameters.rsaDetail.symmetric.keyBits.aes = 128;
    pub.publicArea.parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    pub.publicArea.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    pub.publicArea.parameters.rsaDetail.keyBits = 2048;
    pub.publicArea.parameters.rsaDetail.exponent = 0;
    pub.publicArea.unique.rsa.size = 256;  // 256 zero bytes, as the TCG templates say
    return pub;
}

}  // namespace

std::string tpm_error(const std::string& what, TSS2_RC rc) {
    const char* text = Tss2_RC_Decode(rc);
    char code[16];
    std::snprintf(code, sizeof code, "0x%x", rc);
    return "TPM: " + what + ": " + (text ? text : "unknown error") + " (" + code + ")";
}

void check(const std::string& what, TSS2_RC rc) {
    if (rc != TSS2_RC_SUCCESS) fail(tpm_error(what, rc));
}

TPM2B_PUBLIC ek_template() {
    TPM2B_PUBLIC pub = rsa_template(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                    TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT);
    // PolicySecret(TPM_RH_ENDORSEMENT)
    static const uint8_t policy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
                                       0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
    pub.publicArea.authPolicy.size = sizeof policy;
    std::memcpy(pub.publicArea.authPolicy.buffer, policy, sizeof policy);
    return pub;
}

TPM2B_PUBLIC srk_template() {
    return rsa_template(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                        TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT);
}

TPM2B_PUBLIC ak_template() {
    TPM2B_PUBLIC pub{};
    pub.publicArea.type = TPM2_ALG_RSA;
    pub.publicArea.nameAlg = TPM2_ALG_SHA256;
    pub.publicArea.objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                      TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH;
    // A signing key has no symmetric algorithm; a restricted one must name its one scheme.
    pub.publicArea.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
    pub.publicArea.parameters.rsaDetail.scheme.scheme = TPM2_ALG_RSASSA;
    pub.publicArea.parameters.rsaDetail.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
    pub.publicArea.parameters.rsaDetail.keyBits = 2048;
    pub.publicArea.parameters.rsaDetail.exponent = 0;
    return pub;
}

std::string marshal_public(const TPM2B_PUBLIC& pub) {
    uint8_t buffer[sizeof(TPM2B_PUBLIC) + 8];
    size_t offset = 0;
    check("marshaling a public area", Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, buffer, sizeof buffer, &offset));
    return std::string(reinterpret_cast<char*>(buffer), offset);
}

TPM2B_PUBLIC unmarshal_public(const std::string& bytes, const std::string& what) {
    TPM2B_PUBLIC pub{};
    size_t offset = 0;
    TSS2_RC rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &offset, &pub);
    if (rc != TSS2_RC_SUCCESS) fail(what + ": not a TPM2B_PUBLIC (" + tpm_error("unmarshal", rc) + ")");
    if (offset != bytes.size()) fail(what + ": " + std::to_string(bytes.size() - offset) + " bytes after the TPM2B_PUBLIC");
    return pub;
}

Tpm::Tpm(Options options) : options_(std::move(options)) {
    // tpm2-tss logs expected failures (an empty handle, a refused blob) to stderr; our errors say
    // it better. TSS2_LOG set by the user wins.
    ::setenv("TSS2_LOG", "all+NONE", 0);
    TSS2_TCTI_CONTEXT* tcti = nullptr;
    TSS2_RC rc = Tss2_TctiLdr_Initialize(options_.tcti.c_str(), &tcti);
    if (rc != TSS2_RC_SUCCESS) fail(tpm_error("cannot open TCTI '" + options_.tcti + "'", rc));
    tcti_.reset(tcti);
    ESYS_CONTEXT* esys = nullptr;
    rc = Esys_Initialize(&esys, tcti_.get(), nullptr);
    if (rc != TSS2_RC_SUCCESS) fail(tpm_error("cannot start ESAPI on TCTI '" + options_.tcti + "'", rc));
    esys_.reset(esys);
}

void Tpm::set_hierarchy_auth(ESYS_TR hierarchy) {
    const std::string& secret = hierarchy == ESYS_TR_RH_ENDORSEMENT ? options_.endorsement_auth : options_.owner_auth;
    TPM2B_AUTH auth{};
    if (secret.size() > sizeof auth.buffer) fail("TPM: hierarchy authorization is longer than " + std::to_string(sizeof auth.buffer) + " bytes");
    auth.size = static_cast<uint16_t>(secret.size());
    std::memcpy(auth.buffer, secret.data(), secret.size());
    check("setting hierarchy authorization", Esys_TR_SetAuth(esys_.get(), hierarchy, &auth));
}

bool Tpm::persistent_exists(uint32_t handle) {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    check("listing persistent handles", Esys_GetCapability(esys_.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, handle, 1,
                                                           &more, &raw));
    EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
    return data->data.handles.count > 0 && data->data.handles.handle[0] == handle;
}

Closed Tpm::persistent(uint32_t handle) {
    ESYS_TR object = ESYS_TR_NONE;
    char name[16];
    std::snprintf(name, sizeof name, "0x%08x", handle);
    check(std::string("reading persistent handle ") + name,
          Esys_TR_FromTPMPublic(esys_.get(), handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object));
    return Closed(esys_.get(), object);
}

void Tpm::evict(uint32_t handle) {
    if (!persistent_exists(handle)) return;
    Closed object = persistent(handle);
    set_hierarchy_auth(ESYS_TR_RH_OWNER);
    ESYS_TR none = ESYS_TR_NONE;
    check("evicting a persistent key", Esys_EvictControl(esys_.get(), ESYS_TR_RH_OWNER, object.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                         ESYS_TR_NONE, handle, &none));
}

std::string Tpm::ensure_primary(uint32_t handle, ESYS_TR hierarchy, const TPM2B_PUBLIC& tmpl) {
    if (!persistent_exists(handle)) {
        set_hierarchy_auth(hierarchy);
        TPM2B_SENSITIVE_CREATE sensitive{};
        TPM2B_DATA outside{};
        TPML_PCR_SELECTION pcrs{};
        ESYS_TR created = ESYS_TR_NONE;
        check(hierarchy == ESYS_TR_RH_ENDORSEMENT ? "creating the endorsement key" : "creating the storage root key",
              Esys_CreatePrimary(esys_.get(), hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &tmpl, &outside, &pcrs,
                                 &created, nullptr, nullptr, nullptr, nullptr));
        Flushed transient(esys_.get(), created);
        set_hierarchy_auth(ESYS_TR_RH_OWNER);
        ESYS_TR stored = ESYS_TR_NONE;
        check("persisting a primary key", Esys_EvictControl(esys_.get(), ESYS_TR_RH_OWNER, transient.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                            ESYS_TR_NONE, handle, &stored));
        Esys_TR_Close(esys_.get(), &stored);
    }
    return read_public(handle);
}

std::string Tpm::read_public(uint32_t handle) {
    Closed object = persistent(handle);
    TPM2B_PUBLIC* raw = nullptr;
    check("reading a public key", Esys_ReadPublic(esys_.get(), object.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw, nullptr, nullptr));
    EsysPtr<TPM2B_PUBLIC> pub(raw);
    return marshal_public(*pub);
}

std::string Tpm::endorsement_key() {
    if (ek_.empty()) ek_ = ensure_primary(ek_handle, ESYS_TR_RH_ENDORSEMENT, ek_template());
    return ek_;
}

std::string Tpm::storage_root_key() {
    if (srk_.empty()) srk_ = ensure_primary(srk_handle, ESYS_TR_RH_OWNER, srk_template());
    return srk_;
}

Flushed Tpm::ek_policy_session() {
    TPMT_SYM_DEF no_symmetric{};
    no_symmetric.algorithm = TPM2_ALG_NULL;
    ESYS_TR session_handle = ESYS_TR_NONE;
    check("starting a policy session", Esys_StartAuthSession(esys_.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                                             nullptr, TPM2_SE_POLICY, &no_symmetric, TPM2_ALG_SHA256, &session_handle));
    Flushed session(esys_.get(), session_handle);
    set_hierarchy_auth(ESYS_TR_RH_ENDORSEMENT);
    check("PolicySecret(endorsement)", Esys_PolicySecret(esys_.get(), ESYS_TR_RH_ENDORSEMENT, session.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                         ESYS_TR_NONE, nullptr, nullptr, nullptr, 0, nullptr, nullptr));
    return session;
}

std::string Tpm::activate_credential(ESYS_TR object, const TPM2B_ID_OBJECT& credential_blob, const TPM2B_ENCRYPTED_SECRET& secret,
                                     const std::string& what) {
    endorsement_key();
    Closed ek = persistent(ek_handle);
    Flushed session = ek_policy_session();
    TPM2B_DIGEST* raw_cert_info = nullptr;
    check(what, Esys_ActivateCredential(esys_.get(), object, ek.get(), ESYS_TR_PASSWORD, session.get(), ESYS_TR_NONE, &credential_blob, &secret,
                                        &raw_cert_info));
    EsysPtr<TPM2B_DIGEST> cert_info(raw_cert_info);
    return std::string(reinterpret_cast<const char*>(cert_info->buffer), cert_info->size);
}

void Tpm::create_attestation_key() {
    endorsement_key();
    Closed ek = persistent(ek_handle);
    const TPM2B_PUBLIC tmpl = ak_template();
    TPM2B_SENSITIVE_CREATE sensitive{};
    TPM2B_DATA outside{};
    TPML_PCR_SELECTION creation_pcrs{};
    TPM2B_PRIVATE* raw_private = nullptr;
    TPM2B_PUBLIC* raw_public = nullptr;
    {
        // The EK's policy (PolicySecret(endorsement)) authorizes using it as a parent; a policy
        // session is spent by the command it authorizes, so Load needs a new one.
        Flushed session = ek_policy_session();
        check("creating the attestation key under the EK",
              Esys_Create(esys_.get(), ek.get(), session.get(), ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &tmpl, &outside, &creation_pcrs,
                          &raw_private, &raw_public, nullptr, nullptr, nullptr));
    }
    EsysPtr<TPM2B_PRIVATE> key_private(raw_private);
    EsysPtr<TPM2B_PUBLIC> key_public(raw_public);
    ESYS_TR loaded = ESYS_TR_NONE;
    {
        Flushed session = ek_policy_session();
        check("loading the attestation key",
              Esys_Load(esys_.get(), ek.get(), session.get(), ESYS_TR_NONE, ESYS_TR_NONE, key_private.get(), key_public.get(), &loaded));
    }
    Flushed transient(esys_.get(), loaded);
    set_hierarchy_auth(ESYS_TR_RH_OWNER);
    ESYS_TR stored = ESYS_TR_NONE;
    check("persisting the attestation key at 0x81010002", Esys_EvictControl(esys_.get(), ESYS_TR_RH_OWNER, transient.get(), ESYS_TR_PASSWORD,
                                                                           ESYS_TR_NONE, ESYS_TR_NONE, ak_handle, &stored));
    Esys_TR_Close(esys_.get(), &stored);
}

std::string Tpm::attestation_key() {
    if (ak_.empty()) {
        if (!persistent_exists(ak_handle)) create_attestation_key();
        ak_ = read_public(ak_handle);
    }
    return ak_;
}

std::string Tpm::activate_attestation_key(const std::string& id_object, const std::string& encrypted_secret) {
    TPM2B_ID_OBJECT blob{};
    size_t offset = 0;
    TSS2_RC rc = Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(reinterpret_cast<const uint8_t*>(id_object.data()), id_object.size(), &offset, &blob);
    if (rc != TSS2_RC_SUCCESS || offset != id_object.size()) fail("the credential blob is not a TPM2B_ID_OBJECT");
    TPM2B_ENCRYPTED_SECRET secret{};
    offset = 0;
    rc = Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(reinterpret_cast<const uint8_t*>(encrypted_secret.data()), encrypted_secret.size(), &offset,
                                                  &secret);
    if (rc != TSS2_RC_SUCCESS || offset != encrypted_secret.size()) fail("the encrypted secret is not a TPM2B_ENCRYPTED_SECRET");
    attestation_key();
    Closed ak = persistent(ak_handle);
    return activate_credential(ak.get(), blob, secret, "ActivateCredential (the credential was not made for this TPM's EK and attestation key)");
}

Tpm::Quote Tpm::quote(const std::string& nonce, const std::vector<unsigned>& pcrs) {
    TPM2B_DATA qualifying{};
    if (nonce.size() > sizeof qualifying.buffer) fail("TPM: quote nonce of " + std::to_string(nonce.size()) + " bytes (at most 64)");
    qualifying.size = static_cast<uint16_t>(nonce.size());
    std::memcpy(qualifying.buffer, nonce.data(), nonce.size());
    TPML_PCR_SELECTION selection{};
    selection.count = 1;
    selection.pcrSelections[0].hash = TPM2_ALG_SHA256;
    selection.pcrSelections[0].sizeofSelect = 3;
    for (unsigned pcr : pcrs) {
        if (pcr > 23) fail("TPM: cannot quote PCR " + std::to_string(pcr) + " (PCRs are 0 to 23)");
        selection.pcrSelections[0].pcrSelect[pcr / 8] |= static_cast<uint8_t>(1u << (pcr % 8));
    }
    // TPM2_ALG_NULL: the AK's own scheme (RSASSA-SHA256), the only one a restricted key allows.
    TPMT_SIG_SCHEME scheme{};
    scheme.scheme = TPM2_ALG_NULL;
    attestation_key();
    Closed ak = persistent(ak_handle);
    TPM2B_ATTEST* raw_attest = nullptr;
    TPMT_SIGNATURE* raw_signature = nullptr;
    check("TPM2_Quote", Esys_Quote(esys_.get(), ak.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &qualifying, &scheme, &selection,
                                   &raw_attest, &raw_signature));
    EsysPtr<TPM2B_ATTEST> attest(raw_attest);
    EsysPtr<TPMT_SIGNATURE> signature(raw_signature);
    Quote out;
    out.attest.assign(reinterpret_cast<const char*>(attest->attestationData), attest->size);
    uint8_t buffer[sizeof(TPMT_SIGNATURE) + 8];
    size_t offset = 0;
    check("marshaling the quote's signature", Tss2_MU_TPMT_SIGNATURE_Marshal(signature.get(), buffer, sizeof buffer, &offset));
    out.signature.assign(reinterpret_cast<const char*>(buffer), offset);
    return out;
}

}  // namespace cairn::tpm
