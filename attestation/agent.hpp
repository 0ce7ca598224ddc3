// The device side of boot attestation (docs/attestation.md): its configuration
// (/etc/cairn/attestation.toml), one round with the verifier (nonce, binding the AK when the
// verifier does not hold it, quote, evidence), and the status file the round leaves in
// /var/lib/cairn/attestation/status.json for `cairnctl attest status`.
//
// A round never throws for what goes wrong between the device and the verifier: an unreachable
// verifier, a 5xx or non-JSON reply, a refusal, a TPM failure all give a status record with
// healthStatus "Unknown" and errorMessage saying why (the URL and the reason), so that the status
// file always tells the truth about the last attempt. The last Healthy record is kept beside it.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpm/tpm.hpp"

namespace cairn::attestation {

inline constexpr const char* default_agent_config = "/etc/cairn/attestation.toml";
inline constexpr const char* default_event_log = "/sys/kernel/security/tpm0/binary_bios_measurements";
inline constexpr const char* default_agent_state_dir = "/var/lib/cairn/attestation";

struct AgentConfig {
    std::filesystem::path file;
    std::string verifier_url;            // verifier_url: "https://host[:port][/prefix]", no trailing '/'
    std::filesystem::path trust_bundle;  // trust_bundle: PEM CA file; empty: the system's store
    // device_id: the ID the device is enrolled under at the verifier. Required: the DPS rule for
    // TPM registration IDs lives in provisioning, which the agent does not link; use the same ID
    // (`cairnctl provision tpm-info` prints it) so that both services know the device by one name.
    std::string device_id;
    std::chrono::seconds interval{8 * 3600};  // interval_sec (60 .. 7 days)
    tpm::Options tpm;                         // tcti, [hierarchy_authorization] endorsement/owner
    std::filesystem::path event_log = default_event_log;  // event_log
    // reference / reference_signature: the signed reference document. Empty: EFI/BOOT/
    // reference.json(.sig) on the booted slot's ESP (cairn.slot= on /proc/cmdline; the partition
    // labelled esp_<slot>), mounted read-only under /run/cairn/attestation when it is read.
    std::filesystem::path reference, reference_signature;
    std::filesystem::path state_dir = default_agent_state_dir;  // state_dir
    int timeout_sec = 30;                     // timeout_sec: each HTTP exchange (connect: a third of it)
    int retries = 3;                          // retries: more attempts on transport errors and 5xx
    std::chrono::milliseconds retry_delay{1000};  // first backoff, doubled each time (not in the file)
    std::filesystem::path cmdline = "/proc/cmdline";  // not in the file (tests)
};

// Parses TOML text (`file` names it in messages) / a file. Throws Error "<file>:<line>: <key>: <reason>".
AgentConfig parse_agent_config(const std::string& text, const std::filesystem::path& file);
AgentConfig load_agent_config(const std::filesystem::path& file);

// What the agent sends as evidence (docs/attestation.md, "A round"), raw bytes.
struct AgentEvidence {
    std::string nonce;
    std::string ak_public;   // TPM2B_PUBLIC
    std::string quote;       // TPMS_ATTEST
    std::string signature;   // TPMT_SIGNATURE
    std::string event_log;
    std::string reference, reference_signature;
    nlohmann::json to_json() const;  // the evidence request's body
};

// The reference document and its signature, from the config's paths or the booted slot's ESP.
struct SignedReference {
    std::string document, signature;
};
SignedReference read_signed_reference(const AgentConfig& config);

// The event log's bytes (mounting securityfs first when the path is the default and missing).
std::string read_event_log(const AgentConfig& config);

// Quotes `pcrs` with `nonce` with the AK and gathers the rest of the evidence.
AgentEvidence collect_evidence(tpm::Tpm& tpm, const AgentConfig& config, const std::string& nonce, const std::vector<unsigned>& pcrs);

// A record of health Unknown made on the device (no verdict from the verifier): errorMessage
// `why`, provisioningState "Failed", timestamp now.
nlohmann::json unknown_record(const AgentConfig& config, const std::string& why);

// One round with the verifier, without the status file or the lock: the verifier's status record,
// or unknown_record saying what failed. `log` gets one line per step.
nlohmann::json attest_once(const AgentConfig& config, const std::function<void(const std::string&)>& log = {});

// The status file: {"record", "lastGood" (or null), "lastAttempt": {"time", "outcome"}}.
std::filesystem::path status_file(const AgentConfig& config);
nlohmann::json read_status(const std::filesystem::path& state_dir);  // null when there is none
// The round that the daemon and `cairnctl attest now` run: under an exclusive lock on
// <state_dir>/.lock (two rounds never overlap), attest_once, then the status file written
// atomically (lastGood kept unless the new record is Healthy). Returns the new record.
nlohmann::json run_round(const AgentConfig& config, const std::function<void(const std::string&)>& log = {});

// For `cairnctl attest status --json`: the record plus "age" (seconds since its timestamp),
// "stale" (true when it is older than `interval` and its tenth of jitter, or its age is unknown:
// the agent has not reported for longer than it should, itself a warning sign) and "lastGood"
// (itself with its "age"), at `now`.
nlohmann::json status_view(const nlohmann::json& status, std::chrono::system_clock::time_point now,
                           std::chrono::seconds interval = AgentConfig{}.interval);

}  // namespace cairn::attestation
