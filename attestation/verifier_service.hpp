// The protocol logic of cairn-verifier (docs/attestation.md is the contract): enrolment of devices
// by their EK (admin API, and an enrollments file at start), AK binding by credential activation
// (TPM2_MakeCredential in software, tpm/credential.hpp), single-use nonces, evidence judged by
// verify_evidence (attestation/verify.hpp) against a reference document whose CMS signature must
// chain to the update CA, and the status records with their history and a stale list. State is
// attestation/verifier_store.hpp's SQLite file. Every error reply is {"error", "message"}.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "attestation/verifier_store.hpp"
#include "attestation/verify.hpp"
#include "http/server.hpp"

namespace cairn::attestation {

// An image the verifier accepts (--policy FILE): its name (the reference document's `image`, the
// recipe's name) and the oldest version still accepted (empty: any), compared as
// common/versions.hpp orders versions. With a policy, a device running an image it does not list,
// or an older version, is Unhealthy (image-not-allowed, image-too-old) however sound its boot:
// a fleet retires a vulnerable release by raising the minimum. Without one, every image whose
// reference document is signed under the update CA is accepted.
struct AllowedImage {
    std::string image;
    std::string minimum_version;
};
// {"images": [{"image": "cairn-minimal", "minimumVersion": "0.2.0"}, ...]}: at least one image,
// each named once; minimumVersion optional. Throws Error naming `what` and the entry at fault.
std::vector<AllowedImage> parse_image_policy(const nlohmann::json& document, const std::string& what);
std::vector<AllowedImage> load_image_policy_file(const std::filesystem::path& file);
// The failed checks `allowed` finds for an image and version (none when it is accepted; an empty
// `allowed`: no policy, everything is).
std::vector<FailedCheck> check_image_policy(const std::vector<AllowedImage>& allowed, const std::string& image, const std::string& version);

struct VerifierConfig {
    std::filesystem::path state;         // the SQLite file
    std::filesystem::path update_ca;     // PEM: the anchor reference documents' signatures must chain to
    std::string admin_token;             // empty: the admin API (enrolment, status, history, stale) answers 404
    int nonce_ttl_seconds = 120;
    int challenge_ttl_seconds = 300;     // an AK challenge must be answered within this
    size_t max_outstanding_nonces = 8;   // per device; past it the oldest unused one is dropped
    size_t history_limit = 100;          // status records kept per device
    std::vector<unsigned> pcrs = Policy{}.pcrs;
    std::vector<AllowedImage> allowed_images;  // empty: every signed image (no --policy)
    // The clock (tests move it); default the system's.
    std::function<std::chrono::system_clock::time_point()> clock;
};

// {"devices": [{"deviceId": ..., "endorsementKey": "<b64>"}]}; throws Error naming `what` and the entry at fault.
struct Enrollment {
    std::string device_id, endorsement_key;  // raw TPM2B_PUBLIC
};
std::vector<Enrollment> parse_enrollments(const nlohmann::json& document, const std::string& what);
// Reads and parses an enrollments file (JSON). Throws Error naming the file.
std::vector<Enrollment> load_enrollments_file(const std::filesystem::path& file);

// DPS's rule for registration IDs: 1 to 128 of a-z 0-9 - . _ :
bool is_valid_device_id(std::string_view id);

class VerifierService {
public:
    explicit VerifierService(VerifierConfig config);

    http::HttpResponse handle(const http::HttpRequest& request);

    // Enrols (or re-enrols with another EK: the old binding goes). Throws Error for a bad ID or EK.
    void enroll(const std::string& device_id, const std::string& ek_public);
    bool remove(const std::string& device_id);

private:
    std::chrono::system_clock::time_point now() const;
    int64_t now_seconds() const;
    http::HttpResponse route(const http::HttpRequest& request);
    http::HttpResponse handle_admin_device(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse bind_ak(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse activate_ak(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse issue_nonce(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse evidence(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse status(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse history(const http::HttpRequest& request, const std::string& device_id);
    http::HttpResponse stale(const http::HttpRequest& request);
    // nullopt when the request carries the admin token, else the reply refusing it.
    std::optional<http::HttpResponse> check_admin(const http::HttpRequest& request) const;

    VerifierConfig config_;
    std::mutex mutex_;
    VerifierStore store_;
};

}  // namespace cairn::attestation
