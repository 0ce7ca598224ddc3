// The device's TPM as DPS uses it, on top of tpm/tpm.hpp: the DPS activation (ActivateCredential
// with the EK, Import under the SRK, the HMAC key persisted at 0x81000100), HMAC signing of SAS
// tokens inside the TPM, and `cairnctl provision tpm-info`'s text.
#pragma once

#include <cstdint>
#include <string>

#include "provisioning/dps_client.hpp"
#include "tpm/tpm.hpp"

namespace cairn::provisioning {

constexpr uint32_t default_auth_key_handle = 0x81000100;

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

    // The EK/SRK, created and persisted when their handle is empty; marshaled TPM2B_PUBLIC.
    std::string endorsement_key() override { return tpm_.endorsement_key(); }
    std::string storage_root_key() override { return tpm_.storage_root_key(); }
    void import_authentication_key(const std::string& blob) override;
    Digest sign(std::string_view data) override;

    bool persistent_exists(uint32_t handle) { return tpm_.persistent_exists(handle); }
    bool has_authentication_key() { return persistent_exists(options_.auth_key_handle); }
    void evict(uint32_t handle) { tpm_.evict(handle); }  // no-op when empty
    const TpmOptions& options() const { return options_; }
    tpm::Tpm& device() { return tpm_; }

    // What `cairnctl provision tpm-info` prints (tpm_device_provision's layout):
    // "Registration Id:\n<id>\n\nEndorsement Key:\n<base64>\n"
    std::string info_text();

private:
    TpmOptions options_;
    tpm::Tpm tpm_;
};

}  // namespace cairn::provisioning
