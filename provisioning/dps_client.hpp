// The device side of the DPS protocol over HTTPS (libcurl with OpenSSL): PUT register, the TPM
// challenge, polling the operation with Retry-After, exponential backoff with jitter on network
// errors, 429 and 5xx, and SAS tokens whose lifetime tolerates a device clock that is off.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/hash.hpp"
#include "http/client.hpp"

namespace cairn::provisioning {

// The device's TPM as the protocol needs it (provisioning/tpm.hpp implements it with ESAPI).
class TpmAuthenticator {
public:
    virtual ~TpmAuthenticator() = default;
    virtual std::string endorsement_key() = 0;   // marshaled TPM2B_PUBLIC
    virtual std::string storage_root_key() = 0;  // marshaled TPM2B_PUBLIC
    // Activates and imports the 401 reply's authenticationKey; persists the HMAC key.
    virtual void import_authentication_key(const std::string& blob) = 0;
    // HMAC-SHA256 with the imported key, inside the TPM.
    virtual Digest sign(std::string_view data) = 0;
};

// The TPM registration ID: lowercase unpadded base32 of SHA-256 over the EK's TPM2B_PUBLIC.
std::string tpm_registration_id(const std::string& endorsement_key);

struct RetryPolicy {
    int max_attempts = 8;       // per request, counting the first
    int base_delay_ms = 500;    // doubled per attempt, with jitter (a random half of it)
    int max_delay_ms = 30000;
    int max_retry_after_s = 300;
    int max_polls = 120;
};

enum class AttestationMethod { SymmetricKey, X509, Tpm };

struct DpsClientConfig {
    std::string global_endpoint;              // https://host[:port][/]
    std::string id_scope;
    std::string registration_id;              // empty: the certificate's CN (x509) or the TPM's rule
    std::string api_version = "2021-06-01";
    std::filesystem::path trust_bundle;
    AttestationMethod method = AttestationMethod::SymmetricKey;
    std::string symmetric_key;                // base64 device key, or the group key when symmetric_key_is_group
    bool symmetric_key_is_group = false;
    std::filesystem::path identity_cert;      // PEM chain: device certificate first
    std::filesystem::path identity_pk;
    TpmAuthenticator* tpm = nullptr;
    std::optional<nlohmann::json> payload;
    int token_lifetime_s = 3600;              // long enough for a device clock an hour behind
    int connect_timeout_ms = 10000;
    int timeout_ms = 30000;
    RetryPolicy retry;
    std::function<void(const std::string&)> log;  // progress lines; may be empty
};

struct RegistrationResult {
    std::string registration_id;
    std::string operation_id;
    std::string status;          // assigned | failed | disabled | ...
    std::string substatus;
    std::string assigned_hub;
    std::string device_id;
    int64_t error_code = 0;
    std::string error_message;
    nlohmann::json payload;
    nlohmann::json registration_state;
    int requests = 0;            // HTTP requests made, retries included
    bool assigned() const { return status == "assigned"; }
};

// Registers and waits for the outcome. Returns assigned/failed/disabled results; throws Error
// (naming the endpoint, registration ID, HTTP status and the service's message) when the service
// refuses the request or cannot be reached after the retries.
RegistrationResult register_device(const DpsClientConfig& config);

// Reading the service's replies (the untrusted part of register_device, apart from the network):
// A reply body as a JSON object; anything else throws Error "provisioning: <what>: ...".
nlohmann::json parse_dps_reply(const std::string& reply_body, const std::string& what);
// The outcome a registration or operation-status reply states (requests left 0). Throws Error when
// a field it reads is not a string, or when it is 'assigned' but names no hub or device ID.
RegistrationResult registration_result(const nlohmann::json& status, const std::string& registration_id, const std::string& operation);
// The service's message from an error reply (message|errorMessage|Message) and its code
// (errorCode|code) when `code` is given; else the body's first 200 bytes, or "(no body)".
std::string dps_error_message(const std::string& reply_body, int64_t* code = nullptr);

// The registration ID the configuration resolves to (reads the certificate or asks the TPM).
std::string resolve_registration_id(const DpsClientConfig& config);

}  // namespace cairn::provisioning
