#include "provisioning/dps_service.hpp"

#include <openssl/crypto.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/encoding.hpp"
#include "provisioning/sas.hpp"

namespace cairn::provisioning {

using nlohmann::json;

namespace {

constexpr size_t max_log_entries = 10000;

void resolve_certificate_files(json& node, const std::filesystem::path& dir) {
    if (node.is_object()) {
        if (auto it = node.find("certificateFile"); it != node.end() && it->is_string()) {
            std::filesystem::path file = it->get<std::string>();
            if (file.is_relative()) file = dir / file;
            node["certificate"] = read_file(file);
            node.erase("certificateFile");
        }
        for (auto& [_, child] : node.items()) resolve_certificate_files(child, dir);
    } else if (node.is_array()) {
        for (auto& child : node) resolve_certificate_files(child, dir);
    }
}

std::string string_field(const json& object, const char* name, const std::string& where) {
    auto it = object.find(name);
    if (it == object.end()) return "";
    if (!it->is_string()) fail(where + "." + name + ": must be a string");
    return it->get<std::string>();
}

// The schema of the state file, by version (store::Database::migrate). Append, never edit.
// Times are wall-clock milliseconds since the epoch, so they keep their meaning across restarts.
const std::vector<std::string_view> schema = {
    R"(CREATE TABLE enrollment (
         kind TEXT NOT NULL CHECK (kind IN ('individual', 'group')),
         id TEXT NOT NULL,
         document TEXT NOT NULL,
         PRIMARY KEY (kind, id));
       CREATE TABLE operation (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order: the oldest is dropped first
         id TEXT NOT NULL UNIQUE,
         registration_id TEXT NOT NULL,
         ready_at_ms INTEGER NOT NULL,
         result TEXT NOT NULL);
       CREATE INDEX operation_by_registration ON operation (registration_id, seq);
       CREATE TABLE registration (
         registration_id TEXT PRIMARY KEY,
         state TEXT NOT NULL);
       CREATE TABLE tpm_challenge (
         registration_id TEXT NOT NULL,
         stage TEXT NOT NULL CHECK (stage IN ('pending', 'answered')),
         hmac_key BLOB NOT NULL,
         blob BLOB NOT NULL,
         srk BLOB NOT NULL,
         expires_ms INTEGER NOT NULL,
         PRIMARY KEY (registration_id, stage));
       CREATE TABLE hub_device (
         device_id TEXT PRIMARY KEY,
         hub TEXT NOT NULL,
         registration_id TEXT NOT NULL,
         method TEXT NOT NULL,
         key BLOB NOT NULL,
         thumbprint TEXT NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('enabled', 'disabled', 'credentialRevoked'))))",
};

int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json parse_stored(const std::string& text, const std::string& what) {
    try {
        return json::parse(text);
    } catch (const json::exception& e) {
        fail("stored " + what + " is not valid JSON: " + e.what());
    }
}

std::string new_id() { return to_hex(std::span(reinterpret_cast<const uint8_t*>(random_bytes(8).data()), 8)); }

}  // namespace

bool is_valid_registration_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == ':';
    });
}

const std::vector<std::string>& dps_api_versions() {
    static const std::vector<std::string> versions = {"2018-11-01", "2019-03-31", "2021-06-01", "2021-10-01", "2022-12-12", "2023-03-01-preview"};
    return versions;
}

