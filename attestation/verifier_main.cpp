// cairn-verifier: the boot attestation verifier service (docs/attestation.md).
#include <signal.h>

#include <cstring>
#include <iostream>
#include <limits>

#include "attestation/verifier_service.hpp"
#include "common/args.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/text.hpp"
#include "common/version.hpp"
#include "http/server.hpp"

namespace {

const char* usage =
    "Usage: cairn-verifier --cert CHAIN.pem --key KEY.pem --update-ca CA.pem --state FILE [OPTIONS]\n"
    "\n"
    "The boot attestation verifier: over HTTPS (paths under /attest/v1, docs/attestation.md) it binds\n"
    "enrolled devices' attestation keys to their TPM endorsement keys, hands out nonces, and judges\n"
    "their quotes and event logs against the signed reference document of the image they run,\n"
    "keeping each device's status and its history in the SQLite file FILE.\n"
    "\n"
    "  --listen ADDRESS         IPv4 address to listen on (default 127.0.0.1)\n"
    "  --port N                 TCP port (default 0: any free port; the one chosen is printed)\n"
    "  --port-file FILE         also write the port chosen here once listening\n"
    "  --cert CHAIN.pem         the server's certificate, then intermediates\n"
    "  --key KEY.pem            the server's private key\n"
    "  --update-ca CA.pem       reference documents' signatures must chain to these certificates\n"
    "  --state FILE             the verifier's SQLite database (created when missing)\n"
    "  --admin-token-file FILE  enable the admin API (enrolment, status, history, stale) with this\n"
    "                           bearer token; without it those paths answer 404\n"
    "  --enrollments FILE       enrol the devices of FILE at start ({\"devices\": [{\"deviceId\",\n"
    "                           \"endorsementKey\"}]}); devices enrolled before stay\n"
    "  --nonce-ttl S            a nonce dies S seconds after it is handed out (default 120)\n"
    "  --policy FILE            accept only the images FILE lists, from their minimum version on\n"
    "                           ({\"images\": [{\"image\", \"minimumVersion\"}]}); without it, every\n"
    "                           image whose reference document is signed under the update CA\n"
    "  --max-connections N      open connections at most; more are closed at once (default 256)\n"
    "  --request-timeout-ms N   deadline of a TLS handshake, and of each request (default 30000)\n"
    "  --help, --version\n"
    "\n"
    "SIGTERM or SIGINT stops it cleanly.\n";

}  // namespace

int main(int argc, char** argv) {
    using namespace cairn;
    using namespace cairn::attestation;
    try {
        http::HttpsServerConfig server;
        VerifierConfig config;
        std::filesystem::path enrollments, port_file;
        constexpr int max_int = std::numeric_limits<int>::max();
        Args a(argc, argv);
        while (a.next()) {
            if (a.is("--cert")) server.certificate_chain = a.value();
            else if (a.is("--key")) server.private_key = a.value();
            else if (a.is("--listen")) server.address = a.value();
            else if (a.is("--port")) server.port = static_cast<uint16_t>(a.number(0, 65535));
            else if (a.is("--port-file")) port_file = a.value();
            else if (a.is("--update-ca")) config.update_ca = a.value();
            else if (a.is("--state")) config.state = a.value();
            else if (a.is("--enrollments")) enrollments = a.value();
            else if (a.is("--policy")) config.allowed_images = load_image_policy_file(a.value());
            else if (a.is("--nonce-ttl")) config.nonce_ttl_seconds = static_cast<int>(a.number(1, 86400));
            else if (a.is("--max-connections")) server.max_connections = static_cast<int>(a.number(1, 1000000));
            else if (a.is("--request-timeout-ms")) server.request_timeout_ms = static_cast<int>(a.number(1, max_int));
            else if (a.is("--admin-token-file")) {
                config.admin_token = trim_end(read_file(a.value()), "\r\n");
                if (config.admin_token.empty()) fail("cairn-verifier: --admin-token-file: the file is empty");
            } else {
                throw UsageError("unknown option '" + a.arg() + "'");
            }
        }
        if (a.help()) {
            std::cout << usage;
            return 0;
        }
        if (a.version()) return print_version("cairn-verifier");
        if (server.certificate_chain.empty() || server.private_key.empty() || config.update_ca.empty() || config.state.empty())
            throw UsageError("--cert, --key, --update-ca and --state are required");
        // Read now, so that a missing or empty anchor stops the start instead of failing every round.
        if (read_file(config.update_ca).find("-----BEGIN CERTIFICATE-----") == std::string::npos)
            fail("cairn-verifier: --update-ca " + config.update_ca.string() + ": no PEM certificate in it");

        // Signals are taken by sigwait below; block them before any thread starts.
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);

        VerifierService verifier(config);
        if (!enrollments.empty()) {
            for (const auto& e : load_enrollments_file(enrollments)) {
                try {
                    verifier.enroll(e.device_id, e.endorsement_key);
                } catch (const Error& error) {
                    fail(enrollments.string() + ": " + error.what());
                }
            }
        }
        http::HttpsServer https(server, [&verifier](const http::HttpRequest& r) { return verifier.handle(r); });
        if (!port_file.empty()) write_file_atomic(port_file, std::to_string(https.port()) + "\n");
        std::cout << "cairn-verifier: listening on https://" << server.address << ":" << https.port() << std::endl;
        int sig = 0;
        sigwait(&signals, &sig);
        std::cout << "cairn-verifier: stopping (" << strsignal(sig) << ")" << std::endl;
        https.stop();
        return 0;
    } catch (const cairn::UsageError& e) {
        std::cerr << "cairn-verifier: " << e.what() << "\n" << usage;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << e.what() << std::endl;
        return 1;
    }
}
