#include "attestation/agent.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "attestation/quote.hpp"
#include "attestation/verify.hpp"
#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/text.hpp"
#include "common/toml_reader.hpp"
#include "http/client.hpp"
#include "partitions/layout.hpp"
#include "tpm/credential.hpp"

namespace cairn::attestation {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool valid_device_id(const std::string& id) {
    if (id.empty() || id.size() > 128) return false;
    for (char c : id)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == ':')) return false;
    return true;
}

long long integer(const TomlReader& r, const toml::table& t, const std::string& prefix, const char* name, long long min, long long max,
                  long long fallback) {
    return r.integer(t, prefix, name, min, max).value_or(fallback);
}

fs::path existing_file(const TomlReader& r, const toml::table& t, const char* name, const fs::path& fallback) {
    const auto s = r.string(t, "", name);
    if (!s) return fallback;
    if (s->empty() || (*s)[0] != '/') r.error(*t.get(name), name, "must be an absolute path");
    return *s;
}

}  // namespace

AgentConfig parse_agent_config(const std::string& text, const fs::path& file) {
    const toml::table root = TomlReader::parse(text, file);
    TomlReader r(file);
    r.only(root, "", {"verifier_url", "trust_bundle", "device_id", "interval_sec", "tcti", "hierarchy_authorization", "event_log", "reference",
                      "reference_signature", "state_dir", "timeout_sec", "retries"});
    AgentConfig c;
    c.file = file;
    c.verifier_url = r.required_string(root, "", "verifier_url");
    if (c.verifier_url.rfind("https://", 0) != 0 || c.verifier_url.size() <= 8)
        r.error(*root.get("verifier_url"), "verifier_url", "must be an https:// URL (the verifier is only spoken to over verified TLS)");
    while (c.verifier_url.size() > 8 && c.verifier_url.back() == '/') c.verifier_url.pop_back();
    c.trust_bundle = existing_file(r, root, "trust_bundle", {});
    if (!c.trust_bundle.empty() && !fs::is_regular_file(c.trust_bundle))
        r.error(*root.get("trust_bundle"), "trust_bundle", "no such file: " + c.trust_bundle.string());
    c.device_id = r.required_string(root, "", "device_id");
    if (!valid_device_id(c.device_id))
        r.error(*root.get("device_id"), "device_id", "'" + c.device_id + "' is not a device ID (1-128 of a-z 0-9 - . _ :)");
    c.interval = std::chrono::seconds(integer(r, root, "", "interval_sec", 60, 7 * 86400, 8 * 3600));
    if (auto tcti = r.string(root, "", "tcti")) {
        if (tcti->empty()) r.error(*root.get("tcti"), "tcti", "must not be empty");
        c.tpm.tcti = *tcti;
    }
    if (const toml::node* n = root.get("hierarchy_authorization")) {
        if (!n->is_table()) r.error(*n, "hierarchy_authorization", "must be a table (endorsement, owner)");
        const toml::table& t = *n->as_table();
        r.only(t, "hierarchy_authorization", {"endorsement", "owner"});
        c.tpm.endorsement_auth = r.string(t, "hierarchy_authorization", "endorsement").value_or("");
        c.tpm.owner_auth = r.string(t, "hierarchy_authorization", "owner").value_or("");
    }
    c.event_log = existing_file(r, root, "event_log", default_event_log);
    c.reference = existing_file(r, root, "reference", {});
    c.reference_signature = existing_file(r, root, "reference_signature", {});
    if (c.reference.empty() != c.reference_signature.empty()) {
        const char* given = c.reference.empty() ? "reference_signature" : "reference";
        r.error(*root.get(given), given, "reference and reference_signature go together (neither: the booted slot's ESP)");
    }
    c.state_dir = existing_file(r, root, "state_dir", default_agent_state_dir);
    c.timeout_sec = static_cast<int>(integer(r, root, "", "timeout_sec", 1, 600, 30));
    c.retries = static_cast<int>(integer(r, root, "", "retries", 0, 10, 3));
    return c;
}

