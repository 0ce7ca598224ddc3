#include "tests/support/host_verifier.hpp"

#include <gtest/gtest.h>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/qemu_support.hpp"

namespace cairn::test {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr const char* admin_token = "admin-token";
}

HostVerifier::HostVerifier(const fs::path& dir) : dir_(dir), pki_(dir / "pki") {
    write_file_atomic(dir_ / "admin-token", std::string(admin_token) + "\n", 0600);
    port_ = free_port();
    start();
}

HostVerifier::~HostVerifier() {
    if (recorder_) recorder_->stop();
}

void HostVerifier::start() {
    program_ = std::make_unique<VerifierProgram>(
        std::vector<std::string>{"--cert", (pki_ / "server-chain.pem").string(), "--key", (pki_ / "server.key").string(), "--update-ca",
                                 (source_dir() / "recipes/keys/update-ca.pem").string(), "--state", (dir_ / "verifier.db").string(),
                                 "--admin-token-file", (dir_ / "admin-token").string(), "--port", std::to_string(port_)},
        dir_ / "verifier.log");
}

void HostVerifier::stop() {
    if (program_) program_->process->stop(5000);
    program_.reset();
}

http::HttpsReply HostVerifier::call(const std::string& method, const std::string& path, const std::string& body, bool admin) {
    http::HttpsRequest r;
    r.method = method;
    r.url = "https://127.0.0.1:" + std::to_string(port_) + path;
    r.body = body;
    r.trust_bundle = pki_ / "root.pem";
    r.headers = {"Content-Type: application/json"};
    if (admin) r.headers.push_back(std::string("Authorization: Bearer ") + admin_token);
    return http::https_request(r);
}

void HostVerifier::enroll(const std::string& device_id, const std::string& endorsement_key_b64) {
    const auto reply = call("PUT", "/attest/v1/admin/devices/" + device_id, json{{"endorsementKey", endorsement_key_b64}}.dump(), true);
    if (reply.status != 200) ADD_FAILURE() << "enrolling " << device_id << ": HTTP " << reply.status << " " << reply.body;
}

json HostVerifier::status(const std::string& device_id) {
    const auto reply = call("GET", "/attest/v1/devices/" + device_id + "/status", "", true);
    return reply.status == 200 ? json::parse(reply.body) : json();
}

uint16_t HostVerifier::start_recorder() {
    http::HttpsServerConfig config;
    config.certificate_chain = pki_ / "server-chain.pem";
    config.private_key = pki_ / "server.key";
    recorder_ = std::make_unique<http::HttpsServer>(config, [this](const http::HttpRequest& request) {
        {
            std::lock_guard lock(mutex_);
            recorded_.push_back({request.method, request.path, request.body});
        }
        http::HttpResponse response;
        try {
            const auto reply = call(request.method, request.target, request.body);
            response.status = static_cast<int>(reply.status);
            response.body = reply.body;
            response.headers = {{"Content-Type", reply.header("content-type")}};
        } catch (const std::exception& e) {
            response = http::HttpResponse::json(502, {{"error", "bad-gateway"}, {"message", e.what()}});
        }
        return response;
    });
    return recorder_->port();
}

std::vector<HostVerifier::Recorded> HostVerifier::recorded() const {
    std::lock_guard lock(mutex_);
    return recorded_;
}

fs::path HostVerifier::give_tar() const {
    const fs::path give = dir_ / "give";
    fs::create_directories(give);
    fs::copy_file(pki_ / "root.pem", give / "attestation-ca.pem", fs::copy_options::overwrite_existing);
    run_checked({"tar", "-cf", (dir_ / "give.tar").string(), "-C", give.string(), "attestation-ca.pem"});
    return dir_ / "give.tar";
}

std::string HostVerifier::guest_config(const std::string& device_id, uint16_t port) const {
    return "verifier_url = \"https://10.0.2.2:" + std::to_string(port ? port : port_) + "\"\n" +
           "trust_bundle = \"/etc/cairn/attestation-ca.pem\"\n" + "device_id = \"" + device_id + "\"\n" + "retries = 1\n";
}

std::string enroll_and_configure_attestation(qemu::Machine& m, HostVerifier& verifier, const std::string& give) {
    const json info = shell_json(m, "cairnctl provision tpm-info --json", std::chrono::seconds(120));
    const std::string id = info.at("registration_id").get<std::string>();
    verifier.enroll(id, info.at("endorsement_key").get<std::string>());
    const std::string out = shell(m, "mkdir -p /tmp/give && tar -xf " + give + " -C /tmp/give && cp /tmp/give/attestation-ca.pem /etc/cairn/ && echo copied=$?");
    if (out.find("copied=0") == std::string::npos) ADD_FAILURE() << "copying the verifier's CA: " << out;
    write_guest_file(m, "/etc/cairn/attestation.toml", verifier.guest_config(id));
    return id;
}

}  // namespace cairn::test
