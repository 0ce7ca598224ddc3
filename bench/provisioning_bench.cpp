// Provisioning round trips on loopback: agent start to "assigned" against cairn-dps's service
// (real HTTPS, Retry-After 0), with the TPM (swtpm: EK/SRK read, 401 challenge, ActivateCredential,
// Import, persist, TPM-signed SAS, poll) and with a symmetric key. Peer in the same run: the curl
// program doing the symmetric-key PUT and GET with a precomputed token.
// Run: build/bench/provisioning_bench [rounds]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "provisioning/activation.hpp"
#include "provisioning/dps_client.hpp"
#include "provisioning/dps_service.hpp"
#include "common/encoding.hpp"
#include "http/server.hpp"
#include "provisioning/sas.hpp"
#include "provisioning/tpm.hpp"
#include "tpm/swtpm.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using cairn::tpm::Swtpm;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

void report(const std::string& name, std::vector<double> v) {
    std::sort(v.begin(), v.end());
    double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
    std::printf("%-44s median %8.1f ms  mean %8.1f ms  min %8.1f ms  max %8.1f ms  (n=%zu)\n", name.c_str(), v[v.size() / 2], mean, v.front(),
                v.back(), v.size());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
        TempDir dir(std::filesystem::temp_directory_path(), "cairn-provisioning-bench-");
        auto p = [&](const std::string& n) { return (dir.path() / n).string(); };
        run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2",
                     "-subj", "/CN=bench CA"});
        run_checked({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=localhost"});
        write_file_atomic(dir.path() / "ext", "subjectAltName=DNS:localhost\n");
        run_checked({"openssl", "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out",
                     p("server.pem"), "-days", "2", "-extfile", p("ext")});

        Swtpm swtpm(dir.path() / "tpm");
        std::string ek;
        {
            Tpm tpm({swtpm.tcti()});
            ek = tpm.endorsement_key();
        }
        const std::string tpm_id = tpm_registration_id(ek);
        const std::string key = base64_encode(std::string_view("bench-device-key-0123456789abcde"));
        nlohmann::json enrollments = {
            {"idScope", "0ne0000BE4C"},
            {"iotHubs", {"hub.example"}},
            {"enrollments",
             {{{"registrationId", tpm_id}, {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}},
              {{"registrationId", "sym-device"}, {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", key}}}}}}}}};
        DpsServiceConfig service_config;
        service_config.retry_after_seconds = 0;
        DpsService service(service_config, enrollments);
        service.set_tpm_challenge_maker(make_tpm_challenge);
        http::HttpsServerConfig server_config;
        server_config.certificate_chain = p("server.pem");
        server_config.private_key = p("server.key");
        http::HttpsServer server(server_config, [&](const http::HttpRequest& r) { return service.handle(r); });
        const std::string endpoint = "https://localhost:" + std::to_string(server.port());

        DpsClientConfig base;
        base.global_endpoint = endpoint;
        base.id_scope = "0ne0000BE4C";
        base.trust_bundle = p("ca.pem");

        std::vector<double> tpm_times, sym_times, curl_times;
        for (int i = 0; i < rounds; ++i) {
            auto t0 = Clock::now();
            Tpm tpm({swtpm.tcti()});  // agent start: a new ESAPI context
            DpsClientConfig c = base;
            c.method = AttestationMethod::Tpm;
            c.tpm = &tpm;
            if (!register_device(c).assigned()) throw std::runtime_error("TPM registration not assigned");
            tpm_times.push_back(ms_since(t0));
        }
        for (int i = 0; i < rounds; ++i) {
            auto t0 = Clock::now();
            DpsClientConfig c = base;
            c.method = AttestationMethod::SymmetricKey;
            c.registration_id = "sym-device";
            c.symmetric_key = key;
            if (!register_device(c).assigned()) throw std::runtime_error("symmetric-key registration not assigned");
            sym_times.push_back(ms_since(t0));
        }
        const bool have_curl = find_program("curl").has_value();
        for (int i = 0; have_curl && i < rounds; ++i) {
            const std::string token = make_sas_token(sas_resource("0ne0000BE4C", "sym-device"), unix_seconds(std::chrono::system_clock::now()) + 3600,
                                                     key_signer(base64_decode(key, "key")));
            const std::string prefix = endpoint + "/0ne0000BE4C/registrations/sym-device";
            auto t0 = Clock::now();
            std::string put = run_checked({"curl", "-sS", "--cacert", p("ca.pem"), "-X", "PUT", "-H", "Content-Type: application/json", "-H",
                                           "Authorization: " + token, "-d", R"({"registrationId":"sym-device"})",
                                           prefix + "/register?api-version=2021-06-01"});
            const std::string op = nlohmann::json::parse(put).at("operationId").get<std::string>();
            std::string get = run_checked({"curl", "-sS", "--cacert", p("ca.pem"), "-H", "Authorization: " + token,
                                           prefix + "/operations/" + op + "?api-version=2021-06-01"});
            if (nlohmann::json::parse(get).value("status", "") != "assigned") throw std::runtime_error("curl: not assigned");
            curl_times.push_back(ms_since(t0));
        }
        std::printf("provisioning round trips, loopback HTTPS, Retry-After 0, %d rounds (goal: TPM <= 1000 ms)\n", rounds);
        report("cairn TPM (swtpm) start -> assigned", tpm_times);
        report("cairn symmetric key start -> assigned", sym_times);
        if (have_curl) report("peer: curl PUT + GET, precomputed SAS", curl_times);
        else std::printf("peer: curl not installed, skipped\n");
        server.stop();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "provisioning_bench: " << e.what() << std::endl;
        return 1;
    }
}
