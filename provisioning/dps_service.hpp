// The protocol logic of cairn-dps, a DPS-compatible provisioning service: enrollments (individual:
// symmetric key, X.509 certificate, TPM endorsement key; groups: symmetric group key, X.509 CA),
// device registration (PUT register → 202 → GET operation), authentication (SAS tokens with expiry,
// TLS client certificates, the TPM challenge), allocation over several hubs, initial twin, payload
// echo, a request log, injected faults, and an admin REST API under /admin.
//
// Enrollment documents follow the DPS service API's shapes:
//   {"registrationId": "dev1", "attestation": {"type": "symmetricKey",
//      "symmetricKey": {"primaryKey": "<b64>", "secondaryKey": "<b64>"}},
//    "deviceId": "dev1", "provisioningStatus": "enabled" | "disabled",
//    "iotHubs": ["hub.example"], "initialTwin": {"tags": {...}}}
//   x509:  "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}}}
//   tpm:   "tpm":  {"endorsementKey": "<b64 TPM2B_PUBLIC>"}
//   groups: {"enrollmentGroupId": "g", "attestation": {"type": "symmetricKey" | "x509",
//      "x509": {"signingCertificates": {"primary": {"certificate": "<PEM>"}}}}, ...}
// A certificate may be given as "certificateFile" (a path, relative to the enrollments file).
// The enrollments file: {"idScope": "...", "iotHubs": [...], "enrollments": [...],
// "enrollmentGroups": [...]}, JSON or TOML (by extension).
//
// State (enrollments, registration operations, registrations, TPM challenges, the simulated hub's
// devices) lives in SQLite (store/sqlite.hpp): a file given as DpsServiceConfig::state_file keeps it
// across restarts, ":memory:" (the default) for as long as the service lives. Each request's changes
// are one transaction. The request log and injected faults are diagnostics and stay in memory.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <variant>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/server.hpp"
#include "provisioning/openssl.hpp"
#include "store/sqlite.hpp"

namespace cairn::provisioning {

// The api-version values the service accepts.
const std::vector<std::string>& dps_api_versions();

struct DpsServiceConfig {
    int retry_after_seconds = 3;         // Retry-After on 202 replies (real DPS: 3)
    int assign_delay_ms = 0;             // how long an operation stays "assigning"
    int64_t clock_offset_seconds = 0;    // the service's clock is the host's plus this (tests of skew)
    std::filesystem::path request_log;   // JSON lines appended per request; empty: memory only
    uint64_t request_log_max_bytes = 16 * 1024 * 1024;  // past this the file becomes FILE.1 (replacing it) and a new one starts
    std::string admin_token;             // empty: the admin API answers 404
    size_t max_operations = 10000;       // registration operations kept; the oldest goes first
    size_t max_operations_per_registration = 4;  // per registration ID; its oldest goes first
    int tpm_challenge_ttl_seconds = 120; // a TPM challenge stays pending (and is handed out again) this long unless answered
    std::filesystem::path state_file = ":memory:";  // the SQLite database of the service's state
};

// DPS's rule for registration IDs: 1 to 128 characters, lowercase letters, digits and - . _ :
bool is_valid_registration_id(std::string_view id);

// Reads an enrollments file (JSON, or TOML when it ends in .toml), resolving certificateFile
// paths against the file's directory. Throws Error naming the file.
nlohmann::json load_enrollments_file(const std::filesystem::path& file);

// Server side of the TPM challenge: builds the activation blob for an EK and SRK (both marshaled
// TPM2B_PUBLIC) and returns it with the HMAC key it carries.
struct TpmChallenge {
    std::string blob;      // raw bytes; base64 goes into authenticationKey
    std::string hmac_key;  // raw bytes
};
using TpmChallengeMaker = std::function<TpmChallenge(const std::string& ek_public, const std::string& srk_public)>;

class DpsService {
public:
    // Opens (or creates) config.state_file, brings its schema up to date and puts the enrollments
    // over the stored ones (enrollments stored but absent from the document stay). Throws Error
    // naming the state file when it is not a database or comes from a later schema.
    DpsService(DpsServiceConfig config, const nlohmann::json& enrollments);

    http::HttpResponse handle(const http::HttpRequest& request);

    // Without one, TPM registrations are answered 501.
    void set_tpm_challenge_maker(TpmChallengeMaker maker);

