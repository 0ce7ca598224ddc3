#include "provisioning/dps_client.hpp"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <variant>

#include "common/error.hpp"
#include "common/text.hpp"
#include "common/encoding.hpp"
#include "provisioning/openssl.hpp"
#include "provisioning/sas.hpp"

namespace cairn::provisioning {

using nlohmann::json;

namespace {

using http::HttpsReply;
using http::HttpsRequest;
using http::TransportError;

std::string service_message(const HttpsReply& reply, int64_t* code = nullptr) { return dps_error_message(reply.body, code); }

// A string member of a reply object: "" when absent or null; another type is an Error (not
// nlohmann's type_error, which nothing expects).
std::string reply_string(const json& object, const char* key, const std::string& what) {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return "";
    if (!it->is_string()) fail("provisioning: " + what + ": \"" + key + "\" in the reply is not a string");
    return it->get<std::string>();
}

class Session {
public:
    Session(const DpsClientConfig& config, std::string registration_id)
        : config_(config), registration_id_(std::move(registration_id)), curl_(), rng_(std::random_device{}()) {
        base_ = trim_end(config_.global_endpoint, "/");
        if (base_.rfind("https://", 0) != 0) fail("provisioning: global_endpoint '" + config_.global_endpoint + "' is not an https:// URL");
        resource_ = sas_resource(config_.id_scope, registration_id_);
        if (config_.method == AttestationMethod::SymmetricKey) {
            std::string key = config_.symmetric_key_is_group ? derive_device_key(config_.symmetric_key, registration_id_) : config_.symmetric_key;
            raw_key_ = base64_decode(key, "provisioning: symmetric key");
            if (raw_key_.empty()) fail("provisioning: the symmetric key is empty");
        }
    }

    std::string url(const std::string& tail) const {
        return base_ + "/" + url_encode(config_.id_scope) + "/registrations/" + url_encode(registration_id_) + tail +
               "?api-version=" + url_encode(config_.api_version);
    }

    // The Authorization value for this request (empty for X.509 and before the TPM challenge).
    std::string authorization() {
        const int64_t expiry = unix_seconds(std::chrono::system_clock::now()) + clock_offset_s_ + config_.token_lifetime_s;
        if (config_.method == AttestationMethod::SymmetricKey) return make_sas_token(resource_, expiry, key_signer(raw_key_));
        if (config_.method == AttestationMethod::Tpm && tpm_key_imported_)
            return make_sas_token(resource_, expiry, [this](std::string_view data) { return config_.tpm->sign(data); });
        return "";
    }

    void note(const std::string& line) {
        if (config_.log) config_.log(line);
    }

    void sleep_ms(int64_t ms) {
        if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }

    int64_t backoff_ms(int attempt) {
        const int64_t ceiling = std::min<int64_t>(config_.retry.max_delay_ms, int64_t(config_.retry.base_delay_ms) << std::min(attempt, 20));
        std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(ceiling / 2, 0));
        return ceiling - ceiling / 2 + jitter(rng_);
    }

    // Learns the offset between the service's clock and ours from a Date header.
    void learn_clock(const HttpsReply& reply) {
        const std::string date = reply.header("date");
        if (date.empty()) return;
        const int64_t t = http::parse_http_date(date);
        if (t < 0) return;
        clock_offset_s_ = int64_t(t) - unix_seconds(std::chrono::system_clock::now());
    }