AgentConfig load_agent_config(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(file, ec)) fail(file.string() + ": no such file (the attestation agent's configuration)");
    return parse_agent_config(read_file(file), file);
}

json AgentEvidence::to_json() const {
    return {{"nonce", base64_encode(nonce)},          {"quote", base64_encode(quote)},
            {"signature", base64_encode(signature)},  {"eventLog", base64_encode(event_log)},
            {"reference", base64_encode(reference)},  {"referenceSignature", base64_encode(reference_signature)}};
}

namespace {

// cairn.slot=a|b on the kernel command line (what cairn-init and cairn-updated go by).
char booted_slot(const fs::path& cmdline) {
    std::istringstream in(read_file(cmdline));
    std::string word;
    while (in >> word)
        if (word == "cairn.slot=a" || word == "cairn.slot=b") return word.back();
    fail(cmdline.string() + ": no cairn.slot=a or cairn.slot=b (not a Cairn boot?): cannot tell which slot's reference document to send");
}

// The block device whose partition name is `label`, from the kernel's uevent files (no udev
// needed). Two partitions with that label (a second Cairn disk plugged in) are refused rather
// than guessed between.
fs::path partition_by_label(const std::string& label) {
    std::vector<fs::path> found;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/sys/class/block", ec)) {
        std::ifstream in(entry.path() / "uevent");
        std::string line, devname, partname;
        while (std::getline(in, line)) {
            if (line.rfind("DEVNAME=", 0) == 0) devname = line.substr(8);
            if (line.rfind("PARTNAME=", 0) == 0) partname = line.substr(9);
        }
        if (partname == label && !devname.empty()) found.push_back(fs::path("/dev") / devname);
    }
    if (found.empty()) fail("no partition labelled " + label + " (/sys/class/block): cannot read the booted slot's reference document");
    if (found.size() > 1) fail("more than one partition labelled " + label + " (" + found[0].string() + ", " + found[1].string() + "): which is the booted one is ambiguous");
    return found[0];
}

// The ESP mounted read-only at a private place for as long as the object lives.
class EspMount {
public:
    explicit EspMount(const fs::path& device) : dir_("/run/cairn/attestation/esp") {
        fs::create_directories(dir_);
        ::chmod(dir_.parent_path().c_str(), 0700);
        if (::mount(device.c_str(), dir_.c_str(), "vfat", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "") != 0)
            fail_errno("mounting " + device.string() + " (the booted ESP) read-only at " + dir_.string());
    }
    EspMount(const EspMount&) = delete;
    EspMount& operator=(const EspMount&) = delete;
    ~EspMount() { ::umount2(dir_.c_str(), MNT_DETACH); }
    const fs::path& dir() const { return dir_; }

private:
    fs::path dir_;
};

}  // namespace

SignedReference read_signed_reference(const AgentConfig& config) {
    if (!config.reference.empty()) return {read_file(config.reference), read_file(config.reference_signature)};
    const char slot = booted_slot(config.cmdline);
    const fs::path device = partition_by_label(partitions::label_for(partitions::Role::Esp, slot));
    EspMount esp(device);
    return {read_file(esp.dir() / "EFI/BOOT/reference.json"), read_file(esp.dir() / "EFI/BOOT/reference.json.sig")};
}