    // Admin operations (also reachable over /admin).
    void put_enrollment(const nlohmann::json& enrollment);
    void put_enrollment_group(const nlohmann::json& group);
    bool remove_enrollment(const std::string& registration_id);
    bool remove_enrollment_group(const std::string& group_id);
    // The next `count` device requests are answered with `status` (500, 429, 503...).
    void inject_faults(int status, int count, int retry_after_seconds = 1);
    nlohmann::json request_log() const;
    // The simulated IoT Hub's view of an assigned device: "enabled", "disabled" (the hub refuses
    // the device) or "credentialRevoked" (the hub refuses its credential). Throws Error for a
    // device never assigned or another status. A new registration makes it "enabled" again.
    void set_hub_status(const std::string& device_id, const std::string& status);
    nlohmann::json hub_devices() const;
    nlohmann::json registrations() const;
    std::string id_scope() const;

private:
    struct Enrollment {
        std::string id;
        bool group = false;
        std::string type;  // symmetricKey | x509 | tpm
        std::vector<std::string> keys;                // raw symmetric keys (primary, secondary)
        std::vector<X509Ptr> certificates;            // individual: client certs; group: signing CAs
        std::string endorsement_key;                  // raw TPM2B_PUBLIC
        std::string device_id;
        bool enabled = true;
        std::vector<std::string> hubs;
        nlohmann::json initial_twin;
        nlohmann::json document;
    };
    struct Operation {
        std::string id;
        std::string registration_id;
        int64_t ready_at_ms = 0;  // wall clock, ms since the epoch: meaningful after a restart
        nlohmann::json result;    // status + registrationState
    };
    struct Authenticated {
        std::shared_ptr<const Enrollment> enrollment;
        std::string method;   // symmetricKey | x509 | tpm
        std::string key;      // SAS: the raw key the token was signed with
        std::string thumbprint;  // X.509: the client certificate's
        std::string tpm_blob;    // TPM: the challenge the key came in
    };
    // What the simulated hub knows of an assigned device (GET /devices/{id}/messages/deviceBound).
    struct HubDevice {
        std::string hub, registration_id, method;
        std::string key;         // SAS methods: the raw device key (TPM: the key of its last challenge)
        std::string thumbprint;  // X.509
        std::string status = "enabled";
    };
    struct TpmState {
        std::string hmac_key;
        std::string blob;
        std::string srk;  // the storage root key the challenge was made for (raw TPM2B_PUBLIC)
        int64_t expires_ms = 0;  // wall clock, ms since the epoch
    };

    std::chrono::system_clock::time_point now() const;
    // Stored state. Callers hold mutex_; changes belong to the caller's transaction.
    std::shared_ptr<const Enrollment> find_enrollment(const std::string& id, bool group);
    std::vector<std::shared_ptr<const Enrollment>> groups_of_type(const std::string& type);
    void store_enrollment(const Enrollment& e);
    std::optional<TpmState> find_tpm(const std::string& registration_id, const char* stage);
    void store_tpm(const std::string& registration_id, const char* stage, const TpmState& state);
    void drop_tpm(const std::string& registration_id, const char* stage);
    std::optional<nlohmann::json> find_registration(const std::string& registration_id);
    void store_registration(const std::string& registration_id, const nlohmann::json& state);
    std::optional<HubDevice> find_hub_device(const std::string& device_id);
    Enrollment parse_enrollment(const nlohmann::json& document, bool group) const;
    http::HttpResponse handle_device(const http::HttpRequest& request, const std::vector<std::string>& parts);
    http::HttpResponse handle_admin(const http::HttpRequest& request, const std::vector<std::string>& parts);
    http::HttpResponse handle_hub(const http::HttpRequest& request, const std::vector<std::string>& parts);
    // Either the authenticated enrollment or a finished error reply.
    std::variant<Authenticated, http::HttpResponse> authenticate(const http::HttpRequest& request, const std::string& registration_id,
                                                           const nlohmann::json* body);
    std::variant<Authenticated, http::HttpResponse> authenticate_tpm(const http::HttpRequest& request, const std::string& registration_id,
                                                               const nlohmann::json& tpm);
    void store_operation(const Operation& op);
    nlohmann::json assign(const Authenticated& auth, const std::string& registration_id, const nlohmann::json& body);
    void log(const http::HttpRequest& request, const std::string& registration_id, int status, const std::string& note);
    http::HttpResponse error(int status, int code, const std::string& message) const;

    DpsServiceConfig config_;
    std::string id_scope_;
    std::vector<std::string> hubs_;
    mutable std::mutex mutex_;
    // One connection, used under mutex_ only (the wrapper has no lock of its own). Tables:
    // enrollment, operation, registration, tpm_challenge (pending and answered), hub_device.
    mutable store::Database db_;
    std::deque<nlohmann::json> log_;
    int fault_status_ = 0, fault_count_ = 0, fault_retry_after_ = 1;
    TpmChallengeMaker tpm_maker_;
};

}  // namespace cairn::provisioning
