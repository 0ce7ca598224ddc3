// cairn-dps: a DPS-compatible provisioning service for labs, factories and tests.
#include <signal.h>

#include <cstring>
#include <iostream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/text.hpp"
#include "provisioning/activation.hpp"
#include "provisioning/dps_service.hpp"
#include "provisioning/http_server.hpp"

namespace {

const char* usage =
    "usage: cairn-dps --enrollments FILE --cert CHAIN.pem --key KEY.pem [options]\n"
    "  --listen ADDRESS        IPv4 address to listen on (default 127.0.0.1)\n"
    "  --port N                TCP port (default 0: any free port)\n"
    "  --port-file FILE        write the port chosen here once listening\n"
    "  --request-log FILE      append one JSON line per device request\n"
    "  --retry-after S         Retry-After of 202 replies (default 3)\n"
    "  --assign-delay-ms N     how long an operation stays 'assigning' (default 0)\n"
    "  --clock-offset S        run the service clock S seconds off the host's\n"
    "  --admin-token-file FILE enable the /admin API with this bearer token\n"
    "  --fail STATUS:COUNT     answer the next COUNT device requests with STATUS\n";

int to_int(const std::string& text, const std::string& option) {
    try {
        size_t used = 0;
        int v = std::stoi(text, &used);
        if (used != text.size()) throw std::invalid_argument(text);
        return v;
    } catch (const std::exception&) {
        cairn::fail("cairn-dps: " + option + ": '" + text + "' is not a number");
    }
}

}  // namespace

int main(int argc, char** argv) {
    using namespace cairn;
    using namespace cairn::provisioning;
    try {
        HttpsServerConfig server;
        DpsServiceConfig service;
        std::filesystem::path enrollments, port_file;
        int fail_status = 0, fail_count = 0;
        for (int i = 1; i < argc; ++i) {
            std::string arg = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) fail("cairn-dps: " + arg + " needs a value");
                return argv[++i];
            };
            if (arg == "--enrollments") enrollments = value();
            else if (arg == "--cert") server.certificate_chain = value();
            else if (arg == "--key") server.private_key = value();
            else if (arg == "--listen") server.address = value();
            else if (arg == "--port") server.port = static_cast<uint16_t>(to_int(value(), arg));
            else if (arg == "--port-file") port_file = value();
            else if (arg == "--request-log") service.request_log = value();
            else if (arg == "--retry-after") service.retry_after_seconds = to_int(value(), arg);
            else if (arg == "--assign-delay-ms") service.assign_delay_ms = to_int(value(), arg);
            else if (arg == "--clock-offset") service.clock_offset_seconds = to_int(value(), arg);
            else if (arg == "--admin-token-file") {
                service.admin_token = trim_end(read_file(value()), "\r\n");
                if (service.admin_token.empty()) fail("cairn-dps: --admin-token-file: the file is empty");
            } else if (arg == "--fail") {
                std::string v = value();
                size_t colon = v.find(':');
                if (colon == std::string::npos) fail("cairn-dps: --fail: expected STATUS:COUNT, got '" + v + "'");
                fail_status = to_int(v.substr(0, colon), arg);
                fail_count = to_int(v.substr(colon + 1), arg);
            } else if (arg == "--help" || arg == "-h") {
                std::cout << usage;
                return 0;
            } else {
                fail("cairn-dps: unknown option '" + arg + "'\n" + usage);
            }
        }
        if (enrollments.empty() || server.certificate_chain.empty() || server.private_key.empty())
            fail(std::string("cairn-dps: --enrollments, --cert and --key are required\n") + usage);

        // Signals are taken by sigwait below; block them before any thread starts.
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);

        DpsService dps(service, load_enrollments_file(enrollments));
        dps.set_tpm_challenge_maker(make_tpm_challenge);
        if (fail_count > 0) dps.inject_faults(fail_status, fail_count);
        HttpsServer https(server, [&dps](const HttpRequest& r) { return dps.handle(r); });
        if (!port_file.empty()) write_file_atomic(port_file, std::to_string(https.port()) + "\n");
        std::cout << "cairn-dps: listening on https://" << server.address << ":" << https.port() << " (ID scope " << dps.id_scope()
                  << ")" << std::endl;
        int sig = 0;
        sigwait(&signals, &sig);
        std::cout << "cairn-dps: stopping (" << strsignal(sig) << ")" << std::endl;
        https.stop();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << e.what() << std::endl;
        return 1;
    }
}
