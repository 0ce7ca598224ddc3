#include "provisioning/agent.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/text.hpp"
#include "provisioning/dps_client.hpp"
#include "common/encoding.hpp"
#include "provisioning/sas.hpp"
#include "provisioning/tpm.hpp"

namespace cairn::provisioning {

using nlohmann::json;

json Identity::to_json() const {
    return {{"hub_name", hub_name},        {"device_id", device_id},   {"registration_id", registration_id},
            {"method", method},            {"id_scope", id_scope},     {"global_endpoint", global_endpoint},
            {"provisioned_at", provisioned_at}, {"substatus", substatus}, {"payload", payload}};
}

IdentityStore::IdentityStore(std::filesystem::path state_dir) : dir_(std::move(state_dir)) {}

IdentityStore::Loaded IdentityStore::read(const ProvisioningConfig* config) const {
    const auto file = identity_file();
    if (!std::filesystem::exists(file)) return {std::nullopt, "no stored identity"};
    json doc;
    try {
        doc = json::parse(read_file(file));
    } catch (const json::exception&) {
        return {std::nullopt, file.string() + " is not valid JSON"};
    } catch (const Error& e) {
        return {std::nullopt, e.what()};
    }
    Identity id;
    try {
        id.hub_name = doc.at("hub_name").get<std::string>();
        id.device_id = doc.at("device_id").get<std::string>();
        id.registration_id = doc.value("registration_id", "");
        id.method = doc.value("method", "");
        id.id_scope = doc.value("id_scope", "");
        id.global_endpoint = doc.value("global_endpoint", "");
        id.provisioned_at = doc.value("provisioned_at", "");
        id.substatus = doc.value("substatus", "");
        id.payload = doc.value("payload", json());
    } catch (const json::exception&) {
        return {std::nullopt, file.string() + " lacks hub_name or device_id"};
    }
    if (id.hub_name.empty() || id.device_id.empty()) return {std::nullopt, file.string() + " lacks hub_name or device_id"};
    if (config) {
        if (id.method != method_name(config->method)) return {std::nullopt, "the attestation method changed (stored: " + id.method + ")"};
        if (to_lower(id.id_scope) != to_lower(config->id_scope)) return {std::nullopt, "the ID scope changed (stored: " + id.id_scope + ")"};
        if (id.global_endpoint != config->global_endpoint) return {std::nullopt, "the endpoint changed (stored: " + id.global_endpoint + ")"};
        if (!config->registration_id.empty() && id.registration_id != config->registration_id)
            return {std::nullopt, "the registration ID changed (stored: " + id.registration_id + ")"};
    }
    return {id, ""};
}

void IdentityStore::save(const Identity& identity) {
    std::filesystem::create_directories(dir_);
    write_file_atomic(identity_file(), identity.to_json().dump(2) + "\n", 0600);
}

void IdentityStore::record_attempt(const json& attempt) {
    std::filesystem::create_directories(dir_);
    // Messages may quote service replies that are not UTF-8: those bytes become U+FFFD.
    write_file_atomic(dir_ / "last_attempt.json", attempt.dump(2, ' ', false, json::error_handler_t::replace) + "\n", 0600);
}

json IdentityStore::last_attempt() const {
    try {
        return json::parse(read_file(dir_ / "last_attempt.json"));
    } catch (...) {
        return nullptr;
    }
}

std::string trigger_name(Trigger trigger) {
    switch (trigger) {
        case Trigger::Startup: return "startup";
        case Trigger::Api: return "reprovision";
        case Trigger::HubError: return "hub-error";
    }
    return "?";
}

HubAnswer ask_hub(const ProvisioningConfig& config, const Identity& identity) {
    HubAnswer answer;
    try {
        const std::string base = trim_end(config.hub_endpoint.empty() ? "https://" + identity.hub_name : config.hub_endpoint, "/");
        http::HttpsRequest r;
        r.url = base + "/devices/" + url_encode(identity.device_id) + "/messages/deviceBound?api-version=2020-09-30";
        r.trust_bundle = config.trust_bundle;
        r.connect_timeout_ms = 10000;
        r.timeout_ms = 20000;
        const std::string resource = identity.hub_name + "/devices/" + identity.device_id;
        const int64_t expiry = unix_seconds(std::chrono::system_clock::now()) + 3600;
        if (config.method == AttestationMethod::SymmetricKey) {
            r.headers.push_back("Authorization: " + make_sas_token(resource, expiry, key_signer(base64_decode(config.symmetric_key, "symmetric key")), ""));
        } else if (config.method == AttestationMethod::Tpm) {
            Tpm tpm(config.tpm);
            r.headers.push_back("Authorization: " + make_sas_token(resource, expiry, [&tpm](std::string_view data) { return tpm.sign(data); }, ""));
        } else {
            r.client_certificate = config.identity_cert;
            r.client_key = config.identity_pk;
        }
        http::HttpsReply reply = http::https_request(r);
        std::string body = reply.body.substr(0, 200);
        try {
            body = json::parse(reply.body).value("message", body);
        } catch (...) {
        }
        answer.detail = "HTTP " + std::to_string(reply.status) + (body.empty() ? "" : ": " + body);
        if (reply.status >= 200 && reply.status < 300) answer.kind = HubAnswer::Accepted;
        else if (reply.status == 401 || reply.status == 403 || reply.status == 404) answer.kind = HubAnswer::Refused;
    } catch (const std::exception& e) {
        answer.detail = e.what();
    }
    return answer;
}

ProvisionOutcome provision(const ProvisioningConfig& config, const std::filesystem::path& state_dir, Trigger trigger,
                           const std::function<void(const std::string&)>& log) {
    if (config.source != "dps") fail("provisioning: source is '" + config.source + "': nothing to provision");
    std::filesystem::create_directories(state_dir);
    ::chmod(state_dir.c_str(), 0700);
    UniqueFd lock = open_file(state_dir / ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (::flock(lock.get(), LOCK_EX) != 0) fail_errno("locking " + (state_dir / ".lock").string());

    IdentityStore store(state_dir);
    IdentityStore::Loaded loaded = store.read(&config);
    ProvisionOutcome outcome;
    bool need = true;
    switch (trigger) {
        case Trigger::Startup:
            if (config.mode == ReprovisioningMode::AlwaysOnStartup) {
                outcome.reason = "auto_reprovisioning_mode is AlwaysOnStartup";
            } else if (loaded.identity) {
                need = false, outcome.reason = "stored identity is valid";
                if (config.mode == ReprovisioningMode::Dynamic && config.hub_check) {
                    HubAnswer hub = ask_hub(config, *loaded.identity);
                    if (hub.kind == HubAnswer::Refused) {
                        need = true;
                        outcome.reason = "the hub refused the device (" + hub.detail + "; Dynamic mode)";
                    } else if (hub.kind == HubAnswer::Accepted) {
                        outcome.reason = "stored identity is valid (the hub accepts it)";
                    } else {
                        outcome.reason = "stored identity is valid (the hub could not be asked: " + hub.detail + ")";
                    }
                }
            } else {
                outcome.reason = loaded.problem;
            }
            break;
        case Trigger::Api:
            outcome.reason = "reprovisioning was asked for";
            break;
        case Trigger::HubError:
            if (config.mode == ReprovisioningMode::Dynamic) outcome.reason = "the hub refused the device (Dynamic mode)";
            else if (loaded.identity) need = false, outcome.reason = "the hub refused the device, but " + mode_name(config.mode) + " keeps the identity";
            else outcome.reason = loaded.problem;
            break;
    }
    json attempt = {{"time", utc_timestamp(std::chrono::system_clock::now())}, {"trigger", trigger_name(trigger)}, {"reason", outcome.reason}};
    if (!need) {
        outcome.identity = *loaded.identity;
        attempt["outcome"] = "used stored identity";
        store.record_attempt(attempt);
        return outcome;
    }
    if (log) log("registering with " + config.global_endpoint + " (" + outcome.reason + ")");
    try {
        DpsClientConfig client = client_config(config);
        client.log = log;
        std::unique_ptr<Tpm> tpm;
        if (config.method == AttestationMethod::Tpm) {
            tpm = std::make_unique<Tpm>(config.tpm);
            client.tpm = tpm.get();
        }
        RegistrationResult result = register_device(client);
        outcome.requests = result.requests;
        if (!result.assigned())
            fail("provisioning: DPS answered '" + result.status + "' for registration '" + result.registration_id + "'" +
                 (result.error_message.empty() ? "" : ": " + result.error_message) +
                 (result.error_code ? " (" + std::to_string(result.error_code) + ")" : "") +
                 (loaded.identity ? "; the stored identity is kept" : ""));
        Identity& id = outcome.identity;
        id.hub_name = result.assigned_hub;
        id.device_id = result.device_id;
        id.registration_id = result.registration_id;
        id.method = method_name(config.method);
        id.id_scope = config.id_scope;
        id.global_endpoint = config.global_endpoint;
        id.provisioned_at = utc_timestamp(std::chrono::system_clock::now());
        id.substatus = result.substatus;
        id.payload = result.payload;
        store.save(id);
        outcome.registered = true;
        attempt["outcome"] = "registered";
        attempt["requests"] = result.requests;
        store.record_attempt(attempt);
        return outcome;
    } catch (const Error& e) {
        attempt["outcome"] = "failed";
        attempt["error"] = e.what();
        store.record_attempt(attempt);
        throw;
    }
}

}  // namespace cairn::provisioning