    // Sends with retries on network errors, 429 and 5xx (honouring Retry-After), and once more
    // with a resynchronised clock when a 401 says the token expired.
    HttpsReply send(const std::string& method, const std::string& url, const std::string& body, bool with_auth) {
        bool resynced = false;
        for (int attempt = 0;; ++attempt) {
            HttpsRequest request;
            request.user_agent = "cairn-provisiond";
            request.method = method;
            request.url = url;
            request.body = body;
            request.trust_bundle = config_.trust_bundle;
            request.connect_timeout_ms = config_.connect_timeout_ms;
            request.timeout_ms = config_.timeout_ms;
            request.headers = {"Accept: application/json", "Content-Type: application/json; charset=utf-8", "Expect:"};
            if (config_.method == AttestationMethod::X509) {
                request.client_certificate = config_.identity_cert;
                request.client_key = config_.identity_pk;
            }
            if (with_auth) {
                std::string auth = authorization();
                if (!auth.empty()) request.headers.push_back("Authorization: " + auth);
            }
            ++requests_;
            auto outcome = curl_.exchange(request);
            const bool last = attempt + 1 >= config_.retry.max_attempts;
            if (auto* transport = std::get_if<TransportError>(&outcome)) {
                if (!transport->retryable) fail("provisioning: " + transport->message);
                if (last)
                    fail("provisioning: cannot reach the provisioning service after " + std::to_string(attempt + 1) +
                         " attempts: " + transport->message);
                int64_t delay = backoff_ms(attempt);
                note("network error (" + transport->message + "), retrying in " + std::to_string(delay) + " ms");
                sleep_ms(delay);
                continue;
            }
            HttpsReply reply = std::move(std::get<HttpsReply>(outcome));
            learn_clock(reply);
            if (reply.status == 429 || reply.status >= 500) {
                if (last)
                    fail("provisioning: " + method + " " + url + ": HTTP " + std::to_string(reply.status) + " after " +
                         std::to_string(attempt + 1) + " attempts: " + service_message(reply));
                int64_t delay = backoff_ms(attempt);
                const std::string retry_after = reply.header("retry-after");
                if (!retry_after.empty() && retry_after.find_first_not_of("0123456789") == std::string::npos && retry_after.size() < 6)
                    delay = std::max<int64_t>(delay, std::min<int64_t>(std::stoll(retry_after), int64_t(config_.retry.max_retry_after_s)) * 1000);
                note("HTTP " + std::to_string(reply.status) + " from the provisioning service, retrying in " + std::to_string(delay) + " ms");
                sleep_ms(delay);
                continue;
            }
            if (reply.status == 401 && with_auth && !resynced && service_message(reply).find("expired") != std::string::npos) {
                resynced = true;
                note("the service says the token expired: the clocks differ by " + std::to_string(clock_offset_s_) + " s; retrying");
                continue;
            }
            return reply;
        }
    }

    [[noreturn]] void refuse(const std::string& what, const HttpsReply& reply) {
        int64_t code = 0;
        std::string message = service_message(reply, &code);
        fail("provisioning: " + what + " of '" + registration_id_ + "' at " + base_ + ": HTTP " + std::to_string(reply.status) +
             (code ? " (" + std::to_string(code) + ")" : "") + ": " + message);
    }

    static json parse(const HttpsReply& reply, const std::string& what) { return parse_dps_reply(reply.body, what); }

    RegistrationResult run() {
        json body = {{"registrationId", registration_id_}};
        if (config_.method == AttestationMethod::Tpm)
            body["tpm"] = {{"endorsementKey", base64_encode(config_.tpm->endorsement_key())},
                           {"storageRootKey", base64_encode(config_.tpm->storage_root_key())}};
        if (config_.payload) body["payload"] = *config_.payload;
        const std::string text = body.dump();

        HttpsReply reply;
        if (config_.method == AttestationMethod::Tpm) {
            reply = send("PUT", url("/register"), text, false);
            if (reply.status != 401) refuse("TPM challenge (expected HTTP 401)", reply);
            json challenge = parse(reply, "TPM challenge");
            if (!challenge.contains("authenticationKey") || !challenge["authenticationKey"].is_string())
                refuse("TPM challenge (no authenticationKey)", reply);
            config_.tpm->import_authentication_key(base64_decode(challenge["authenticationKey"].get<std::string>(), "authenticationKey"));
            tpm_key_imported_ = true;
        }
        reply = send("PUT", url("/register"), text, true);
        if (reply.status != 200 && reply.status != 202) refuse("registration", reply);
        json status = parse(reply, "registration");
        std::string operation = reply_string(status, "operationId", "registration");
        for (int poll = 0; reply_string(status, "status", "registration") == "assigning" || (reply.status == 202 && !status.contains("registrationState"));
             ++poll) {
            if (operation.empty()) fail("provisioning: registration of '" + registration_id_ + "': the 202 reply has no operationId");
            if (poll >= config_.retry.max_polls)
                fail("provisioning: registration of '" + registration_id_ + "' still assigning after " + std::to_string(poll) + " polls");
            // Retry-After when the service gives one; "0" (a fast lab service) still backs off
            // gently from the second poll on (50 ms doubling up to 1 s); none: 1 s as the C SDK.
            int64_t wait_ms = 1000;
            const std::string retry_after = reply.header("retry-after");
            if (!retry_after.empty() && retry_after.find_first_not_of("0123456789") == std::string::npos && retry_after.size() < 6)
                wait_ms = std::min<int64_t>(std::stoll(retry_after), int64_t(config_.retry.max_retry_after_s)) * 1000;
            if (wait_ms == 0 && poll > 0) wait_ms = std::min<int64_t>(1000, int64_t(50) << std::min(poll - 1, 5));
            sleep_ms(wait_ms);
            reply = send("GET", url("/operations/" + url_encode(operation)), "", true);
            if (reply.status != 200 && reply.status != 202) refuse("operation status", reply);
            status = parse(reply, "operation status");
        }
        RegistrationResult result = registration_result(status, registration_id_, operation);
        result.requests = requests_;
        return result;
    }

private:
    const DpsClientConfig& config_;
    std::string registration_id_;
    std::string base_;
    std::string resource_;
    std::string raw_key_;
    http::Client curl_;
    std::mt19937_64 rng_;
    int64_t clock_offset_s_ = 0;
    bool tpm_key_imported_ = false;
    int requests_ = 0;
};

}  // namespace

