// The provisioning agent: decides whether to register (by trigger and auto_reprovisioning_mode),
// registers through DPS, and keeps the assigned identity atomically under the state directory
// (device_info.json; last_attempt.json for status). A failed registration never loses the
// identity stored before it.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "provisioning/config.hpp"

namespace cairn::provisioning {

struct Identity {
    std::string hub_name;
    std::string device_id;
    std::string registration_id;
    std::string method;           // tpm | x509 | symmetric_key
    std::string id_scope;
    std::string global_endpoint;
    std::string provisioned_at;   // UTC timestamp
    std::string substatus;
    nlohmann::json payload;

    nlohmann::json to_json() const;
};

class IdentityStore {
public:
    explicit IdentityStore(std::filesystem::path state_dir);

    struct Loaded {
        std::optional<Identity> identity;
        std::string problem;  // why there is none: "no stored identity", "... is not valid JSON", ...
    };
    // The stored identity if it is usable for `config` (same method, scope and endpoint).
    Loaded read(const ProvisioningConfig* config = nullptr) const;
    void save(const Identity& identity);
    void record_attempt(const nlohmann::json& attempt);
    nlohmann::json last_attempt() const;  // null when none
    const std::filesystem::path& dir() const { return dir_; }
    std::filesystem::path identity_file() const { return dir_ / "device_info.json"; }

private:
    std::filesystem::path dir_;
};

// What the hub says of a stored identity (the agent asks at start in Dynamic mode): GET
// <hub>/devices/{id}/messages/deviceBound with the device's own credential (a SAS token signed by
// the device key or inside the TPM, or the X.509 client certificate), one attempt.
struct HubAnswer {
    enum Kind { Accepted, Refused, Unknown } kind = Unknown;
    std::string detail;  // "HTTP 403: ...", or why it could not be asked
};
HubAnswer ask_hub(const ProvisioningConfig& config, const Identity& identity);

enum class Trigger { Startup, Api, HubError };
std::string trigger_name(Trigger trigger);

struct ProvisionOutcome {
    Identity identity;
    bool registered = false;  // false: the stored identity was used
    std::string reason;       // why it registered or not
    int requests = 0;
};

// Runs one provisioning decision under a lock on the state directory. Throws Error (and records
// it in last_attempt.json) when registration was needed and failed, or DPS did not assign.
ProvisionOutcome provision(const ProvisioningConfig& config, const std::filesystem::path& state_dir, Trigger trigger,
                           const std::function<void(const std::string&)>& log = {});

}  // namespace cairn::provisioning