json load_enrollments_file(const std::filesystem::path& file) {
    json document;
    if (file.extension() == ".toml") {
        try {
            toml::table table = toml::parse_file(file.string());
            std::ostringstream out;
            out << toml::json_formatter{table};
            document = json::parse(out.str());
        } catch (const toml::parse_error& e) {
            fail(file.string() + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
        }
    } else {
        try {
            document = json::parse(read_file(file));
        } catch (const json::exception& e) {
            fail(file.string() + ": not valid JSON: " + e.what());
        }
    }
    if (!document.is_object()) fail(file.string() + ": must hold an object with idScope, iotHubs, enrollments, enrollmentGroups");
    try {
        resolve_certificate_files(document, std::filesystem::absolute(file).parent_path());
    } catch (const Error& e) {
        fail(file.string() + ": " + e.what());
    }
    return document;
}

DpsService::DpsService(DpsServiceConfig config, const json& enrollments) : config_(std::move(config)), db_(config_.state_file) {
    db_.migrate(schema);
    id_scope_ = string_field(enrollments, "idScope", "enrollments");
    if (id_scope_.empty()) fail("enrollments: idScope missing");
    if (auto it = enrollments.find("iotHubs"); it != enrollments.end()) {
        if (!it->is_array()) fail("enrollments: iotHubs must be an array of host names");
        for (const auto& hub : *it) {
            if (!hub.is_string()) fail("enrollments: iotHubs must be an array of host names");
            hubs_.push_back(hub.get<std::string>());
        }
    }
    // The document's enrollments go over the stored ones, all or none.
    store::Transaction transaction(db_);
    for (const char* key : {"enrollments", "enrollmentGroups"}) {
        auto it = enrollments.find(key);
        if (it == enrollments.end()) continue;
        if (!it->is_array()) fail(std::string("enrollments: ") + key + " must be an array");
        std::set<std::string> seen;
        for (const auto& document : *it) {
            Enrollment e = parse_enrollment(document, std::string(key) == "enrollmentGroups");
            if (!seen.insert(e.id).second) fail(std::string("enrollments: ") + key + ": '" + e.id + "' appears twice");
            store_enrollment(e);
        }
    }
    transaction.commit();
}

std::shared_ptr<const DpsService::Enrollment> DpsService::find_enrollment(const std::string& id, bool group) {
    store::Statement s = db_.prepare("SELECT document FROM enrollment WHERE kind = ? AND id = ?");
    s.bind(1, group ? "group" : "individual").bind(2, id);
    if (!s.step()) return nullptr;
    return std::make_shared<const Enrollment>(parse_enrollment(parse_stored(s.text(0), "enrollment '" + id + "'"), group));
}

std::vector<std::shared_ptr<const DpsService::Enrollment>> DpsService::groups_of_type(const std::string& type) {
    std::vector<std::shared_ptr<const Enrollment>> out;
    store::Statement s = db_.prepare("SELECT id, document FROM enrollment WHERE kind = 'group' ORDER BY id");
    while (s.step()) {
        auto e = std::make_shared<const Enrollment>(parse_enrollment(parse_stored(s.text(1), "enrollment group '" + s.text(0) + "'"), true));
        if (e->type == type) out.push_back(std::move(e));
    }
    return out;
}

void DpsService::store_enrollment(const Enrollment& e) {
    db_.prepare("INSERT OR REPLACE INTO enrollment (kind, id, document) VALUES (?, ?, ?)")
        .bind(1, e.group ? "group" : "individual")
        .bind(2, e.id)
        .bind(3, e.document.dump(-1, ' ', false, json::error_handler_t::replace))
        .run();
}

std::optional<DpsService::TpmState> DpsService::find_tpm(const std::string& registration_id, const char* stage) {
    store::Statement s = db_.prepare("SELECT hmac_key, blob, srk, expires_ms FROM tpm_challenge WHERE registration_id = ? AND stage = ?");
    s.bind(1, registration_id).bind(2, stage);
    if (!s.step()) return std::nullopt;
    return TpmState{s.text(0), s.text(1), s.text(2), s.integer(3)};
}

void DpsService::store_tpm(const std::string& registration_id, const char* stage, const TpmState& state) {
    db_.prepare("INSERT OR REPLACE INTO tpm_challenge (registration_id, stage, hmac_key, blob, srk, expires_ms) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(1, registration_id)
        .bind(2, stage)
        .bind_blob(3, state.hmac_key)
        .bind_blob(4, state.blob)
        .bind_blob(5, state.srk)
        .bind(6, state.expires_ms)
        .run();
}

void DpsService::drop_tpm(const std::string& registration_id, const char* stage) {
    db_.prepare("DELETE FROM tpm_challenge WHERE registration_id = ? AND stage = ?").bind(1, registration_id).bind(2, stage).run();
}

std::optional<json> DpsService::find_registration(const std::string& registration_id) {
    store::Statement s = db_.prepare("SELECT state FROM registration WHERE registration_id = ?");
    s.bind(1, registration_id);
    if (!s.step()) return std::nullopt;
    return parse_stored(s.text(0), "registration '" + registration_id + "'");
}

void DpsService::store_registration(const std::string& registration_id, const json& state) {
    db_.prepare("INSERT OR REPLACE INTO registration (registration_id, state) VALUES (?, ?)")
        .bind(1, registration_id)
        .bind(2, state.dump(-1, ' ', false, json::error_handler_t::replace))
        .run();
}

std::optional<DpsService::HubDevice> DpsService::find_hub_device(const std::string& device_id) {
    store::Statement s = db_.prepare("SELECT hub, registration_id, method, key, thumbprint, status FROM hub_device WHERE device_id = ?");
    s.bind(1, device_id);
    if (!s.step()) return std::nullopt;
    return HubDevice{s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5)};
}

void DpsService::set_tpm_challenge_maker(TpmChallengeMaker maker) {
    std::lock_guard lock(mutex_);
    tpm_maker_ = std::move(maker);
}

std::string DpsService::id_scope() const { return id_scope_; }

std::chrono::system_clock::time_point DpsService::now() const {
    return std::chrono::system_clock::now() + std::chrono::seconds(config_.clock_offset_seconds);
}

DpsService::Enrollment DpsService::parse_enrollment(const json& document, bool group) const {
    const char* id_key = group ? "enrollmentGroupId" : "registrationId";
    std::string where = group ? "enrollmentGroups" : "enrollments";
    if (!document.is_object()) fail(where + ": each entry must be an object");
    Enrollment e;
    e.group = group;
    e.document = document;
    e.id = string_field(document, id_key, where);
    if (e.id.empty()) fail(where + ": " + id_key + " missing");
    if (!group && !is_valid_registration_id(e.id))
        fail(where + ": '" + e.id + "' is not a valid registration ID (1 to 128 of a-z 0-9 - . _ :)");
    where += "['" + e.id + "']";
    auto att = document.find("attestation");
    if (att == document.end() || !att->is_object()) fail(where + ".attestation: missing (an object with a type)");
    e.type = string_field(*att, "type", where + ".attestation");
    if (e.type == "symmetricKey") {
        auto sk = att->find("symmetricKey");
        if (sk == att->end() || !sk->is_object()) fail(where + ".attestation.symmetricKey: missing");
        for (const char* name : {"primaryKey", "secondaryKey"}) {
            std::string key = string_field(*sk, name, where + ".attestation.symmetricKey");
            if (!key.empty()) e.keys.push_back(base64_decode(key, where + ".attestation.symmetricKey." + name));
        }
        if (e.keys.empty()) fail(where + ".attestation.symmetricKey: needs primaryKey or secondaryKey");
    } else if (e.type == "x509") {
        auto x = att->find("x509");
        const char* list = group ? "signingCertificates" : "clientCertificates";
        if (x == att->end() || !x->is_object() || !x->contains(list)) fail(where + ".attestation.x509." + list + ": missing");
        for (const char* slot : {"primary", "secondary"}) {
            auto it = (*x)[list].find(slot);
            if (it == (*x)[list].end()) continue;
            const std::string w = where + ".attestation.x509." + list + "." + slot;
            std::string pem = string_field(*it, "certificate", w);
            if (pem.empty()) fail(w + ".certificate: missing");
            for (auto& cert : parse_pem_certificates(pem, w + ".certificate")) {
                e.certificates.push_back(std::move(cert));
                if (!group) break;  // an individual enrollment names its device certificate (the first)
            }
        }
        if (e.certificates.empty()) fail(where + ".attestation.x509." + list + ": needs a primary certificate");
    } else if (e.type == "tpm") {
        if (group) fail(where + ".attestation.type: 'tpm' is for individual enrollments only");
        auto t = att->find("tpm");
        if (t == att->end() || !t->is_object()) fail(where + ".attestation.tpm: missing");
        e.endorsement_key = base64_decode(string_field(*t, "endorsementKey", where + ".attestation.tpm"), where + ".attestation.tpm.endorsementKey");
        if (e.endorsement_key.size() < 10) fail(where + ".attestation.tpm.endorsementKey: missing or too short");
    } else {
        fail(where + ".attestation.type: '" + e.type + "' is not symmetricKey, x509" + (group ? "" : " or tpm"));
    }
    e.device_id = string_field(document, "deviceId", where);
    std::string status = string_field(document, "provisioningStatus", where);
    if (!status.empty() && status != "enabled" && status != "disabled")
        fail(where + ".provisioningStatus: '" + status + "' is not enabled or disabled");
    e.enabled = status != "disabled";
    if (auto it = document.find("iotHubs"); it != document.end()) {
        if (!it->is_array()) fail(where + ".iotHubs: must be an array of host names");
        for (const auto& hub : *it) {
            if (!hub.is_string()) fail(where + ".iotHubs: must be an array of host names");
            e.hubs.push_back(hub.get<std::string>());
        }
    }
    if (std::string hub = string_field(document, "iotHubHostName", where); !hub.empty()) e.hubs = {hub};
    if (auto it = document.find("initialTwin"); it != document.end()) {
        if (!it->is_object()) fail(where + ".initialTwin: must be an object");
        e.initial_twin = *it;
    }
    return e;
}

void DpsService::put_enrollment(const json& enrollment) {
    Enrollment e = parse_enrollment(enrollment, false);
    std::lock_guard lock(mutex_);
    store_enrollment(e);  // one statement: its own transaction
}

void DpsService::put_enrollment_group(const json& group) {
    Enrollment e = parse_enrollment(group, true);
    std::lock_guard lock(mutex_);
    store_enrollment(e);
}

bool DpsService::remove_enrollment(const std::string& registration_id) {
    std::lock_guard lock(mutex_);
    return db_.prepare("DELETE FROM enrollment WHERE kind = 'individual' AND id = ?").bind(1, registration_id).run() > 0;
}

bool DpsService::remove_enrollment_group(const std::string& group_id) {
    std::lock_guard lock(mutex_);
    return db_.prepare("DELETE FROM enrollment WHERE kind = 'group' AND id = ?").bind(1, group_id).run() > 0;
}

void DpsService::inject_faults(int status, int count, int retry_after_seconds) {
    std::lock_guard lock(mutex_);
    fault_status_ = status;
    fault_count_ = count;
    fault_retry_after_ = retry_after_seconds;
}

json DpsService::request_log() const {
    std::lock_guard lock(mutex_);
    return json(log_);
}

json DpsService::registrations() const {
    std::lock_guard lock(mutex_);
    json out = json::object();
    store::Statement s = db_.prepare("SELECT registration_id, state FROM registration ORDER BY registration_id");
    while (s.step()) out[s.text(0)] = parse_stored(s.text(1), "registration '" + s.text(0) + "'");
    return out;
}

http::HttpResponse DpsService::error(int status, int code, const std::string& message) const {
    return http::HttpResponse::json(status, {{"errorCode", code},
                                       {"trackingId", new_id()},
                                       {"message", message},
                                       {"timestampUtc", utc_timestamp(now())}});
}

void DpsService::log(const http::HttpRequest& request, const std::string& registration_id, int status, const std::string& note) {
    json entry = {{"time", utc_timestamp(now())},
                  {"method", request.method},
                  {"path", request.path},
                  {"registrationId", registration_id},
                  {"status", status},
                  {"peer", request.peer_address}};
    if (!note.empty()) entry["note"] = note;
    log_.push_back(entry);
    if (log_.size() > max_log_entries) log_.pop_front();
    if (!config_.request_log.empty()) {
        // Bounded: past request_log_max_bytes the file becomes FILE.1 (the one before is dropped).
        const std::string line = entry.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        std::error_code ec;
        const uintmax_t size = std::filesystem::file_size(config_.request_log, ec);
        if (!ec && size > 0 && size + line.size() > config_.request_log_max_bytes)
            std::filesystem::rename(config_.request_log, config_.request_log.string() + ".1", ec);
        std::ofstream out(config_.request_log, std::ios::app);
        out << line;
    }
}

http::HttpResponse DpsService::handle(const http::HttpRequest& request) {
    const std::vector<std::string> parts = http::split_path(request.path);
    if (!parts.empty() && parts[0] == "admin") {
        try {
            return handle_admin(request, parts);
        } catch (const Error& e) {
            return error(400, 400000, e.what());
        }
    }
    std::lock_guard lock(mutex_);
    http::HttpResponse response;
    const bool hub = !parts.empty() && parts[0] == "devices";
    try {
        // The request's changes (a challenge issued, an operation, a registration, a hub device)
        // are kept all together, error replies included (a TPM challenge is a 401), or not at all.
        store::Transaction transaction(db_);
        response = hub ? handle_hub(request, parts) : handle_device(request, parts);
        transaction.commit();
    } catch (const std::exception& e) {
        response = error(500, 500000, std::string("internal error: ") + e.what());
    }
    std::string note;
    try {
        json body = json::parse(response.body);
        note = response.status >= 400 ? body.value("message", "") : body.value("status", "");
    } catch (...) {
    }
    response.headers.emplace_back("Date", http::http_date(unix_seconds(now())));
    response.headers.emplace_back("x-ms-request-id", new_id());
    log(request, hub ? (parts.size() >= 2 ? parts[1] : "") : parts.size() >= 3 ? parts[2] : "", response.status, note);
    return response;
}

// The simulated IoT Hub: the device-bound message request of IoT Hub's device HTTPS API, which a
// device makes with its own credential. 204 (no message) when the hub accepts the device; 401
// when it refuses the credential; 403 when the device is disabled; 404 for a device it does not
// know. Cairn's agent asks it at start in Dynamic mode.
http::HttpResponse DpsService::handle_hub(const http::HttpRequest& request, const std::vector<std::string>& parts) {
    if (parts.size() != 4 || parts[2] != "messages" || parts[3] != "deviceBound")
        return error(404, 404000, "the simulated hub serves GET /devices/{id}/messages/deviceBound only");
    if (request.method != "GET") return error(405, 405000, "the simulated hub answers GET only");
    const std::optional<HubDevice> device = find_hub_device(parts[1]);
    if (!device) return error(404, 404001, "DeviceNotFound: no device '" + parts[1] + "' on any hub");
    const HubDevice& d = *device;
    if (d.status == "disabled") return error(403, 403004, "device '" + parts[1] + "' is disabled on " + d.hub);
    const std::string authorization = request.header("authorization");
    bool accepted = false;
    if (d.status == "credentialRevoked") {
        accepted = false;
    } else if (!authorization.empty()) {
        try {
            SasToken token = parse_sas_token(authorization);
            accepted = to_lower(token.resource) == to_lower(d.hub + "/devices/" + parts[1]) && token.expiry >= unix_seconds(now()) &&
                       !d.key.empty() && sas_signature_matches(token, d.key);
        } catch (const Error&) {
        }
    } else if (!request.peer_chain.empty() && !d.thumbprint.empty()) {
        accepted = certificate_thumbprint(request.peer_chain.front().get()) == d.thumbprint;
    }
    if (!accepted) return error(401, 401002, "IotHubUnauthorizedAccess: " + d.hub + " refuses the credential of '" + parts[1] + "'");
    http::HttpResponse r;
    r.status = 204;
    return r;
}

void DpsService::set_hub_status(const std::string& device_id, const std::string& status) {
    std::lock_guard lock(mutex_);
    if (status != "enabled" && status != "disabled" && status != "credentialRevoked")
        fail("hubStatus '" + status + "' is not enabled, disabled or credentialRevoked");
    if (db_.prepare("UPDATE hub_device SET status = ? WHERE device_id = ?").bind(1, status).bind(2, device_id).run() == 0)
        fail("no device '" + device_id + "' was assigned to a hub");
}

json DpsService::hub_devices() const {
    std::lock_guard lock(mutex_);
    json out = json::array();
    store::Statement s = db_.prepare("SELECT device_id, hub, registration_id, method, status FROM hub_device ORDER BY device_id");
    while (s.step())
        out.push_back({{"deviceId", s.text(0)}, {"assignedHub", s.text(1)}, {"registrationId", s.text(2)}, {"method", s.text(3)}, {"hubStatus", s.text(4)}});
    return out;
}

http::HttpResponse DpsService::handle_device(const http::HttpRequest& request, const std::vector<std::string>& parts) {
    if (fault_count_ > 0) {
        --fault_count_;
        http::HttpResponse r = error(fault_status_, fault_status_ * 1000, "injected fault");
        if (fault_status_ == 429 || fault_status_ == 503) r.headers.emplace_back("Retry-After", std::to_string(fault_retry_after_));
        return r;
    }
    if (parts.size() < 3 || parts[1] != "registrations") return error(404, 404000, "no such resource: " + request.path);
    if (to_lower(parts[0]) != to_lower(id_scope_)) return error(404, 404201, "unknown ID scope '" + parts[0] + "'");
    auto version = request.query.find("api-version");
    if (version == request.query.end()) return error(400, 400001, "api-version missing from the query");
    const auto& versions = dps_api_versions();
    if (std::find(versions.begin(), versions.end(), version->second) == versions.end())
        return error(400, 400001, "api-version '" + version->second + "' is not supported");
    const std::string& registration_id = parts[2];
    if (!is_valid_registration_id(registration_id))
        return error(400, 400003, "registration ID '" + registration_id.substr(0, 140) +
                                      "' is not valid: 1 to 128 characters of lowercase letters, digits and - . _ :");

    if (parts.size() == 4 && parts[3] == "register") {
        if (request.method != "PUT") return error(405, 405000, "register takes PUT");
        json body;
        try {
            body = json::parse(request.body);
        } catch (const json::exception& e) {
            return error(400, 400002, std::string("request body is not valid JSON: ") + e.what());
        }
        if (!body.is_object()) return error(400, 400002, "request body must be a JSON object");
        if (!body.contains("registrationId") || !body["registrationId"].is_string())
            return error(400, 400002, "request body lacks registrationId");
        if (body["registrationId"].get<std::string>() != registration_id)
            return error(400, 400002, "registrationId in the body ('" + body["registrationId"].get<std::string>() +
                                          "') differs from the one in the path ('" + registration_id + "')");
        auto auth = authenticate(request, registration_id, &body);
        if (auto* reply = std::get_if<http::HttpResponse>(&auth)) return std::move(*reply);
        Operation op;
        op.id = "5." + new_id() + "." + new_id();
        op.registration_id = registration_id;
        op.ready_at_ms = wall_ms() + config_.assign_delay_ms;
        op.result = assign(std::get<Authenticated>(auth), registration_id, body);
        op.result["operationId"] = op.id;
        http::HttpResponse r = http::HttpResponse::json(202, {{"operationId", op.id}, {"status", "assigning"}});
        r.headers.emplace_back("Retry-After", std::to_string(config_.retry_after_seconds));
        r.headers.emplace_back("Location", "/" + id_scope_ + "/registrations/" + registration_id + "/register");
        store_operation(op);
        return r;
    }
    if (parts.size() == 5 && parts[3] == "operations") {
        if (request.method != "GET") return error(405, 405000, "operation status takes GET");
        auto auth = authenticate(request, registration_id, nullptr);
        if (auto* reply = std::get_if<http::HttpResponse>(&auth)) return std::move(*reply);
        store::Statement s = db_.prepare("SELECT ready_at_ms, result FROM operation WHERE id = ? AND registration_id = ?");
        s.bind(1, parts[4]).bind(2, registration_id);
        if (!s.step()) return error(404, 404202, "no operation '" + parts[4] + "' for registration '" + registration_id + "'");
        if (wall_ms() < s.integer(0)) {
            http::HttpResponse r = http::HttpResponse::json(202, {{"operationId", parts[4]}, {"status", "assigning"}});
            r.headers.emplace_back("Retry-After", std::to_string(config_.retry_after_seconds));
            return r;
        }
        return http::HttpResponse::json(200, parse_stored(s.text(1), "operation '" + parts[4] + "'"));
    }
    if (parts.size() == 3) {
        if (request.method != "POST") return error(405, 405000, "registration status lookup takes POST");
        auto auth = authenticate(request, registration_id, nullptr);
        if (auto* reply = std::get_if<http::HttpResponse>(&auth)) return std::move(*reply);
        std::optional<json> state = find_registration(registration_id);
        if (!state) return error(404, 404203, "registration '" + registration_id + "' has never been assigned");
        return http::HttpResponse::json(200, *state);
    }
    return error(404, 404000, "no such resource: " + request.path);
}

// Keeps at most max_operations_per_registration for the operation's registration ID and
// max_operations in all, dropping the oldest first (seq is the creation order).
void DpsService::store_operation(const Operation& op) {
    const auto keep = [](size_t limit) { return static_cast<int64_t>(std::max<size_t>(limit, 1) - 1); };  // room for the new one
    db_.prepare("DELETE FROM operation WHERE seq IN (SELECT seq FROM operation WHERE registration_id = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)")
        .bind(1, op.registration_id)
        .bind(2, keep(config_.max_operations_per_registration))
        .run();
    db_.prepare("DELETE FROM operation WHERE seq IN (SELECT seq FROM operation ORDER BY seq DESC LIMIT -1 OFFSET ?)")
        .bind(1, keep(config_.max_operations))
        .run();
    db_.prepare("INSERT INTO operation (id, registration_id, ready_at_ms, result) VALUES (?, ?, ?, ?)")
        .bind(1, op.id)
        .bind(2, op.registration_id)
        .bind(3, op.ready_at_ms)
        .bind(4, op.result.dump(-1, ' ', false, json::error_handler_t::replace))
        .run();
}

std::variant<DpsService::Authenticated, http::HttpResponse> DpsService::authenticate(const http::HttpRequest& request,
                                                                               const std::string& registration_id,
                                                                               const json* body) {
    if (body && body->contains("tpm")) return authenticate_tpm(request, registration_id, (*body)["tpm"]);
    const std::string authorization = request.header("authorization");
    if (!authorization.empty()) {
        SasToken token;
        try {
            token = parse_sas_token(authorization);
        } catch (const Error& e) {
            return error(401, 401002, std::string("malformed Authorization: ") + e.what());
        }
        const std::string expected = sas_resource(id_scope_, registration_id);
        if (to_lower(token.resource) != expected)
            return error(401, 401002, "SAS token is for '" + token.resource + "', not '" + expected + "'");
        if (token.expiry < unix_seconds(now()))
            return error(401, 401002, "SAS token expired at " + utc_timestamp(std::chrono::system_clock::time_point(std::chrono::seconds(token.expiry))) +
                                          " (service time " + utc_timestamp(now()) + ")");
        if (auto individual = find_enrollment(registration_id, false)) {
            const Enrollment& e = *individual;
            if (e.type == "symmetricKey") {
                for (const auto& key : e.keys)
                    if (sas_signature_matches(token, key)) return Authenticated{individual, "symmetricKey", key, ""};
                return error(401, 401002, "SAS token signature does not match the enrollment's keys");
            }
            if (e.type == "tpm") {
                // The pending challenge, answered now (its key becomes the device's), or the one answered before.
                std::optional<TpmState> pending = find_tpm(registration_id, "pending");
                if (pending && wall_ms() >= pending->expires_ms) {
                    drop_tpm(registration_id, "pending");
                    pending.reset();
                }
                if (pending && sas_signature_matches(token, pending->hmac_key)) {
                    store_tpm(registration_id, "answered", *pending);
                    drop_tpm(registration_id, "pending");
                    return Authenticated{individual, "tpm", pending->hmac_key, "", pending->blob};
                }
                if (auto a = find_tpm(registration_id, "answered"); a && sas_signature_matches(token, a->hmac_key))
                    return Authenticated{individual, "tpm", a->hmac_key, "", a->blob};
                return error(401, 401002, "SAS token signature does not match the key of a TPM challenge of '" + registration_id + "'");
            }
            // An individual enrollment decides for its ID: no group may register it another way.
            return error(401, 401002, "registration '" + registration_id + "' has an individual " + e.type +
                                          " enrollment; a SAS token cannot authenticate it");
        }
        for (const auto& group : groups_of_type("symmetricKey")) {
            for (const auto& key : group->keys) {
                const std::string device_key = base64_decode(derive_device_key(base64_encode(key), registration_id), "derived key");
                if (sas_signature_matches(token, device_key)) return Authenticated{group, "symmetricKey", device_key, ""};
            }
        }
        return error(401, 401002, "SAS token signature matches no enrollment for '" + registration_id + "'");
    }
    if (!request.peer_chain.empty()) {
        X509* leaf = request.peer_chain.front().get();
        const std::string cn = subject_common_name(leaf);
        if (cn != registration_id)
            return error(401, 401002, "registration ID '" + registration_id + "' differs from the certificate's CN '" + cn + "'");
        if (auto individual = find_enrollment(registration_id, false)) {
            if (individual->type != "x509")
                return error(401, 401002, "registration '" + registration_id + "' has an individual " + individual->type +
                                              " enrollment; a client certificate cannot authenticate it");
            const std::string thumbprint = certificate_thumbprint(leaf);
            for (const auto& cert : individual->certificates) {
                if (certificate_thumbprint(cert.get()) != thumbprint) continue;
                const std::string problem = verify_certificate(leaf, {}, {cert.get()});
                if (!problem.empty()) return error(401, 401002, "client certificate of '" + registration_id + "': " + problem);
                return Authenticated{individual, "x509", "", thumbprint};
            }
            return error(401, 401002, "client certificate is not the one enrolled for '" + registration_id + "'");
        }
        std::vector<X509*> chain;
        for (size_t i = 1; i < request.peer_chain.size(); ++i) chain.push_back(request.peer_chain[i].get());
        std::string last_problem = "no X.509 enrollment group";
        for (const auto& group : groups_of_type("x509")) {
            std::vector<X509*> anchors;
            for (const auto& c : group->certificates) anchors.push_back(c.get());
            last_problem = verify_certificate(leaf, chain, anchors);
            if (last_problem.empty()) return Authenticated{group, "x509", "", certificate_thumbprint(leaf)};
        }
        return error(401, 401002, "Invalid certificate: no enrollment for '" + registration_id + "' accepts it (" + last_problem + ")");
    }
    return error(401, 401002, "Unauthorized: no SAS token, client certificate or TPM endorsement key");
}

std::variant<DpsService::Authenticated, http::HttpResponse> DpsService::authenticate_tpm(const http::HttpRequest& request,
                                                                                   const std::string& registration_id,
                                                                                   const json& tpm) {
    const auto enrollment = find_enrollment(registration_id, false);
    if (!enrollment || enrollment->type != "tpm")
        return error(401, 401002, "Unauthorized: no TPM enrollment for '" + registration_id + "'");
    if (!tpm.is_object() || !tpm.contains("endorsementKey") || !tpm["endorsementKey"].is_string())
        return error(400, 400004, "tpm.endorsementKey missing");
    std::string ek;
    try {
        ek = base64_decode(tpm["endorsementKey"].get<std::string>(), "tpm.endorsementKey");
    } catch (const Error& e) {
        return error(400, 400004, e.what());
    }
    if (ek != enrollment->endorsement_key) return error(400, 400004, "Endorsement key is invalid, or does not match the Enrollment.");
    if (!request.header("authorization").empty()) {
        auto auth = authenticate(request, registration_id, nullptr);
        return auth;
    }
    if (!tpm.contains("storageRootKey") || !tpm["storageRootKey"].is_string()) return error(400, 400004, "tpm.storageRootKey missing");
    if (!tpm_maker_) return error(501, 501000, "this service has no TPM challenge support");
    std::string srk;
    try {
        srk = base64_decode(tpm["storageRootKey"].get<std::string>(), "tpm.storageRootKey");
    } catch (const Error& e) {
        return error(400, 400004, e.what());
    }
    auto challenge_reply = [](const std::string& blob) {
        return http::HttpResponse::json(401, {{"message", "Authorization required, resend request using supplied key"},
                                        {"authenticationKey", base64_encode(blob)},
                                        {"unencryptedAuthenticationKey", nullptr},
                                        {"keyName", "registration"}});
    };
    // The EK is public, so anyone may ask. A pending challenge stays until answered or expired:
    // asked again for the same SRK (a device that lost the reply), it is handed out again; for
    // another SRK, the request is refused (409) until then.
    const int64_t now = wall_ms();
    if (auto p = find_tpm(registration_id, "pending")) {
        if (now < p->expires_ms) {
            if (p->srk == srk) return challenge_reply(p->blob);
            const int64_t left = (p->expires_ms - now + 999) / 1000;
            http::HttpResponse r = error(409, 409001, "a TPM challenge for '" + registration_id +
                                                    "' is in progress for another storage root key; it stays until answered or for " +
                                                    std::to_string(left) + " s");
            r.headers.emplace_back("Retry-After", std::to_string(left));
            return r;
        }
        drop_tpm(registration_id, "pending");
    }
    TpmChallenge challenge;
    try {
        challenge = tpm_maker_(ek, srk);
    } catch (const Error& e) {
        return error(400, 400004, std::string("cannot build the TPM challenge: ") + e.what());
    }
    store_tpm(registration_id, "pending", {challenge.hmac_key, challenge.blob, srk, now + int64_t(config_.tpm_challenge_ttl_seconds) * 1000});
    return challenge_reply(challenge.blob);
}

json DpsService::assign(const Authenticated& auth, const std::string& registration_id, const json& body) {
    const Enrollment& e = *auth.enrollment;
    const std::string time = utc_timestamp(now());
    json state = {{"registrationId", registration_id}, {"createdDateTimeUtc", time}, {"lastUpdatedDateTimeUtc", time}, {"etag", new_id()}};
    const std::optional<json> previous = find_registration(registration_id);
    if (previous && previous->contains("createdDateTimeUtc")) state["createdDateTimeUtc"] = (*previous)["createdDateTimeUtc"];
    if (!e.enabled) {
        state["status"] = "disabled";
        state["errorCode"] = 401004;
        state["errorMessage"] = std::string("enrollment ") + (e.group ? "group '" : "'") + e.id + "' is disabled";
        store_registration(registration_id, state);
        return {{"status", "disabled"}, {"registrationState", state}};
    }
    const std::vector<std::string>& hubs = e.hubs.empty() ? hubs_ : e.hubs;
    if (hubs.empty()) {
        state["status"] = "failed";
        state["errorCode"] = 400208;
        state["errorMessage"] = "no IoT hub to assign: neither the enrollment nor the service names one";
        store_registration(registration_id, state);
        return {{"status", "failed"}, {"registrationState", state}};
    }
    const Digest h = sha256(registration_id);
    const uint32_t n = uint32_t(h[0]) << 24 | uint32_t(h[1]) << 16 | uint32_t(h[2]) << 8 | h[3];
    const std::string hub = hubs[n % hubs.size()];
    std::string substatus = "initialAssignment";
    if (previous && previous->contains("assignedHub") && (*previous)["assignedHub"] != hub) substatus = "deviceDataMigrated";
    state["assignedHub"] = hub;
    state["deviceId"] = e.device_id.empty() || e.group ? registration_id : e.device_id;
    state["status"] = "assigned";
    state["substatus"] = substatus;
    if (auth.method == "tpm") {
        state["tpm"] = {{"authenticationKey", base64_encode(auth.tpm_blob)}};
    } else if (auth.method == "x509") {
        state["x509"] = e.group ? json{{"enrollmentGroupId", e.id}} : json::object();
    } else {
        state["symmetricKey"] = e.group ? json{{"enrollmentGroupId", e.id}} : json::object();
    }
    if (body.contains("payload")) state["payload"] = {{"msg", "custom allocation payload received"}, {"request_payload", body["payload"]}};
    db_.prepare("INSERT OR REPLACE INTO hub_device (device_id, hub, registration_id, method, key, thumbprint, status) VALUES (?, ?, ?, ?, ?, ?, 'enabled')")
        .bind(1, state["deviceId"].get<std::string>())
        .bind(2, hub)
        .bind(3, registration_id)
        .bind(4, auth.method)
        .bind_blob(5, auth.key)
        .bind(6, auth.thumbprint)
        .run();
    if (!e.initial_twin.is_null()) state["initialTwin"] = e.initial_twin;
    store_registration(registration_id, state);
    return {{"status", "assigned"}, {"registrationState", state}};
}

http::HttpResponse DpsService::handle_admin(const http::HttpRequest& request, const std::vector<std::string>& parts) {
    if (config_.admin_token.empty()) return error(404, 404000, "the admin API is off (no admin token configured)");
    // Compared in constant time, as digests: neither the token's bytes nor its length show in the timing.
    const Digest given = sha256(request.header("authorization")), expected = sha256("Bearer " + config_.admin_token);
    if (CRYPTO_memcmp(given.data(), expected.data(), given.size()) != 0) return error(401, 401000, "admin API: wrong or missing bearer token");
    auto body = [&] {
        try {
            return json::parse(request.body);
        } catch (const json::exception& e) {
            fail(std::string("admin API: request body is not valid JSON: ") + e.what());
        }
    };
    const std::string what = parts.size() >= 2 ? parts[1] : "";
    if (what == "enrollments" || what == "enrollmentGroups") {
        const bool group = what == "enrollmentGroups";
        if (parts.size() == 2 && request.method == "GET") {
            std::lock_guard lock(mutex_);
            json list = json::array();
            store::Statement s = db_.prepare("SELECT id, document FROM enrollment WHERE kind = ? ORDER BY id");
            s.bind(1, group ? "group" : "individual");
            while (s.step()) list.push_back(parse_stored(s.text(1), "enrollment '" + s.text(0) + "'"));
            return http::HttpResponse::json(200, list);
        }
        if (parts.size() != 3) return error(404, 404000, "no such resource: " + request.path);
        if (request.method == "PUT") {
            json document = body();
            if (!document.is_object()) fail("admin API: an enrollment must be a JSON object");
            document[group ? "enrollmentGroupId" : "registrationId"] = parts[2];
            group ? put_enrollment_group(document) : put_enrollment(document);
            return http::HttpResponse::json(200, document);
        }
        if (request.method == "GET") {
            std::lock_guard lock(mutex_);
            store::Statement s = db_.prepare("SELECT document FROM enrollment WHERE kind = ? AND id = ?");
            s.bind(1, group ? "group" : "individual").bind(2, parts[2]);
            if (!s.step()) return error(404, 404000, "no enrollment '" + parts[2] + "'");
            return http::HttpResponse::json(200, parse_stored(s.text(0), "enrollment '" + parts[2] + "'"));
        }
        if (request.method == "DELETE") {
            bool removed = group ? remove_enrollment_group(parts[2]) : remove_enrollment(parts[2]);
            if (!removed) return error(404, 404000, "no enrollment '" + parts[2] + "'");
            http::HttpResponse r;
            r.status = 204;
            return r;
        }
        return error(405, 405000, "admin API: " + request.method + " is not allowed on " + request.path);
    }
    if (what == "devices") {  // the simulated hub's view of assigned devices
        if (parts.size() == 2 && request.method == "GET") return http::HttpResponse::json(200, hub_devices());
        if (parts.size() == 3 && request.method == "PUT") {
            json document = body();
            if (!document.contains("hubStatus") || !document["hubStatus"].is_string()) fail("admin API: devices: the body needs \"hubStatus\"");
            set_hub_status(parts[2], document["hubStatus"].get<std::string>());
            return http::HttpResponse::json(200, {{"deviceId", parts[2]}, {"hubStatus", document["hubStatus"]}});
        }
        return error(405, 405000, "admin API: " + request.method + " is not allowed on " + request.path);
    }
    if (what == "faults" && request.method == "POST") {
        json document = body();
        auto number = [&](const char* key, int dflt) {
            if (!document.contains(key)) return dflt;
            const json& v = document[key];
            if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 100000)
                fail(std::string("admin API: faults.") + key + " must be an integer from 0 to 100000");
            return static_cast<int>(v.get<int64_t>());
        };
        const int status = number("status", 500), count = number("count", 1), retry_after = number("retryAfter", 1);
        if (status < 400 || status > 599) fail("admin API: faults.status must be an HTTP error status (400-599)");
        inject_faults(status, count, retry_after);
        http::HttpResponse r;
        r.status = 204;
        return r;
    }
    if (what == "requests") {
        if (request.method == "GET") return http::HttpResponse::json(200, request_log());
        if (request.method == "DELETE") {
            std::lock_guard lock(mutex_);
            log_.clear();
            http::HttpResponse r;
            r.status = 204;
            return r;
        }
    }
    if (what == "registrations" && request.method == "GET") return http::HttpResponse::json(200, registrations());
    return error(404, 404000, "no such admin resource: " + request.method + " " + request.path);
}

}  // namespace cairn::provisioning