std::string dps_error_message(const std::string& reply_body, int64_t* code) {
    try {
        json body = json::parse(reply_body);
        if (code) {
            if (body.contains("errorCode") && body["errorCode"].is_number_integer()) *code = body["errorCode"].get<int64_t>();
            else if (body.contains("code") && body["code"].is_number_integer()) *code = body["code"].get<int64_t>();
        }
        for (const char* key : {"message", "errorMessage", "Message"})
            if (body.contains(key) && body[key].is_string()) return body[key].get<std::string>();
    } catch (const json::exception&) {
    }
    std::string text = reply_body.substr(0, 200);
    return text.empty() ? "(no body)" : text;
}

json parse_dps_reply(const std::string& reply_body, const std::string& what) {
    try {
        json body = json::parse(reply_body);
        if (!body.is_object()) fail("provisioning: " + what + ": the reply is not a JSON object");
        return body;
    } catch (const json::exception& e) {
        fail("provisioning: " + what + ": the reply is not valid JSON (" + std::string(e.what()) + ")");
    }
}

RegistrationResult registration_result(const json& status, const std::string& registration_id, const std::string& operation) {
    RegistrationResult result;
    result.registration_id = registration_id;
    const std::string what = "registration of '" + registration_id + "'";
    result.operation_id = reply_string(status, "operationId", what);
    if (result.operation_id.empty()) result.operation_id = operation;
    result.status = reply_string(status, "status", what);
    const json state = status.value("registrationState", json::object());
    result.registration_state = state;
    if (state.is_object()) {
        const std::string in_state = what + ": registrationState";
        result.substatus = reply_string(state, "substatus", in_state);
        result.assigned_hub = reply_string(state, "assignedHub", in_state);
        result.device_id = reply_string(state, "deviceId", in_state);
        if (state.contains("errorCode") && state["errorCode"].is_number_integer()) result.error_code = state["errorCode"].get<int64_t>();
        result.error_message = reply_string(state, "errorMessage", in_state);
        if (state.contains("payload")) result.payload = state["payload"];
        if (result.status.empty()) result.status = reply_string(state, "status", in_state);
    }
    if (result.status == "assigned" && (result.assigned_hub.empty() || result.device_id.empty()))
        fail("provisioning: registration of '" + registration_id + "' is 'assigned' but names no hub or device ID");
    return result;
}

std::string tpm_registration_id(const std::string& endorsement_key) {
    return base32_lower_unpadded(sha256(endorsement_key));
}

std::string resolve_registration_id(const DpsClientConfig& config) {
    if (!config.registration_id.empty()) return config.registration_id;
    switch (config.method) {
        case AttestationMethod::X509: {
            if (config.identity_cert.empty()) fail("provisioning: x509 attestation needs identity_cert");
            auto chain = load_pem_certificates(config.identity_cert);
            std::string cn = subject_common_name(chain.front().get());
            if (cn.empty()) fail(config.identity_cert.string() + ": the certificate has no CN to use as the registration ID");
            return cn;
        }
        case AttestationMethod::Tpm:
            if (!config.tpm) fail("provisioning: tpm attestation without a TPM");
            return tpm_registration_id(config.tpm->endorsement_key());
        case AttestationMethod::SymmetricKey:
            break;
    }
    fail("provisioning: registration_id is required for symmetric_key attestation");
}

RegistrationResult register_device(const DpsClientConfig& config) {
    if (config.id_scope.empty()) fail("provisioning: id_scope is empty");
    if (config.method == AttestationMethod::Tpm && !config.tpm) fail("provisioning: tpm attestation without a TPM");
    if (config.method == AttestationMethod::X509 && (config.identity_cert.empty() || config.identity_pk.empty()))
        fail("provisioning: x509 attestation needs identity_cert and identity_pk");
    if (config.method == AttestationMethod::SymmetricKey && config.symmetric_key.empty()) fail("provisioning: symmetric_key attestation without a key");
    Session session(config, resolve_registration_id(config));
    return session.run();
}

}  // namespace cairn::provisioning
