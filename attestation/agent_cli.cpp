#include "attestation/agent_cli.hpp"

#include <signal.h>

#include <chrono>
#include <ctime>
#include <random>

#include <nlohmann/json.hpp>

#include "attestation/agent.hpp"
#include "common/args.hpp"
#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/version.hpp"

namespace cairn::attestation {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* attestd_usage =
    "Usage: cairn-attestd [--config FILE] [--once]\n"
    "\n"
    "The boot attestation agent. At start, then every interval_sec of the configuration (default\n"
    "8 hours) give or take a tenth at random, it runs one round with the verifier: a nonce, the\n"
    "attestation key bound to the TPM's endorsement key when the verifier does not hold it yet, a\n"
    "TPM quote of the PCRs the verifier names, the event log and the booted slot's signed\n"
    "reference document; the verifier's status record goes to <state_dir>/status.json (see\n"
    "`cairnctl attest status`). A round that cannot reach the verifier records health Unknown\n"
    "and why, and keeps the last good record. SIGTERM or SIGINT stop it between rounds (a round\n"
    "in progress finishes first; its HTTP exchanges are bounded by timeout_sec).\n"
    "\n"
    "  -c, --config FILE  the configuration (default /etc/cairn/attestation.toml)\n"
    "  --once             one round, then exit: 0 Healthy, 1 otherwise\n"
    "  --version          the version\n"
    "\n"
    "Exit status: 0 stopped by a signal (or --once Healthy), 1 failed, 2 usage error.\n";

const char* attest_usage =
    "Usage: cairnctl attest status|now [--json] [--config FILE]\n"
    "\n"
    "Boot attestation: what the verifier last judged of this device's boot, which the\n"
    "attestation agent (cairn-attestd) proves with the TPM.\n"
    "\n"
    "  status       the last status record, its age, and the last Healthy one\n"
    "  now          runs a round with the verifier now and prints the new record\n"
    "\n"
    "See `cairnctl attest COMMAND --help`.\n"
    "Exit status: 0 done (now: Healthy), 1 failed (now: Unhealthy or Unknown), 2 usage error.\n";

const char* status_usage =
    "Usage: cairnctl attest status [--json] [--config FILE]\n"
    "\n"
    "Shows the status record of the last attestation round (health, Secure Boot, the checks that\n"
    "failed, and why a round could not be judged), its age, the last attempt, and the last\n"
    "Healthy record when the last one is not. Reads the status file only.\n"
    "\n"
    "  -c, --config FILE  the agent's configuration, for its state_dir (default\n"
    "                     /etc/cairn/attestation.toml; without it /var/lib/cairn/attestation)\n"
    "  --json             the record as JSON, with \"age\" (seconds), \"lastGood\" and \"lastAttempt\"\n"
    "\n"
    "Exit status: 0 shown (also when there is no record yet), 1 failed, 2 usage error.\n";

const char* now_usage =
    "Usage: cairnctl attest now [--json] [--config FILE]\n"
    "\n"
    "Runs an attestation round now, as cairn-attestd does (never at the same time as one of its\n"
    "rounds: they share a lock), records it in the status file and prints the new record.\n"
    "\n"
    "  -c, --config FILE  the agent's configuration (default /etc/cairn/attestation.toml)\n"
    "  --json             the record as JSON, with \"age\", \"lastGood\" and \"lastAttempt\"\n"
    "\n"
    "Exit status: 0 Healthy, 1 Unhealthy, Unknown or failed, 2 usage error.\n";

std::string format_duration(long long s) {
    if (s < 120) return std::to_string(s) + " s";
    if (s < 7200) return std::to_string(s / 60) + " min";
    if (s < 172800) return std::to_string(s / 3600) + " h";
    return std::to_string(s / 86400) + " days";
}

std::string format_age(const json& age) { return age.is_number() ? format_duration(age.get<long long>()) + " ago" : "unknown age"; }

std::string text_of(const json& record, const char* name) {
    return record.contains(name) && record[name].is_string() ? record[name].get<std::string>() : std::string();
}

void print_record(std::ostream& out, const json& r, const std::string& indent = "") {
    out << indent << "health:          " << text_of(r, "healthStatus") << " (" << text_of(r, "timestamp") << ", " << format_age(r.value("age", json()))
        << ")\n";
    out << indent << "device:          " << text_of(r, "deviceId") << "\n";
    out << indent << "secure boot:     " << text_of(r, "attestSecureBootEnabled") << "\n";
    out << indent << "attestation key: " << text_of(r, "attestationCertValidated") << "\n";
    out << indent << "boot integrity:  " << text_of(r, "bootIntegrityValidated") << "\n";
    out << indent << "slot:            " << text_of(r, "slot") << (text_of(r, "imageVersion").empty() ? "" : " (version " + text_of(r, "imageVersion") + ")")
        << "\n";
    out << indent << "kernel:          " << text_of(r, "linuxKernelVersion") << "\n";
    out << indent << "provisioning:    " << text_of(r, "provisioningState") << "\n";
    if (!text_of(r, "errorMessage").empty()) out << indent << "error:           " << text_of(r, "errorMessage") << "\n";
    if (r.contains("failedChecks") && r["failedChecks"].is_array())
        for (const auto& c : r["failedChecks"])
            if (c.is_object()) out << indent << "  failed: " << text_of(c, "code") << ": " << text_of(c, "reason") << "\n";
}

struct Options {
    std::string command;
    fs::path config = default_agent_config;
    bool config_given = false;
    bool json = false;
    bool once = false;
    bool help = false, version = false;
};

Options parse(const std::vector<std::string>& args, bool daemon) {
    Options o;
    Args a(args);
    while (a.next()) {
        if (a.is("-c", "--config")) {
            o.config = a.value();
            o.config_given = true;
        } else if (!daemon && a.is("--json")) o.json = true;
        else if (daemon && a.is("--once")) o.once = true;
        else if (!daemon && o.command.empty() && !a.is_option()) o.command = a.arg();
        else throw UsageError("unknown argument '" + a.arg() + "'");
    }
    o.help = a.help();
    o.version = a.version();
    return o;
}

void log_line(std::ostream& err, const std::string& line) { err << "cairn-attestd: " << line << std::endl; }

}  // namespace

