// Runs the real cairn-dps program on loopback for the provisioning tests: a test PKI, an
// enrollments file, an admin token, a request log.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "provisioning/dps_client.hpp"
#include "common/encoding.hpp"
#include "tests/support/pki.hpp"

namespace cairn::test {

inline const std::string dps_scope = "0ne0000CA1R";
inline const std::string dps_admin_token = "cairn-test-admin";

class DpsFixture {
public:
    DpsFixture(const std::filesystem::path& dir, const nlohmann::json& enrollments, std::vector<std::string> extra_args = {})
        : dir_(dir), pki_(dir / "pki") {
        std::filesystem::create_directories(dir_);
        nlohmann::json doc = enrollments;
        doc["idScope"] = dps_scope;
        if (!doc.contains("iotHubs")) doc["iotHubs"] = {"hub-one.example", "hub-two.example"};
        write_file_atomic(dir_ / "enrollments.json", doc.dump(2));
        write_file_atomic(dir_ / "admin-token", dps_admin_token + "\n", 0600);
        args_ = {CAIRN_DPS_BINARY, "--enrollments", (dir_ / "enrollments.json").string(), "--cert", (pki_ / "server-chain.pem").string(),
                 "--key", (pki_ / "server.key").string(), "--port-file", (dir_ / "port").string(), "--request-log",
                 (dir_ / "requests.jsonl").string(), "--admin-token-file", (dir_ / "admin-token").string(), "--retry-after", "0"};
        args_.insert(args_.end(), extra_args.begin(), extra_args.end());
        start();
    }

    void start() {
        std::filesystem::remove(dir_ / "port");
        RunOptions options;
        options.die_with_parent = true;
        if (port_) {  // a restart keeps its port
            std::vector<std::string> args = args_;
            args.insert(args.end(), {"--port", std::to_string(port_)});
            process_ = std::make_unique<Process>(args, dir_ / "dps.log", options);
        } else {
            process_ = std::make_unique<Process>(args_, dir_ / "dps.log", options);
        }
        const auto t0 = std::chrono::steady_clock::now();
        while (!std::filesystem::exists(dir_ / "port")) {
            if (!process_->running()) fail("cairn-dps did not start: " + read_file(dir_ / "dps.log"));
            if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) fail("cairn-dps wrote no port file in 10 s");
            ::usleep(10000);
        }
        port_ = static_cast<uint16_t>(std::stoi(read_file(dir_ / "port")));
    }

    void stop() {
        if (process_) process_->stop(2000);
        process_.reset();
    }

    // As a power cut would: no chance to tidy up.
    void kill() {
        if (process_) {
            process_->signal(SIGKILL);
            process_->wait(5000);
        }
        process_.reset();
    }

    std::string endpoint() const { return "https://localhost:" + std::to_string(port_) + "/"; }
    uint16_t port() const { return port_; }
    TestPki& pki() { return pki_; }
    std::filesystem::path trust_bundle() const { return pki_ / "root.pem"; }

    http::HttpsReply admin(const std::string& method, const std::string& path, const std::string& body = "") {
        http::HttpsRequest r;
        r.method = method;
        r.url = "https://localhost:" + std::to_string(port_) + path;
        r.body = body;
        r.trust_bundle = trust_bundle();
        r.headers = {"Authorization: Bearer " + dps_admin_token, "Content-Type: application/json"};
        return http::https_request(r);
    }

    // Device requests the service logged (JSON lines of --request-log).
    std::vector<nlohmann::json> requests() const {
        std::vector<nlohmann::json> out;
        if (!std::filesystem::exists(dir_ / "requests.jsonl")) return out;
        std::string text = read_file(dir_ / "requests.jsonl");
        size_t pos = 0;
        while (pos < text.size()) {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos) end = text.size();
            if (end > pos) out.push_back(nlohmann::json::parse(text.substr(pos, end - pos)));
            pos = end + 1;
        }
        return out;
    }

    provisioning::DpsClientConfig client(provisioning::AttestationMethod method) const {
        provisioning::DpsClientConfig c;
        c.global_endpoint = endpoint();
        c.id_scope = dps_scope;
        c.trust_bundle = trust_bundle();
        c.method = method;
        c.retry.base_delay_ms = 50;
        c.retry.max_delay_ms = 400;
        return c;
    }

private:
    std::filesystem::path dir_;
    TestPki pki_;
    std::vector<std::string> args_;
    std::unique_ptr<Process> process_;
    uint16_t port_ = 0;
};

}  // namespace cairn::test
