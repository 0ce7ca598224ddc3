// cairn-dps: a DPS-compatible provisioning service for labs, factories and tests.
#include <signal.h>

#include <cstring>
#include <iostream>
#include <limits>

#include "common/args.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/version.hpp"
#include "common/text.hpp"
#include "provisioning/activation.hpp"
#include "provisioning/dps_service.hpp"
#include "http/server.hpp"

namespace {

const char* usage =
    "Usage: cairn-dps --enrollments FILE --cert CHAIN.pem --key KEY.pem [OPTIONS]\n"
    "\n"
    "A provisioning service compatible with the device side of DPS (the Device Provisioning\n"
    "Service), for labs, factories and tests: over HTTPS it registers the devices FILE enrolls\n"
    "and assigns each its hub.\n"
    "\n"
    "  --listen ADDRESS        IPv4 address to listen on (default 127.0.0.1)\n"
    "  --port N                TCP port (default 0: any free port)\n"
    "  --port-file FILE        write the port chosen here once listening\n"
    "  --state FILE            keep the service's state (enrollments, operations, registrations,\n"
    "                          TPM challenges, hub devices) in this SQLite file across restarts\n"
    "                          (default: in memory, lost at exit)\n"
    "  --request-log FILE      append one JSON line per device request\n"
    "  --retry-after S         Retry-After of 202 replies (default 3)\n"
    "  --assign-delay-ms N     how long an operation stays 'assigning' (default 0)\n"
    "  --clock-offset S        run the service clock S seconds off the host's\n"
    "  --admin-token-file FILE enable the /admin API with this bearer token\n"
    "  --fail STATUS:COUNT     answer the next COUNT device requests with STATUS\n"
    "  --max-connections N     open connections at most; more are closed at once (default 256)\n"
    "  --request-timeout-ms N  deadline of a TLS handshake, and of each request's header and body (default 30000)\n"
    "  --idle-timeout-ms N     close a keep-alive connection idle this long (default 30000)\n"
    "  --request-log-max-bytes N  past this the request log becomes FILE.1 (default 16777216)\n"
    "  --tpm-challenge-ttl S   a TPM challenge stays pending this long unless answered (default 120)\n";

}  // namespace

int main(int argc, char** argv) {
    using namespace cairn;
    using namespace cairn::provisioning;
    try {
        http::HttpsServerConfig server;
        DpsServiceConfig service;
        std::filesystem::path enrollments, port_file;
        int fail_status = 0, fail_count = 0;
        constexpr int max_int = std::numeric_limits<int>::max();
        Args a(argc, argv);
        while (a.next()) {
            if (a.is("--enrollments")) enrollments = a.value();
            else if (a.is("--cert")) server.certificate_chain = a.value();
            else if (a.is("--key")) server.private_key = a.value();
            else if (a.is("--listen")) server.address = a.value();
            else if (a.is("--port")) server.port = static_cast<uint16_t>(a.number(0, 65535));
            else if (a.is("--port-file")) port_file = a.value();
            else if (a.is("--request-log")) service.request_log = a.value();
            else if (a.is("--state")) {
                service.state_file = a.value();
                if (service.state_file.empty()) throw UsageError("--state: needs a file name");
            }
            else if (a.is("--retry-after")) service.retry_after_seconds = static_cast<int>(a.number(0, max_int));
            else if (a.is("--assign-delay-ms")) service.assign_delay_ms = static_cast<int>(a.number(0, max_int));
            else if (a.is("--clock-offset")) service.clock_offset_seconds = static_cast<int>(a.number(-max_int, max_int));
            else if (a.is("--max-connections")) server.max_connections = static_cast<int>(a.number(1, 1000000));
            else if (a.is("--request-timeout-ms")) server.request_timeout_ms = static_cast<int>(a.number(1, max_int));
            else if (a.is("--idle-timeout-ms")) server.idle_timeout_ms = static_cast<int>(a.number(1, max_int));
            else if (a.is("--request-log-max-bytes")) service.request_log_max_bytes = static_cast<uint64_t>(a.number(1024, std::numeric_limits<int64_t>::max()));
            else if (a.is("--tpm-challenge-ttl")) service.tpm_challenge_ttl_seconds = static_cast<int>(a.number(1, 86400));
            else if (a.is("--admin-token-file")) {
                service.admin_token = trim_end(read_file(a.value()), "\r\n");
                if (service.admin_token.empty()) fail("cairn-dps: --admin-token-file: the file is empty");
            } else if (a.is("--fail")) {
                const std::string v = a.value();
                const size_t colon = v.find(':');
                if (colon == std::string::npos) throw UsageError("--fail: expected STATUS:COUNT, got '" + v + "'");
                fail_status = static_cast<int>(parse_number(v.substr(0, colon), "--fail", 100, 599));
                fail_count = static_cast<int>(parse_number(v.substr(colon + 1), "--fail", 0, max_int));
            } else {
                throw UsageError("unknown option '" + a.arg() + "'");
            }
        }
        if (a.help()) {
            std::cout << usage;
            return 0;
        }
        if (a.version()) return print_version("cairn-dps");
        if (enrollments.empty() || server.certificate_chain.empty() || server.private_key.empty())
            throw UsageError("--enrollments, --cert and --key are required");

        // Signals are taken by sigwait below; block them before any thread starts.
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);

        DpsService dps(service, load_enrollments_file(enrollments));
        dps.set_tpm_challenge_maker(make_tpm_challenge);
        if (fail_count > 0) dps.inject_faults(fail_status, fail_count);
        http::HttpsServer https(server, [&dps](const http::HttpRequest& r) { return dps.handle(r); });
        if (!port_file.empty()) write_file_atomic(port_file, std::to_string(https.port()) + "\n");
        std::cout << "cairn-dps: listening on https://" << server.address << ":" << https.port() << " (ID scope " << dps.id_scope()
                  << ")" << std::endl;
        int sig = 0;
        sigwait(&signals, &sig);
        std::cout << "cairn-dps: stopping (" << strsignal(sig) << ")" << std::endl;
        https.stop();
        return 0;
    } catch (const cairn::UsageError& e) {
        std::cerr << "cairn-dps: " << e.what() << "\n" << usage;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << e.what() << std::endl;
        return 1;
    }
}