int attestd_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    try {
        const Options o = parse(args, true);
        if (o.help) {
            out << attestd_usage;
            return 0;
        }
        if (o.version) {
            out << "cairn-attestd " << version() << "\n";
            return 0;
        }
        const AgentConfig config = load_agent_config(o.config);
        // SIGTERM and SIGINT are taken synchronously between rounds (sigtimedwait), so a round is
        // never cut in the middle of writing the status file.
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        if (!o.once) pthread_sigmask(SIG_BLOCK, &stop, nullptr);
        std::mt19937_64 random(std::random_device{}());
        const auto log = [&](const std::string& line) { log_line(err, line); };
        for (;;) {
            const json record = run_round(config, log);
            const std::string health = record["healthStatus"].get<std::string>();
            const std::string message = record["errorMessage"].get<std::string>();
            log(health + (message.empty() ? "" : ": " + message));
            if (o.once) return health == "Healthy" ? 0 : 1;
            // Jitter: devices that booted together do not all come back at the same second.
            const auto base = std::chrono::duration_cast<std::chrono::milliseconds>(config.interval);
            std::uniform_int_distribution<long long> spread(-base.count() / 10, base.count() / 10);
            const auto wait = base + std::chrono::milliseconds(spread(random));
            timespec ts{static_cast<time_t>(wait.count() / 1000), static_cast<long>(wait.count() % 1000) * 1000000};
            const int sig = sigtimedwait(&stop, nullptr, &ts);
            if (sig == SIGTERM || sig == SIGINT) {
                log("stopping (" + std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") + ")");
                return 0;
            }
        }
    } catch (const UsageError& e) {
        err << "cairn-attestd: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::exception& e) {
        err << "cairn-attestd: " << e.what() << "\n";
        return 1;
    }
}

int attest_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    try {
        const Options o = parse(args, false);
        if (!o.command.empty() && o.command != "status" && o.command != "now")
            throw UsageError("unknown command '" + o.command + "' (status, now)");
        if (o.help) {
            out << (o.command == "status" ? status_usage : o.command == "now" ? now_usage : attest_usage);
            return 0;
        }
        if (o.version) {
            out << "cairnctl " << version() << "\n";
            return 0;
        }
        if (o.command == "status") {
            // Status needs no verifier, TPM or complete configuration: only where the state is.
            AgentConfig config;
            std::error_code ec;
            if (o.config_given || fs::exists(o.config, ec)) config = load_agent_config(o.config);
            const fs::path state_dir = config.state_dir;
            const json status = read_status(state_dir);
            if (status.is_null()) {
                if (o.json) out << "null\n";
                else out << "No attestation yet (" << (state_dir / "status.json").string() << " does not exist).\n";
                return 0;
            }
            const json view = status_view(status, std::chrono::system_clock::now(), config.interval);
            if (o.json) {
                out << view.dump(2) << "\n";
                return 0;
            }
            print_record(out, view);
            if (view.value("stale", false))
                out << "STALE:           older than the agent's interval (" << format_duration(config.interval.count())
                    << ") and its jitter: is cairn-attestd running and reaching the verifier?\n";
            if (view.contains("lastAttempt") && view["lastAttempt"].is_object())
                out << "last attempt:    " << text_of(view["lastAttempt"], "time") << " (" << text_of(view["lastAttempt"], "outcome") << ")\n";
            if (text_of(view, "healthStatus") != "Healthy") {
                if (view["lastGood"].is_object()) {
                    out << "last good:\n";
                    print_record(out, view["lastGood"], "  ");
                } else {
                    out << "last good:       none\n";
                }
            }
            return 0;
        }
        if (o.command == "now") {
            const AgentConfig config = load_agent_config(o.config);
            const json record = run_round(config, [&](const std::string& line) { err << "cairnctl attest: " << line << "\n"; });
            json view = status_view(read_status(config.state_dir), std::chrono::system_clock::now(), config.interval);
            if (o.json) out << view.dump(2) << "\n";
            else print_record(out, view);
            return record["healthStatus"] == "Healthy" ? 0 : 1;
        }
        throw UsageError("a command is needed: status or now");
    } catch (const UsageError& e) {
        err << "cairnctl attest: " << e.what() << "\n" << "Usage: cairnctl attest status|now [--json] [--config FILE] (see --help)\n";
        return 2;
    } catch (const std::exception& e) {
        err << "cairnctl attest: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace cairn::attestation