std::string read_event_log(const AgentConfig& config) {
    std::error_code ec;
    if (config.event_log == default_event_log && !fs::exists(config.event_log, ec)) {
        // securityfs is where the kernel exposes the firmware's log; a system without systemd may
        // not have mounted it. EBUSY: it was mounted meanwhile; the read below tells the rest.
        if (::mount("securityfs", "/sys/kernel/security", "securityfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "") != 0 && errno != EBUSY)
            fail_errno("mounting securityfs at /sys/kernel/security (for the TPM event log)");
    }
    return read_file(config.event_log);
}

AgentEvidence collect_evidence(tpm::Tpm& tpm, const AgentConfig& config, const std::string& nonce, const std::vector<unsigned>& pcrs) {
    AgentEvidence e;
    e.nonce = nonce;
    e.ak_public = tpm.attestation_key();
    // The firmware's log is complete once Linux runs; later PCR 11 extensions by userspace are
    // not in it, which the verifier allows for (attestation/verify.hpp), so the order of the
    // quote and the read does not matter.
    const tpm::Tpm::Quote q = tpm.quote(nonce, pcrs);
    e.quote = q.attest;
    e.signature = q.signature;
    e.event_log = read_event_log(config);
    const SignedReference ref = read_signed_reference(config);
    e.reference = ref.document;
    e.reference_signature = ref.signature;
    return e;
}

json unknown_record(const AgentConfig& config, const std::string& why) {
    std::string slot;
    try {
        slot = std::string(1, booted_slot(config.cmdline));
    } catch (const std::exception&) {
    }
    return {{"deviceId", config.device_id},
            {"attestSecureBootEnabled", "Unknown"},
            {"attestationCertValidated", "Unknown"},
            {"bootIntegrityValidated", "Unknown"},
            {"healthStatus", "Unknown"},
            {"errorMessage", why},
            {"linuxKernelVersion", ""},
            {"provisioningState", "Failed"},
            {"timestamp", utc_timestamp(std::chrono::system_clock::now())},
            {"slot", slot},
            {"imageVersion", ""},
            {"failedChecks", json::array()}};
}

namespace {

// Why a round stopped; becomes the Unknown record's errorMessage.
struct RoundFailure : Error {
    using Error::Error;
};

class VerifierClient {
public:
    VerifierClient(const AgentConfig& config, const std::function<void(const std::string&)>& log) : config_(config), log_(log) {}

    // POST `path` (under /attest/v1/devices/{id}) with `body`; the parsed JSON of a 200 reply.
    // Transport errors and 5xx are tried again with a doubling delay; anything else that is not
    // a 200 with a JSON object is a RoundFailure naming the URL, the status and the verifier's
    // error code and message.
    json post(const std::string& path, const json& body) {
        http::HttpsRequest request;
        request.method = "POST";
        request.url = config_.verifier_url + "/attest/v1/devices/" + config_.device_id + path;
        request.body = body.dump();
        request.headers = {"Content-Type: application/json", "Accept: application/json"};
        request.trust_bundle = config_.trust_bundle;
        request.timeout_ms = config_.timeout_sec * 1000;
        request.connect_timeout_ms = std::max(1000, request.timeout_ms / 3);
        request.user_agent = "cairn-attestd";
        auto delay = config_.retry_delay;
        for (int attempt = 0;; ++attempt) {
            auto result = client_.exchange(request);
            std::string problem;
            if (auto* t = std::get_if<http::TransportError>(&result)) {
                // Not retryable: TLS verification or the URL itself failed, which waiting does not mend.
                if (!t->retryable) throw RoundFailure("cannot talk to the verifier: " + t->message);
                if (attempt >= config_.retries) throw RoundFailure("verifier unreachable: " + t->message);
                problem = t->message;
            } else {
                const http::HttpsReply& reply = std::get<http::HttpsReply>(result);
                if (reply.status >= 500 && attempt < config_.retries) {
                    problem = "HTTP " + std::to_string(reply.status);
                } else {
                    return judge(request.url, reply);
                }
            }
            if (log_) log_("POST " + request.url + ": " + problem + "; trying again in " + std::to_string(delay.count()) + " ms");
            std::this_thread::sleep_for(delay);
            delay *= 2;
        }
    }

private:
    static json judge(const std::string& url, const http::HttpsReply& reply) {
        json parsed = json::parse(reply.body, nullptr, false);
        if (reply.status != 200) {
            std::string detail;
            if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_string()) {
                detail = parsed["error"].get<std::string>();
                if (parsed.contains("message") && parsed["message"].is_string()) detail += ": " + parsed["message"].get<std::string>();
            } else {
                detail = reply.body.empty() ? "empty reply" : "not a JSON error reply";
            }
            throw RoundFailure("POST " + url + ": HTTP " + std::to_string(reply.status) + " (" + first_line(detail) + ")");
        }
        if (!parsed.is_object()) throw RoundFailure("POST " + url + ": HTTP 200 with a reply that is not a JSON object");
        return parsed;
    }
    static std::string first_line(const std::string& s) {
        const std::string line = s.substr(0, s.find('\n'));
        return line.size() > 200 ? line.substr(0, 200) + "..." : line;
    }

    const AgentConfig& config_;
    const std::function<void(const std::string&)>& log_;
    http::Client client_;
};

std::string b64_field(const json& reply, const char* name, const std::string& what) {
    if (!reply.contains(name) || !reply[name].is_string()) throw RoundFailure(what + ": no string \"" + name + "\"");
    try {
        return base64_decode(reply[name].get<std::string>(), what + " \"" + name + "\"");
    } catch (const Error& e) {
        throw RoundFailure(e.what());
    }
}

std::vector<unsigned> pcr_list(const json& reply, const std::string& what) {
    if (!reply.contains("pcrs") || !reply["pcrs"].is_array() || reply["pcrs"].empty()) throw RoundFailure(what + ": no \"pcrs\" list");
    std::vector<unsigned> pcrs;
    for (const auto& p : reply["pcrs"]) {
        if (!p.is_number_unsigned() || p.get<unsigned long>() > 23) throw RoundFailure(what + ": \"pcrs\" holds " + p.dump() + " (PCRs are 0-23)");
        pcrs.push_back(p.get<unsigned>());
    }
    return pcrs;
}

// A status record as the verifier sends it: the fields `cairnctl attest status` shows must be
// there and of the right kind, so that a misbehaving verifier cannot fill the status file with
// anything.
void check_record(const json& record, const std::string& what) {
    for (const char* name : {"healthStatus", "timestamp", "errorMessage"})
        if (!record.contains(name) || !record[name].is_string()) throw RoundFailure(what + ": the status record has no string \"" + name + "\"");
    const std::string health = record["healthStatus"].get<std::string>();
    if (health != "Healthy" && health != "Unhealthy" && health != "Unknown")
        throw RoundFailure(what + ": healthStatus \"" + health + "\" is not Healthy, Unhealthy or Unknown");
}

}  // namespace

json attest_once(const AgentConfig& config, const std::function<void(const std::string&)>& log) {
    try {
        VerifierClient verifier(config, log);
        tpm::Tpm tpm(config.tpm);
        const std::string ak = tpm.attestation_key();
        // A key someone else left at the AK's handle is used as it is; say so here when it is not
        // an attestation key, rather than let the verifier refuse it.
        parse_ak_public(ak, "the key at persistent handle 0x81010002");
        const std::string nonce_url = config.verifier_url + "/attest/v1/devices/" + config.device_id + "/nonce";
        json nonce_reply = verifier.post("/nonce", {{"attestationKey", base64_encode(ak)}});
        const std::string nonce = b64_field(nonce_reply, "nonce", nonce_url);
        if (nonce.empty() || nonce.size() > 64) throw RoundFailure(nonce_url + ": a nonce of " + std::to_string(nonce.size()) + " bytes (1-64)");
        const std::vector<unsigned> pcrs = pcr_list(nonce_reply, nonce_url);
        if (!nonce_reply.contains("attestationKeyBound") || !nonce_reply["attestationKeyBound"].is_boolean())
            throw RoundFailure(nonce_url + ": no boolean \"attestationKeyBound\"");
        if (!nonce_reply["attestationKeyBound"].get<bool>()) {
            if (log) log("binding the attestation key to the EK at the verifier");
            const std::string ak_url = config.verifier_url + "/attest/v1/devices/" + config.device_id + "/ak";
            json challenge = verifier.post("/ak", {{"endorsementKey", base64_encode(tpm.endorsement_key())}, {"attestationKey", base64_encode(ak)}});
            const std::string secret = tpm.activate_attestation_key(b64_field(challenge, "credentialBlob", ak_url),
                                                                    b64_field(challenge, "encryptedSecret", ak_url));
            const json bound = verifier.post("/ak/activate", {{"secret", base64_encode(secret)}});
            // The verifier names the key it bound; another Name means it bound something else.
            const std::string name = tpm::object_name(tpm::unmarshal_public(ak, "the attestation key"));
            const std::string expected = to_hex({reinterpret_cast<const uint8_t*>(name.data()), name.size()});
            if (!bound.contains("attestationKeyName") || !bound["attestationKeyName"].is_string() ||
                to_lower(bound["attestationKeyName"].get<std::string>()) != expected)
                throw RoundFailure(ak_url + "/activate: the verifier bound " +
                                   (bound.contains("attestationKeyName") ? bound["attestationKeyName"].dump() : std::string("no key name")) +
                                   ", not this attestation key (" + expected + ")");
        }
        if (log) log("quoting PCRs with the verifier's nonce");
        const AgentEvidence evidence = collect_evidence(tpm, config, nonce, pcrs);
        json record = verifier.post("/evidence", evidence.to_json());
        check_record(record, config.verifier_url + "/attest/v1/devices/" + config.device_id + "/evidence");
        return record;
    } catch (const std::exception& e) {
        return unknown_record(config, e.what());
    }
}

fs::path status_file(const AgentConfig& config) { return config.state_dir / "status.json"; }

json read_status(const fs::path& state_dir) {
    const fs::path file = state_dir / "status.json";
    std::error_code ec;
    if (!fs::exists(file, ec)) return nullptr;
    json status = json::parse(read_file(file), nullptr, false);
    if (!status.is_object() || !status.contains("record") || !status["record"].is_object())
        fail(file.string() + ": not a status file (no \"record\" object); the next round rewrites it");
    return status;
}

json run_round(const AgentConfig& config, const std::function<void(const std::string&)>& log) {
    fs::create_directories(config.state_dir);
    const fs::path lock_path = config.state_dir / ".lock";
    UniqueFd lock = open_file(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (::flock(lock.get(), LOCK_EX) != 0) fail_errno("locking " + lock_path.string());
    json record = attest_once(config, log);
    json last_good = nullptr;
    try {
        json previous = read_status(config.state_dir);
        if (previous.is_object() && previous.contains("lastGood")) last_good = previous["lastGood"];
    } catch (const Error& e) {
        if (log) log(e.what());
    }
    const std::string health = record["healthStatus"].get<std::string>();
    if (health == "Healthy") last_good = record;
    json status = {{"record", record},
                   {"lastGood", last_good},
                   {"lastAttempt", {{"time", utc_timestamp(std::chrono::system_clock::now())}, {"outcome", health}}}};
    write_file_atomic(status_file(config), status.dump(2) + "\n", 0644);
    return record;
}

namespace {

std::optional<int64_t> parse_timestamp(const json& record) {
    if (!record.is_object() || !record.contains("timestamp") || !record["timestamp"].is_string()) return std::nullopt;
    // "2026-12-04T12:00:00Z", with or without fractions of a second (the verifier's and ours).
    const std::string text = record["timestamp"].get<std::string>();
    std::tm tm{};
    int used = 0;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return std::nullopt;
    std::string rest = text.substr(static_cast<size_t>(used));
    if (!rest.empty() && rest[0] == '.') {
        size_t digits = 1;
        while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
        rest = rest.substr(digits);
    }
    if (rest != "Z") return std::nullopt;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<int64_t>(::timegm(&tm));
}

json with_age(json record, std::chrono::system_clock::time_point now) {
    if (!record.is_object()) return record;
    const auto t = parse_timestamp(record);
    record["age"] = t ? json(std::max<int64_t>(0, unix_seconds(now) - *t)) : json(nullptr);
    return record;
}

}  // namespace

json status_view(const json& status, std::chrono::system_clock::time_point now, std::chrono::seconds interval) {
    json view = with_age(status.at("record"), now);
    view["stale"] = !view["age"].is_number() || view["age"].get<double>() > static_cast<double>(interval.count()) * 1.1;
    view["lastGood"] = status.contains("lastGood") ? with_age(status["lastGood"], now) : json(nullptr);
    if (status.contains("lastAttempt")) view["lastAttempt"] = status["lastAttempt"];
    return view;
}

}  // namespace cairn::attestation
