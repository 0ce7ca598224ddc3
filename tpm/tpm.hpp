// The device's TPM through tpm2-tss ESAPI, for everything that uses it (provisioning, attestation):
// the TCTI and ESAPI context, the endorsement key at 0x81010001 (TCG template L-1, RSA 2048) and
// the storage root key at 0x81000001, created and persisted when missing; hierarchy passwords;
// the EK's policy session (PolicySecret(endorsement)) and ActivateCredential with the EK; the
// attestation key (AK) at 0x81010002, a child of the EK, and quotes signed with it.
// Links tpm2-tss and libcrypto only: no HTTP, no DPS (tpm/CMakeLists.txt checks this).
#pragma once

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cairn::tpm {

constexpr uint32_t ek_handle = 0x81010001;
constexpr uint32_t srk_handle = 0x81000001;
constexpr uint32_t ak_handle = 0x81010002;

struct TctiDeleter {
    void operator()(TSS2_TCTI_CONTEXT* t) const { Tss2_TctiLdr_Finalize(&t); }
};
using TctiPtr = std::unique_ptr<TSS2_TCTI_CONTEXT, TctiDeleter>;
struct EsysContextDeleter {
    void operator()(ESYS_CONTEXT* c) const { Esys_Finalize(&c); }
};
using EsysContextPtr = std::unique_ptr<ESYS_CONTEXT, EsysContextDeleter>;
// Memory that ESAPI hands out (Esys_Free).
struct EsysFreeDeleter {
    void operator()(void* p) const { Esys_Free(p); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFreeDeleter>;

// An ESYS_TR for a transient object or session that is flushed when it goes.
class Flushed {
public:
    Flushed(ESYS_CONTEXT* ctx, ESYS_TR handle) : ctx_(ctx), handle_(handle) {}
    Flushed(Flushed&& other) noexcept : ctx_(other.ctx_), handle_(other.handle_) { other.handle_ = ESYS_TR_NONE; }
    Flushed(const Flushed&) = delete;
    Flushed& operator=(const Flushed&) = delete;
    Flushed& operator=(Flushed&&) = delete;
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
    Closed(Closed&& other) noexcept : ctx_(other.ctx_), handle_(other.handle_) { other.handle_ = ESYS_TR_NONE; }
    Closed(const Closed&) = delete;
    Closed& operator=(const Closed&) = delete;
    Closed& operator=(Closed&&) = delete;
    ~Closed() {
        if (handle_ != ESYS_TR_NONE) Esys_TR_Close(ctx_, &handle_);
    }
    ESYS_TR get() const { return handle_; }

private:
    ESYS_CONTEXT* ctx_;
    ESYS_TR handle_;
};

// "TPM: TPM2_CreatePrimary: tpm:handle(1):the handle is not correct (0x18b)"-style text.
std::string tpm_error(const std::string& what, TSS2_RC rc);
// Throws Error with tpm_error's text unless rc is success.
void check(const std::string& what, TSS2_RC rc);

// The public templates (TCG EK Credential Profile template L-1; TCG storage key template).
TPM2B_PUBLIC ek_template();
TPM2B_PUBLIC srk_template();
// The attestation key: RSA 2048, RSASSA-SHA256, restricted|sign|fixedTPM|fixedParent|
// sensitiveDataOrigin|userWithAuth (0x00050072), nameAlg SHA-256, empty password.
TPM2B_PUBLIC ak_template();
std::string marshal_public(const TPM2B_PUBLIC& pub);
TPM2B_PUBLIC unmarshal_public(const std::string& bytes, const std::string& what);

struct Options {
    std::string tcti = "device:/dev/tpmrm0";  // tctildr configuration: "swtpm:host=127.0.0.1,port=2321", ...
    std::string endorsement_auth;             // hierarchy passwords, empty by default
    std::string owner_auth;
};

class Tpm {
public:
    // Connects; throws Error naming the TCTI when the TPM cannot be reached.
    explicit Tpm(Options options);
    Tpm(const Tpm&) = delete;
    Tpm& operator=(const Tpm&) = delete;

    // The EK/SRK, created and persisted when their handle is empty; marshaled TPM2B_PUBLIC.
    std::string endorsement_key();
    std::string storage_root_key();

    bool persistent_exists(uint32_t handle);
    // The persistent object at `handle` (Error when empty), closed when the result goes.
    Closed persistent(uint32_t handle);
    void evict(uint32_t handle);  // no-op when empty
    // Sets the password of ESYS_TR_RH_ENDORSEMENT or ESYS_TR_RH_OWNER from the options.
    void set_hierarchy_auth(ESYS_TR hierarchy);

    // A policy session satisfying the EK's policy: PolicySecret(TPM_RH_ENDORSEMENT).
    Flushed ek_policy_session();
    // TPM2_ActivateCredential with the EK (at ek_handle, created when missing): the credential
    // (certInfo) protected to the EK and to `object`'s name. `what` names the step in the error
    // when the TPM refuses (the blob was made for another EK or object).
    std::string activate_credential(ESYS_TR object, const TPM2B_ID_OBJECT& credential_blob, const TPM2B_ENCRYPTED_SECRET& secret,
                                    const std::string& what = "ActivateCredential");

    // The attestation key at ak_handle: created under the EK (the EK's policy session authorizes
    // Create and Load) and persisted with owner authorization when the handle is empty; the
    // marshaled TPM2B_PUBLIC. A key already at ak_handle is used as it is.
    std::string attestation_key();
    // activate_credential with the AK as the object: `id_object` and `encrypted_secret` are the
    // marshaled TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET of a MakeCredential for this TPM's EK
    // and the AK's Name (tpm/credential.hpp); returns the secret. Error when they were made for
    // another EK or Name, or do not parse.
    std::string activate_attestation_key(const std::string& id_object, const std::string& encrypted_secret);

    // TPM2_Quote with the AK of the SHA-256 bank's `pcrs` (0..23), `nonce` as qualifyingData (at
    // most 64 bytes): the signed TPMS_ATTEST (TPM2B_ATTEST's contents) and the marshaled
    // TPMT_SIGNATURE (RSASSA-SHA256).
    struct Quote {
        std::string attest, signature;
    };
    Quote quote(const std::string& nonce, const std::vector<unsigned>& pcrs);

    ESYS_CONTEXT* esys() { return esys_.get(); }
    const Options& options() const { return options_; }

private:
    std::string ensure_primary(uint32_t handle, ESYS_TR hierarchy, const TPM2B_PUBLIC& tmpl);

    Options options_;
    TctiPtr tcti_;
    EsysContextPtr esys_;
    void create_attestation_key();
    std::string read_public(uint32_t handle);

    std::string ek_, srk_, ak_;
};

}  // namespace cairn::tpm
