#include "attestation/verifier_service.hpp"

#include <openssl/crypto.h>

#include <algorithm>

#include "common/args.hpp"
#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/openssl.hpp"
#include "common/versions.hpp"
#include "tpm/credential.hpp"
#include "updater/signature.hpp"

namespace cairn::attestation {

using nlohmann::json;

namespace {

// Bounds on what a device may send (decoded bytes). TPM structures are small; an event log of a
// real boot is tens of KiB; the whole body is bounded by the HTTP server (1 MiB).
constexpr size_t max_tpm_public = 1024;
constexpr size_t max_quote = 2048;
constexpr size_t max_signature = 1024;
constexpr size_t max_event_log = 640 * 1024;
constexpr size_t max_reference = 128 * 1024;
constexpr size_t max_reference_signature = 32 * 1024;
constexpr size_t nonce_bytes = 32;
constexpr size_t secret_bytes = 32;
constexpr int64_t default_stale_seconds = 28800;
constexpr size_t default_history = 10;

// A reply of the contract's error shape, thrown from deep in a handler and caught in handle().
struct ApiError {
    int status;
    std::string code, message;
};

[[noreturn]] void refuse(int status, const std::string& code, const std::string& message) { throw ApiError{status, code, message}; }

http::HttpResponse error_reply(int status, const std::string& code, const std::string& message) {
    return http::HttpResponse::json(status, {{"error", code}, {"message", message}});
}

json parse_body(const http::HttpRequest& request) {
    json body;
    try {
        body = json::parse(request.body);
    } catch (const json::exception& e) {
        refuse(400, "bad-request", std::string("request body is not valid JSON: ") + e.what());
    }
    if (!body.is_object()) refuse(400, "bad-request", "request body must be a JSON object");
    return body;
}

// A base64 field of `body`, decoded; 400 when missing, not a string, too large or not base64.
std::string b64_field(const json& body, const char* name, size_t max_bytes) {
    auto it = body.find(name);
    if (it == body.end()) refuse(400, "bad-request", std::string("field '") + name + "' is missing");
    if (!it->is_string()) refuse(400, "bad-request", std::string("field '") + name + "' must be a base64 string");
    const std::string& text = it->get_ref<const std::string&>();
    if (text.size() > (max_bytes + 2) / 3 * 4 + 64)  // a little room for whitespace, which base64_decode skips
        refuse(400, "field-too-large", std::string("field '") + name + "' is larger than " + std::to_string(max_bytes) + " bytes");
    std::string bytes;
    try {
        bytes = base64_decode(text, std::string("field '") + name + "'");
    } catch (const Error& e) {
        refuse(400, "bad-request", e.what());
    }
    if (bytes.size() > max_bytes)
        refuse(400, "field-too-large", std::string("field '") + name + "' is larger than " + std::to_string(max_bytes) + " bytes");
    if (bytes.empty()) refuse(400, "bad-request", std::string("field '") + name + "' is empty");
    return bytes;
}

std::string hex(std::string_view s) { return to_hex({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }

std::string digest_bytes(std::string_view data) {
    const Digest d = sha256(data);
    return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

bool same_secret(std::string_view a_hash, std::string_view b_hash) {
    return a_hash.size() == b_hash.size() && CRYPTO_memcmp(a_hash.data(), b_hash.data(), a_hash.size()) == 0;
}

AttestationKey parse_ak_or_refuse(const std::string& ak_public) {
    try {
        return parse_ak_public(ak_public, "attestationKey");
    } catch (const Error& e) {
        refuse(400, "ak-invalid", e.what());
    }
}

int64_t query_number(const http::HttpRequest& request, const std::string& key, int64_t dflt, int64_t min, int64_t max) {
    auto it = request.query.find(key);
    if (it == request.query.end()) return dflt;
    try {
        return parse_number(it->second, key, min, max);
    } catch (const Error& e) {
        refuse(400, "bad-request", e.what());
    }
}

json record_json(const std::string& device_id, const AttestationStatus& st, const std::string& timestamp, const std::string& image_version) {
    json failed = json::array();
    for (const auto& f : st.failed) failed.push_back({{"code", check_code_name(f.code)}, {"reason", f.reason}});
    return {{"deviceId", device_id},
            {"attestSecureBootEnabled", secure_boot_state_name(st.attestSecureBootEnabled)},
            {"attestationCertValidated", validity_name(st.attestationCertValidated)},
            {"bootIntegrityValidated", validity_name(st.bootIntegrityValidated)},
            {"healthStatus", health_name(st.healthStatus)},
            {"errorMessage", st.errorMessage},
            {"linuxKernelVersion", st.linuxKernelVersion},
            {"provisioningState", "Succeeded"},
            {"timestamp", timestamp},
            {"slot", st.slot},
            {"imageVersion", image_version},
            {"failedChecks", failed}};
}

}  // namespace

bool is_valid_device_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == ':';
    });
}

std::vector<Enrollment> parse_enrollments(const json& document, const std::string& what) {
    if (!document.is_object() || !document.contains("devices") || !document["devices"].is_array())
        fail(what + ": must be an object with a \"devices\" array");
    std::vector<Enrollment> out;
    size_t index = 0;
    for (const auto& d : document["devices"]) {
        const std::string where = what + ": devices[" + std::to_string(index++) + "]";
        if (!d.is_object()) fail(where + ": must be an object with deviceId and endorsementKey");
        auto id = d.find("deviceId"), ek = d.find("endorsementKey");
        if (id == d.end() || !id->is_string()) fail(where + ": deviceId missing or not a string");
        if (!is_valid_device_id(id->get<std::string>()))
            fail(where + ": '" + id->get<std::string>() + "' is not a valid device ID (1 to 128 of a-z 0-9 - . _ :)");
        if (ek == d.end() || !ek->is_string()) fail(where + " ('" + id->get<std::string>() + "'): endorsementKey missing or not a string");
        out.push_back({id->get<std::string>(), base64_decode(ek->get<std::string>(), where + ".endorsementKey")});
    }
    return out;
}

std::vector<Enrollment> load_enrollments_file(const std::filesystem::path& file) {
    json document;
    try {
        document = json::parse(read_file(file));
    } catch (const json::exception& e) {
        fail(file.string() + ": not valid JSON: " + e.what());
    }
    return parse_enrollments(document, file.string());
}

std::vector<AllowedImage> parse_image_policy(const json& document, const std::string& what) {
    if (!document.is_object() || !document.contains("images") || !document["images"].is_array())
        fail(what + ": must be an object with an \"images\" array");
    for (const auto& [key, value] : document.items())
        if (key != "images") fail(what + ": " + key + ": unknown key (the policy has \"images\" only)");
    std::vector<AllowedImage> out;
    size_t index = 0;
    for (const auto& entry : document["images"]) {
        const std::string where = what + ": images[" + std::to_string(index++) + "]";
        if (!entry.is_object()) fail(where + ": must be an object with image and, optionally, minimumVersion");
        AllowedImage a;
        for (const auto& [key, value] : entry.items()) {
            if (key == "image" && value.is_string()) a.image = value.get<std::string>();
            else if (key == "minimumVersion" && value.is_string()) a.minimum_version = value.get<std::string>();
            else if (key == "image" || key == "minimumVersion") fail(where + "." + key + ": must be a string");
            else fail(where + "." + key + ": unknown key (image, minimumVersion)");
        }
        if (a.image.empty()) fail(where + ".image: missing or empty");
        if (!a.minimum_version.empty())
            if (auto problem = version_problem(a.minimum_version)) fail(where + ".minimumVersion: '" + a.minimum_version + "': " + *problem);
        for (const AllowedImage& earlier : out)
            if (earlier.image == a.image) fail(where + ".image: '" + a.image + "' is listed twice");
        out.push_back(std::move(a));
    }
    if (out.empty()) fail(what + ": images: lists no image (without a policy every signed image is accepted; with one, those it lists)");
    return out;
}

std::vector<AllowedImage> load_image_policy_file(const std::filesystem::path& file) {
    json document;
    try {
        document = json::parse(read_file(file));
    } catch (const json::exception& e) {
        fail(file.string() + ": not valid JSON: " + e.what());
    }
    return parse_image_policy(document, file.string());
}

std::vector<FailedCheck> check_image_policy(const std::vector<AllowedImage>& allowed, const std::string& image, const std::string& version) {
    if (allowed.empty()) return {};
    for (const AllowedImage& a : allowed) {
        if (a.image != image) continue;
        if (!a.minimum_version.empty() && (version_problem(version) || compare_versions(version, a.minimum_version) < 0))
            return {{CheckCode::ImageTooOld, "image policy: " + image + " " + version + " is older than the oldest version accepted, " + a.minimum_version}};
        return {};
    }
    std::string names;
    for (const AllowedImage& a : allowed) names += (names.empty() ? "" : ", ") + a.image;
    return {{CheckCode::ImageNotAllowed, "image policy: the image '" + image + "' is not one this verifier accepts (" + names + ")"}};
}

VerifierService::VerifierService(VerifierConfig config) : config_(std::move(config)), store_(config_.state) {
    if (!config_.clock) config_.clock = [] { return std::chrono::system_clock::now(); };
}

std::chrono::system_clock::time_point VerifierService::now() const { return config_.clock(); }
int64_t VerifierService::now_seconds() const { return unix_seconds(now()); }

void VerifierService::enroll(const std::string& device_id, const std::string& ek_public) {
    if (!is_valid_device_id(device_id)) fail("device ID '" + device_id + "' is not valid (1 to 128 of a-z 0-9 - . _ :)");
    if (ek_public.size() > max_tpm_public) fail("device '" + device_id + "': endorsementKey is larger than " + std::to_string(max_tpm_public) + " bytes");
    // The EK must be one TPM2_MakeCredential can protect a secret to.
    tpm::storage_key(ek_public, "device '" + device_id + "': endorsementKey");
    std::lock_guard lock(mutex_);
    store_.enroll(device_id, ek_public, now_seconds());
}

bool VerifierService::remove(const std::string& device_id) {
    std::lock_guard lock(mutex_);
    return store_.remove(device_id);
}

std::optional<http::HttpResponse> VerifierService::check_admin(const http::HttpRequest& request) const {
    if (config_.admin_token.empty()) return error_reply(404, "not-found", "the admin API is off (no admin token configured)");
    // Compared as digests in constant time: neither the token's bytes nor its length show in the timing.
    const Digest given = sha256(request.header("authorization")), expected = sha256("Bearer " + config_.admin_token);
    if (CRYPTO_memcmp(given.data(), expected.data(), given.size()) != 0)
        return error_reply(401, "unauthorized", "wrong or missing bearer token");
    return std::nullopt;
}

http::HttpResponse VerifierService::handle(const http::HttpRequest& request) {
    try {
        return route(request);
    } catch (const ApiError& e) {
        return error_reply(e.status, e.code, e.message);
    } catch (const std::exception& e) {
        return error_reply(500, "internal-error", e.what());
    }
}

http::HttpResponse VerifierService::route(const http::HttpRequest& request) {
    const std::vector<std::string> parts = http::split_path(request.path);
    if (parts.size() < 3 || parts[0] != "attest" || parts[1] != "v1") refuse(404, "not-found", "no such resource: " + request.path);
    auto method = [&](const char* allowed) {
        if (request.method != allowed) refuse(405, "method-not-allowed", request.method + " is not allowed on " + request.path);
    };
    auto device = [&](const std::string& id) {
        if (!is_valid_device_id(id)) refuse(400, "invalid-device-id", "'" + id + "' is not a valid device ID (1 to 128 of a-z 0-9 - . _ :)");
        return id;
    };
    const std::vector<std::string> rest(parts.begin() + 2, parts.end());
    if (rest.size() == 3 && rest[0] == "admin" && rest[1] == "devices") {
        if (auto refused = check_admin(request)) return *refused;
        return handle_admin_device(request, device(rest[2]));
    }
    if (rest.size() == 1 && rest[0] == "stale") {
        method("GET");
        if (auto refused = check_admin(request)) return *refused;
        return stale(request);
    }
    if (rest.size() >= 3 && rest[0] == "devices") {
        const std::string id = device(rest[1]);
        const std::string& what = rest[2];
        if (rest.size() == 4 && what == "ak" && rest[3] == "activate") {
            method("POST");
            return activate_ak(request, id);
        }
        if (rest.size() == 3 && (what == "ak" || what == "nonce" || what == "evidence")) {
            method("POST");
            if (what == "ak") return bind_ak(request, id);
            if (what == "nonce") return issue_nonce(request, id);
            return evidence(request, id);
        }
        if (rest.size() == 3) {
            if (what == "status" || what == "history") {
                method("GET");
                if (auto refused = check_admin(request)) return *refused;
                return what == "status" ? status(request, id) : history(request, id);
            }
        }
    }
    refuse(404, "not-found", "no such resource: " + request.path);
}

http::HttpResponse VerifierService::handle_admin_device(const http::HttpRequest& request, const std::string& device_id) {
    if (request.method == "PUT") {
        const json body = parse_body(request);
        const std::string ek = b64_field(body, "endorsementKey", max_tpm_public);
        try {
            enroll(device_id, ek);
        } catch (const Error& e) {
            refuse(400, "endorsement-key-invalid", e.what());
        }
        return http::HttpResponse::json(200, {{"deviceId", device_id}});
    }
    if (request.method == "DELETE") {
        if (!remove(device_id)) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
        http::HttpResponse r;
        r.status = 204;
        return r;
    }
    if (request.method == "GET") {
        std::lock_guard lock(mutex_);
        auto ek = store_.endorsement_key(device_id);
        if (!ek) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
        json out = {{"deviceId", device_id}, {"endorsementKey", base64_encode(*ek)}, {"attestationKeyBound", false}};
        if (auto ak = store_.bound_ak(device_id)) {
            out["attestationKeyBound"] = true;
            out["attestationKey"] = base64_encode(ak->ak_public);
            out["attestationKeyName"] = hex(ak->ak_name);
            out["boundAt"] = ak->bound_at;
        }
        return http::HttpResponse::json(200, out);
    }
    refuse(405, "method-not-allowed", request.method + " is not allowed on " + request.path);
}

http::HttpResponse VerifierService::bind_ak(const http::HttpRequest& request, const std::string& device_id) {
    const json body = parse_body(request);
    const std::string ek = b64_field(body, "endorsementKey", max_tpm_public);
    const std::string ak_public = b64_field(body, "attestationKey", max_tpm_public);
    std::lock_guard lock(mutex_);
    const auto enrolled = store_.endorsement_key(device_id);
    if (!enrolled) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
    if (*enrolled != ek) refuse(403, "endorsement-key-mismatch", "device '" + device_id + "' is enrolled with another endorsement key");
    const AttestationKey ak = parse_ak_or_refuse(ak_public);
    const std::string secret = random_bytes(secret_bytes);
    const tpm::MadeCredential made = tpm::make_credential(tpm::storage_key(*enrolled, "device '" + device_id + "': endorsementKey"), ak.name, secret);
    store_.put_challenge(device_id, {ak_public, ak.name, digest_bytes(secret), now_seconds() + config_.challenge_ttl_seconds});
    return http::HttpResponse::json(200, {{"credentialBlob", base64_encode(made.id_object)},
                                          {"encryptedSecret", base64_encode(made.encrypted_secret)},
                                          {"expiresIn", config_.challenge_ttl_seconds}});
}

http::HttpResponse VerifierService::activate_ak(const http::HttpRequest& request, const std::string& device_id) {
    const json body = parse_body(request);
    const std::string secret = b64_field(body, "secret", 64);
    std::lock_guard lock(mutex_);
    if (!store_.endorsement_key(device_id)) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
    const auto challenge = store_.take_challenge(device_id);
    if (!challenge) refuse(403, "activation-failed", "device '" + device_id + "' has no pending AK challenge (POST .../ak first)");
    if (challenge->expires_at <= now_seconds()) refuse(403, "activation-failed", "device '" + device_id + "': the AK challenge expired");
    if (!same_secret(digest_bytes(secret), challenge->secret_hash))
        refuse(403, "activation-failed", "device '" + device_id + "': the secret is not the challenge's (the AK is not bound)");
    store_.bind_ak(device_id, {challenge->ak_public, challenge->ak_name, utc_timestamp(now())});
    return http::HttpResponse::json(200, {{"attestationKeyName", hex(challenge->ak_name)}});
}

http::HttpResponse VerifierService::issue_nonce(const http::HttpRequest& request, const std::string& device_id) {
    const json body = parse_body(request);
    const std::string ak_public = b64_field(body, "attestationKey", max_tpm_public);
    parse_ak_or_refuse(ak_public);
    std::lock_guard lock(mutex_);
    if (!store_.endorsement_key(device_id)) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
    const std::string nonce = random_bytes(nonce_bytes);
    const int64_t now = now_seconds();
    store_.add_nonce(device_id, nonce, {ak_public, now + config_.nonce_ttl_seconds}, now, config_.max_outstanding_nonces);
    const auto bound = store_.bound_ak(device_id);
    return http::HttpResponse::json(200, {{"nonce", base64_encode(nonce)},
                                          {"expiresIn", config_.nonce_ttl_seconds},
                                          {"pcrs", config_.pcrs},
                                          {"attestationKeyBound", bound && bound->ak_public == ak_public}});
}

http::HttpResponse VerifierService::evidence(const http::HttpRequest& request, const std::string& device_id) {
    const json body = parse_body(request);
    const std::string nonce = b64_field(body, "nonce", 64);
    Evidence ev;
    ev.quote = b64_field(body, "quote", max_quote);
    ev.signature = b64_field(body, "signature", max_signature);
    ev.event_log = b64_field(body, "eventLog", max_event_log);
    const std::string reference_bytes = b64_field(body, "reference", max_reference);
    const std::string reference_signature = b64_field(body, "referenceSignature", max_reference_signature);

    std::lock_guard lock(mutex_);
    if (!store_.endorsement_key(device_id)) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
    IssuedNonce issued;
    const int64_t judged_at = now_seconds();
    // Looked at now, used only with the judgement stored (one transaction, under the lock): a
    // failure in between (a 500) leaves it unused, so the agent's retry of the same body works.
    switch (store_.peek_nonce(device_id, nonce, judged_at, issued)) {
    case NonceState::Valid: break;
    case NonceState::Unknown: refuse(409, "nonce-invalid", "device '" + device_id + "': the nonce was not issued to this device");
    case NonceState::Used: refuse(409, "nonce-invalid", "device '" + device_id + "': the nonce was already used");
    case NonceState::Expired: refuse(409, "nonce-invalid", "device '" + device_id + "': the nonce expired");
    }
    // The quote is checked with the AK the device named when it asked for this nonce; it counts as
    // activated only when that is the AK bound to the device's EK.
    ev.ak_public = issued.ak_public;
    const auto bound = store_.bound_ak(device_id);

    std::string signature_problem;
    try {
        updater::cms_verify(reference_bytes, reference_signature, config_.update_ca, "reference document", unix_seconds(now()));
    } catch (const Error& e) {
        signature_problem = e.what();
    }
    ReferenceDocument reference;
    try {
        reference = parse_reference(reference_bytes, "reference document");
    } catch (const Error& e) {
        refuse(400, "reference-invalid", e.what());
    }

    Policy policy;
    policy.pcrs = config_.pcrs;
    policy.nonce = nonce;
    policy.last_clock = store_.last_clock(device_id);
    policy.ak_activated = bound && bound->ak_public == issued.ak_public;
    AttestationStatus st = verify_evidence(ev, reference, policy);
    // A judgement is stored as the device's only when the evidence is the device's: its bound AK
    // signed this quote over the nonce issued for it. Anything else proves nothing of the device
    // (anyone may ask for a nonce naming an AK of their own), so it is refused and changes
    // nothing: else whoever reaches the verifier could mark any device Unhealthy. The nonce stays
    // unused, for the device's own round.
    std::string not_authenticated;
    for (const FailedCheck& f : st.failed)
        if (f.code == CheckCode::AkInvalid || f.code == CheckCode::AkNotActivated || f.code == CheckCode::QuoteMalformed ||
            f.code == CheckCode::QuoteSignatureInvalid || f.code == CheckCode::QuoteNonceMismatch)
            not_authenticated += (not_authenticated.empty() ? "" : "; ") + std::string(check_code_name(f.code)) + ": " + f.reason;
    if (!not_authenticated.empty())
        refuse(403, "evidence-not-authenticated", "device '" + device_id + "': the evidence is not the device's: " + not_authenticated);
    std::vector<FailedCheck> outside = check_image_policy(config_.allowed_images, reference.image, reference.version);
    if (!signature_problem.empty()) outside.insert(outside.begin(), {CheckCode::ReferenceSignatureInvalid, signature_problem});
    for (FailedCheck& f : outside) {
        st.errorMessage += (st.errorMessage.empty() ? "" : "; ") + f.reason;
        st.failed.push_back(std::move(f));
        st.bootIntegrityValidated = Validity::Invalid;
        st.healthStatus = Health::Unhealthy;
    }
    // Only a quote that passed every quote check moves the clock forward.
    const std::optional<QuoteClock> clock = st.attestationCertValidated == Validity::Valid ? st.clock : std::nullopt;
    const json record = record_json(device_id, st, utc_timestamp(now()), reference.version);
    // Replacing invalid UTF-8: reasons may quote bytes of the device's log or a certificate's subject.
    const std::string text = record.dump(-1, ' ', false, json::error_handler_t::replace);
    if (!store_.record_judgement(device_id, nonce, clock, {judged_at, text}, config_.history_limit))
        fail("device '" + device_id + "': the nonce changed state during the judgement");
    return http::HttpResponse::json(200, record);
}

http::HttpResponse VerifierService::status(const http::HttpRequest&, const std::string& device_id) {
    std::lock_guard lock(mutex_);
    if (!store_.endorsement_key(device_id)) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
    const auto last = store_.last_status(device_id);
    if (!last) refuse(404, "no-status", "device '" + device_id + "' has not attested yet");
    return http::HttpResponse::json(200, json::parse(last->record));
}

http::HttpResponse VerifierService::history(const http::HttpRequest& request, const std::string& device_id) {
    const auto limit = static_cast<size_t>(
        query_number(request, "limit", static_cast<int64_t>(std::min(default_history, config_.history_limit)), 1, static_cast<int64_t>(config_.history_limit)));
    std::lock_guard lock(mutex_);
    if (!store_.endorsement_key(device_id)) refuse(404, "unknown-device", "device '" + device_id + "' is not enrolled");
    json out = json::array();
    for (const auto& s : store_.history(device_id, limit)) out.push_back(json::parse(s.record));
    return http::HttpResponse::json(200, out);
}

http::HttpResponse VerifierService::stale(const http::HttpRequest& request) {
    const int64_t older_than = query_number(request, "olderThan", default_stale_seconds, 0, int64_t(100) * 365 * 86400);
    std::lock_guard lock(mutex_);
    json devices = json::array();
    for (const auto& [id, last] : store_.stale(now_seconds() - older_than)) {
        json entry = {{"deviceId", id}, {"timestamp", nullptr}, {"healthStatus", "Unknown"}};
        if (last) {
            const json record = json::parse(last->record);
            entry["timestamp"] = record.value("timestamp", "");
            entry["healthStatus"] = record.value("healthStatus", "Unknown");
        }
        devices.push_back(entry);
    }
    return http::HttpResponse::json(200, {{"devices", devices}});
}

}  // namespace cairn::attestation
