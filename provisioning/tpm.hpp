// The device's TPM through tpm2-tss ESAPI: the endorsement key at 0x81010001 (TCG template L-1,
// RSA 2048) and the storage root key at 0x81000001, created and persisted when missing; the DPS
// activation (ActivateCredential with the EK, Import under the SRK, the HMAC key persisted at
// 0x81000100); HMAC signing inside the TPM.
#pragma once

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include <cstdint>
#include <memory>
#include <string>

#include "provisioning/dps_client.hpp"

namespace cairn::provisioning {

constexpr uint32_t ek_handle = 0x81010001;
constexpr uint32_t srk_handle = 0x81000001;
constexpr uint32_t default_auth_key_handle = 0x81000100;

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

// "TPM2_CreatePrimary: tpm:handle(1):the handle is not correct (0x18b)"-style text.
std::string tpm_error(const std::string& what, TSS2_RC rc);

// The public templates (TCG EK Credential Profile template L-1; TCG storage key template).
TPM2B_PUBLIC ek_template();
TPM2B_PUBLIC srk_template();
std::string marshal_public(const TPM2B_PUBLIC& pub);
TPM2B_PUBLIC unmarshal_public(const std::string& bytes, const std::string& what);

struct TpmOptions {
    std::string tcti = "device:/dev/tpmrm0";  // tctildr configuration: "swtpm:host=127.0.0.1,port=2321", ...
    uint32_t auth_key_handle = default_auth_key_handle;
    std::string endorsement_auth;             // hierarchy passwords, empty by default
    std::string owner_auth;
};

class Tpm : public TpmAuthenticator {
public:
    // Connects; throws Error naming the TCTI when the TPM cannot be reached.
    explicit Tpm(TpmOptions options);
    Tpm(const Tpm&) = delete;
    Tpm& operator=(const Tpm&) = delete;

    // The EK/SRK, created and persisted when their handle is empty; marshaled TPM2B_PUBLIC.
    std::string endorsement_key() override;
    std::string storage_root_key() override;
    void import_authentication_key(const std::string& blob) override;
    Digest sign(std::string_view data) override;

    bool persistent_exists(uint32_t handle);
    bool has_authentication_key() { return persistent_exists(options_.auth_key_handle); }
    void evict(uint32_t handle);  // no-op when empty
    const TpmOptions& options() const { return options_; }

    // What `cairnctl provision tpm-info` prints (tpm_device_provision's layout):
    // "Registration Id:\n<id>\n\nEndorsement Key:\n<base64>\n"
    std::string info_text();

private:
    ESYS_TR persistent(uint32_t handle);
    std::string ensure_primary(uint32_t handle, ESYS_TR hierarchy, const TPM2B_PUBLIC& tmpl);
    void set_hierarchy_auth(ESYS_TR hierarchy);

    TpmOptions options_;
    TctiPtr tcti_;
    EsysContextPtr esys_;
    std::string ek_, srk_;
};

}  // namespace cairn::provisioning
