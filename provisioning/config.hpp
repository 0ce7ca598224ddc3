// /etc/cairn/config.toml, the provisioning part: the IoT Identity Service's `[provisioning]`
// schema (source, global_endpoint, id_scope, payload, [provisioning.attestation]), IoT Edge's
// top-level trust_bundle_cert and auto_reprovisioning_mode, and `[tpm]` (tcti, auth_key_index,
// [tpm.hierarchy_authorization]). Unknown keys, wrong types and missing files are errors naming
// the key (file:line: key: reason).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "provisioning/dps_client.hpp"
#include "provisioning/tpm.hpp"

namespace cairn::provisioning {

constexpr const char* default_config_path = "/etc/cairn/config.toml";
constexpr const char* default_state_dir = "/var/lib/cairn/provisioning";

enum class ReprovisioningMode { Dynamic, AlwaysOnStartup, OnErrorOnly };
std::string mode_name(ReprovisioningMode mode);
std::string method_name(AttestationMethod method);

struct ProvisioningConfig {
    std::filesystem::path file;
    std::string source;                       // "dps" (or "none": nothing to do)
    std::string global_endpoint = "https://global.azure-devices-provisioning.net/";
    std::string id_scope;
    std::optional<nlohmann::json> payload;    // read from payload.uri
    ReprovisioningMode mode = ReprovisioningMode::Dynamic;
    AttestationMethod method = AttestationMethod::Tpm;
    std::string registration_id;
    std::string symmetric_key;                // base64
    std::filesystem::path identity_cert, identity_pk;
    std::filesystem::path trust_bundle;       // trust_bundle_cert
    TpmOptions tpm;
    int cloud_timeout_sec = 70;
    RetryPolicy retry;                        // not in the file: defaults (tests shorten it)
    // [cairn.hub] (Cairn's own table): in Dynamic mode the agent asks the hub at start whether it
    // still accepts the stored identity; a refusal (device disabled, credential bad) re-registers.
    bool hub_check = true;                    // check = true | false
    std::string hub_endpoint;                 // endpoint = "https://..."; empty: https://<assigned hub>/
};

// Parses TOML text (file names the source in messages) / a file. Throws Error "<file>:<line>: <key>: <reason>".
ProvisioningConfig parse_config(const std::string& text, const std::filesystem::path& file);
ProvisioningConfig load_config(const std::filesystem::path& file);

// "file:///a/b" -> /a/b; a pkcs11: URI or another scheme is an error naming `key`.
std::filesystem::path file_uri_path(const std::string& uri, const std::string& key);

// The client configuration for a config (the TPM pointer filled in by the caller for tpm).
DpsClientConfig client_config(const ProvisioningConfig& config);

}  // namespace cairn::provisioning
