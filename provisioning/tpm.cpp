#include "provisioning/tpm.hpp"

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include <cstring>

#include "common/error.hpp"
#include "common/hash.hpp"
#include "provisioning/activation.hpp"
#include "provisioning/encoding.hpp"

namespace cairn::provisioning {

namespace {

// An ESYS_TR for a transient object or session that is flushed when it goes.
class Flushed {
public:
    Flushed(ESYS_CONTEXT* ctx, ESYS_TR handle) : ctx_(ctx), handle_(handle) {}
    Flushed(const Flushed&) = delete;
    Flushed& operator=(const Flushed&) = delete;
    ~Flushed() {
        if (handle_ != ESYS_TR_NONE) Esys_FlushContext(ctx_, handle_);
    }
    ESYS_TR get() const { return handle_; }

private:
    ESYS_CONTEXT* ctx_;
    ESYS_TR handle_;
};

// An ESYS_TR for a persistent object, closed (not evicted) when it goes.
class Closed {
public:
    Closed(ESYS_CONTEXT* ctx, ESYS_TR handle) : ctx_(ctx), handle_(handle) {}
    Closed(const Closed&) = delete;
    Closed& operator=(const Closed&) = delete;
    ~Closed() {
        if (handle_ != ESYS_TR_NONE) Esys_TR_Close(ctx_, &handle_);
    }
    ESYS_TR get() const { return handle_; }

private:
    ESYS_CONTEXT* ctx_;
    ESYS_TR handle_;
};

void check(const std::string& what, TSS2_RC rc) {
    if (rc != TSS2_RC_SUCCESS) fail(tpm_error(what, rc));
}

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

Tpm::Tpm(TpmOptions options) : options_(std::move(options)) {
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

ESYS_TR Tpm::persistent(uint32_t handle) {
    ESYS_TR object = ESYS_TR_NONE;
    char name[16];
    std::snprintf(name, sizeof name, "0x%08x", handle);
    check(std::string("reading persistent handle ") + name,
          Esys_TR_FromTPMPublic(esys_.get(), handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object));
    return object;
}

void Tpm::evict(uint32_t handle) {
    if (!persistent_exists(handle)) return;
    Closed object(esys_.get(), persistent(handle));
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
    Closed object(esys_.get(), persistent(handle));
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

void Tpm::import_authentication_key(const std::string& blob) {
    ActivationBlob parts = parse_activation_blob(blob);
    endorsement_key();
    storage_root_key();
    Closed ek(esys_.get(), persistent(ek_handle));
    Closed srk(esys_.get(), persistent(srk_handle));

    // 1. ActivateCredential: the EK (policy session with PolicySecret(endorsement)) releases the
    //    16-byte inner wrapper key, bound to the SRK's name.
    TPMT_SYM_DEF no_symmetric{};
    no_symmetric.algorithm = TPM2_ALG_NULL;
    ESYS_TR session_handle = ESYS_TR_NONE;
    check("starting a policy session", Esys_StartAuthSession(esys_.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                                             nullptr, TPM2_SE_POLICY, &no_symmetric, TPM2_ALG_SHA256, &session_handle));
    Flushed session(esys_.get(), session_handle);
    set_hierarchy_auth(ESYS_TR_RH_ENDORSEMENT);
    check("PolicySecret(endorsement)", Esys_PolicySecret(esys_.get(), ESYS_TR_RH_ENDORSEMENT, session.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                         ESYS_TR_NONE, nullptr, nullptr, nullptr, 0, nullptr, nullptr));
    TPM2B_DIGEST* raw_cert_info = nullptr;
    TSS2_RC rc = Esys_ActivateCredential(esys_.get(), srk.get(), ek.get(), ESYS_TR_PASSWORD, session.get(), ESYS_TR_NONE, &parts.credential_blob,
                                         &parts.secret, &raw_cert_info);
    check("ActivateCredential (the authenticationKey was not made for this TPM's EK and SRK)", rc);
    EsysPtr<TPM2B_DIGEST> cert_info(raw_cert_info);

    // 2. Import the HMAC key under the SRK with that inner key, load it, persist it.
    TPM2B_DATA encryption_key{};
    encryption_key.size = cert_info->size;
    std::memcpy(encryption_key.buffer, cert_info->buffer, cert_info->size);
    TPMT_SYM_DEF_OBJECT inner{};
    inner.algorithm = TPM2_ALG_AES;
    inner.keyBits.aes = 128;
    inner.mode.aes = TPM2_ALG_CFB;
    TPM2B_PRIVATE* raw_private = nullptr;
    check("Import of the DPS key", Esys_Import(esys_.get(), srk.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &encryption_key,
                                               &parts.key_public, &parts.duplicate, &parts.sym_seed, &inner, &raw_private));
    EsysPtr<TPM2B_PRIVATE> key_private(raw_private);
    ESYS_TR loaded = ESYS_TR_NONE;
    check("Load of the DPS key", Esys_Load(esys_.get(), srk.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, key_private.get(),
                                           &parts.key_public, &loaded));
    Flushed key(esys_.get(), loaded);
    evict(options_.auth_key_handle);
    set_hierarchy_auth(ESYS_TR_RH_OWNER);
    ESYS_TR stored = ESYS_TR_NONE;
    check("persisting the DPS key", Esys_EvictControl(esys_.get(), ESYS_TR_RH_OWNER, key.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                                      options_.auth_key_handle, &stored));
    Esys_TR_Close(esys_.get(), &stored);
}

Digest Tpm::sign(std::string_view data) {
    TPM2B_MAX_BUFFER buffer{};
    if (data.size() > sizeof buffer.buffer) fail("TPM: HMAC input of " + std::to_string(data.size()) + " bytes is over the TPM's limit");
    buffer.size = static_cast<uint16_t>(data.size());
    std::memcpy(buffer.buffer, data.data(), data.size());
    if (!persistent_exists(options_.auth_key_handle)) fail("TPM: no DPS key at its persistent handle: register again to import one");
    Closed key(esys_.get(), persistent(options_.auth_key_handle));
    TPM2B_DIGEST* raw = nullptr;
    check("HMAC with the DPS key", Esys_HMAC(esys_.get(), key.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer, TPM2_ALG_SHA256, &raw));
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
