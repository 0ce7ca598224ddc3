#include "provisioning/provision_cli.hpp"

#include <chrono>

#include <nlohmann/json.hpp>

#include "common/args.hpp"
#include "common/error.hpp"
#include "common/version.hpp"
#include "provisioning/agent.hpp"
#include "provisioning/config.hpp"
#include "provisioning/dps_client.hpp"
#include "common/encoding.hpp"
#include "provisioning/tpm.hpp"

namespace cairn::provisioning {

using nlohmann::json;

namespace {

struct Options {
    std::string command;
    std::filesystem::path config = default_config_path;
    std::filesystem::path state_dir = default_state_dir;
    bool json = false;
    bool hub_error = false;
    bool help = false;     // -h or --help
    bool version = false;  // --version
};

Options parse(const std::vector<std::string>& args, bool with_command) {
    Options o;
    Args a(args);
    while (a.next()) {
        if (a.is("-c", "--config")) o.config = a.value();
        else if (a.is("--state-dir")) o.state_dir = a.value();
        else if (a.is("--json", "-o=json")) o.json = true;
        else if (a.is("--hub-error")) o.hub_error = true;
        else if (with_command && o.command.empty() && !a.is_option()) o.command = a.arg();
        else throw UsageError("unknown argument '" + a.arg() + "'");
    }
    o.help = a.help();
    o.version = a.version();
    return o;
}

const char* usage = "Usage: cairnctl provision status|reprovision|check|tpm-info [--json] [--config FILE] [--state-dir DIR]";

const char* common_options =
    "  -c, --config FILE  the configuration (default /etc/cairn/config.toml)\n"
    "  --state-dir DIR    the agent's state (default /var/lib/cairn/provisioning)\n"
    "  --json             machine-readable output\n";

const char* area_text =
    "\n"
    "The device's cloud identity, which the provisioning agent (cairn-provisiond) obtains from\n"
    "the provisioning service (DPS) that the configuration's [provisioning] names.\n"
    "\n"
    "  status       the stored identity (hub, device ID) and the last attempt\n"
    "  reprovision  register with the provisioning service now\n"
    "  check        check the configuration, the TPM, the service and the stored identity\n"
    "  tpm-info     the TPM's endorsement key and registration ID, for an individual enrollment\n";

// `cairnctl provision COMMAND --help`: the command's own usage.
std::string command_usage(const std::string& command) {
    if (command == "status")
        return std::string("Usage: cairnctl provision status [--json] [--config FILE] [--state-dir DIR]\n\n"
                           "Shows the stored identity (hub, device ID) and the last attempt. Exit status: 0\n"
                           "provisioned, 1 not provisioned (or an error), 3 not configured (no configuration file:\n"
                           "write one and run `cairnctl config apply`).\n") + common_options;
    if (command == "reprovision")
        return std::string("Usage: cairnctl provision reprovision [--hub-error] [--json] [--config FILE] [--state-dir DIR]\n\n"
                           "Registers with the provisioning service now and stores the identity it assigns.\n"
                           "  --hub-error         as after the hub refused the stored identity\n") + common_options;
    if (command == "check")
        return std::string("Usage: cairnctl provision check [--json] [--config FILE] [--state-dir DIR]\n\n"
                           "Checks the configuration, the TPM, the service and the stored identity, one line each.\n") + common_options;
    if (command == "tpm-info")
        return std::string("Usage: cairnctl provision tpm-info [--config FILE]\n\n"
                           "Shows the TPM's endorsement key and registration ID, for an individual enrollment\n"
                           "(the TPM is the one [tpm] tcti names in FILE, when it exists).\n"
                           "  -c, --config FILE  the configuration (default /etc/cairn/config.toml)\n");
    return std::string(usage) + "\n" + area_text;
}

// Exit status of `status` when there is no configuration: not a failure of the command, and not
// "not provisioned" (1) either: there is nothing to provision with yet.
constexpr int not_configured = 3;

int status(const Options& o, std::ostream& out) {
    std::error_code ec;
    if (!std::filesystem::exists(o.config, ec) && !ec) {
        if (o.json) {
            out << json{{"state", "Not configured"}, {"config", o.config.string()}, {"identity", nullptr}}.dump(2) << "\n";
        } else {
            out << "Provisioning: not configured (" << o.config.string() << " does not exist)\n"
                << "  Configure it: write the [provisioning] section (see docs/provisioning.md) into a file and\n"
                << "  install it with `cairnctl config apply -c FILE`, or turn IoT Edge's config.yaml into one\n"
                << "  with `cairnctl config import`, then `cairnctl config apply`.\n";
        }
        return not_configured;
    }
    ProvisioningConfig config = load_config(o.config);
    IdentityStore store(o.state_dir);
    IdentityStore::Loaded loaded = store.read(&config);
    json attempt = store.last_attempt();
    const std::string state = loaded.identity ? "Provisioned" : (attempt.is_object() && attempt.value("outcome", "") == "failed" ? "Failed" : "Not provisioned");
    if (o.json) {
        json j = {{"source", config.source}, {"method", method_name(config.method)}, {"mode", mode_name(config.mode)}, {"state", state},
                  {"identity", loaded.identity ? loaded.identity->to_json() : json(nullptr)}, {"last_attempt", attempt}};
        if (!loaded.identity) j["problem"] = loaded.problem;
        out << j.dump(2) << "\n";
        return loaded.identity ? 0 : 1;
    }
    out << "Provisioning: " << config.source << " (" << method_name(config.method) << ", auto_reprovisioning_mode " << mode_name(config.mode) << ")\n";
    out << "  State: " << state << "\n";
    if (loaded.identity) {
        const Identity& id = *loaded.identity;
        out << "  Registration ID: " << id.registration_id << "\n"
            << "  Hub: " << id.hub_name << "\n"
            << "  Device ID: " << id.device_id << "\n"
            << "  Provisioned at: " << id.provisioned_at << "\n";
    } else {
        out << "  Why: " << loaded.problem << "\n";
    }
    if (attempt.is_object()) {
        out << "  Last attempt: " << attempt.value("time", "?") << " (" << attempt.value("trigger", "?") << "): " << attempt.value("outcome", "?");
        if (attempt.contains("error")) out << ": " << attempt["error"].get<std::string>();
        out << "\n";
    }
    return loaded.identity ? 0 : 1;
}

struct Check {
    std::string id, description, result, message;
};

int check(const Options& o, std::ostream& out) {
    std::vector<Check> checks;
    auto add = [&](const std::string& id, const std::string& description, const std::string& result, const std::string& message) {
        checks.push_back({id, description, result, message});
    };
    std::optional<ProvisioningConfig> config;
    try {
        config = load_config(o.config);
        add("config-well-formed", "configuration is well-formed", "OK", o.config.string());
    } catch (const Error& e) {
        add("config-well-formed", "configuration is well-formed", "Error", e.what());
    }
    const bool tpm = config && config->source == "dps" && config->method == AttestationMethod::Tpm;
    if (!config) {
        add("tpm-reachable", "TPM is reachable", "Skipped", "no configuration");
        add("ek-present", "endorsement key is persisted", "Skipped", "no configuration");
    } else if (!tpm) {
        add("tpm-reachable", "TPM is reachable", "Skipped", "attestation method is " + method_name(config->method));
        add("ek-present", "endorsement key is persisted", "Skipped", "attestation method is " + method_name(config->method));
    } else {
        try {
            Tpm t(config->tpm);
            add("tpm-reachable", "TPM is reachable", "OK", config->tpm.tcti);
            if (t.persistent_exists(tpm::ek_handle)) add("ek-present", "endorsement key is persisted", "OK", "0x81010001");
            else add("ek-present", "endorsement key is persisted", "Warning", "no key at 0x81010001 yet: provisioning will create it");
        } catch (const Error& e) {
            add("tpm-reachable", "TPM is reachable", "Error", e.what());
            add("ek-present", "endorsement key is persisted", "Skipped", "TPM not reachable");
        }
    }
    std::optional<int64_t> skew;
    if (config && config->source == "dps") {
        try {
            http::HttpsRequest r;
            r.url = config->global_endpoint;
            r.trust_bundle = config->trust_bundle;
            r.connect_timeout_ms = 5000;
            r.timeout_ms = 10000;
            http::HttpsReply reply = http::https_request(r);
            add("dps-reachable", "provisioning service is reachable and its TLS certificate valid", "OK",
                config->global_endpoint + " answered HTTP " + std::to_string(reply.status));
            const std::string date = reply.header("date");
            if (!date.empty()) {
                int64_t t = http::parse_http_date(date);
                if (t > 0) skew = t - unix_seconds(std::chrono::system_clock::now());
            }
        } catch (const Error& e) {
            add("dps-reachable", "provisioning service is reachable and its TLS certificate valid", "Error", e.what());
        }
    } else {
        add("dps-reachable", "provisioning service is reachable and its TLS certificate valid", "Skipped", "source is not dps");
    }
    const int64_t now = unix_seconds(std::chrono::system_clock::now());
    if (now < 1704067200) add("host-local-time", "host clock is sane", "Error", "the clock says " + utc_timestamp(std::chrono::system_clock::now()));
    else if (skew && (*skew > 300 || *skew < -300))
        add("host-local-time", "host clock is sane", "Warning", "the clock is " + std::to_string(*skew) + " s off the provisioning service's");
    else add("host-local-time", "host clock is sane", "OK", skew ? "within " + std::to_string(*skew < 0 ? -*skew : *skew) + " s of the service" : "");
    IdentityStore store(o.state_dir);
    auto loaded = store.read(config ? &*config : nullptr);
    if (loaded.identity) add("identity-readable", "stored identity is readable", "OK", store.identity_file().string());
    else if (loaded.problem == "no stored identity") add("identity-readable", "stored identity is readable", "Warning", "not provisioned yet");
    else add("identity-readable", "stored identity is readable", "Error", loaded.problem);

    bool failed = false;
    json list = json::array();
    for (const auto& c : checks) {
        failed = failed || c.result == "Error";
        list.push_back({{"id", c.id}, {"description", c.description}, {"result", c.result}, {"message", c.message}});
    }
    if (o.json) {
        out << json{{"checks", list}, {"ok", !failed}}.dump(2) << "\n";
    } else {
        for (const auto& c : checks) {
            const char* mark = c.result == "OK" ? "\u221a" : c.result == "Warning" ? "\u203c" : c.result == "Error" ? "\u00d7" : "-";
            out << mark << " " << c.id << " - " << c.description << " - " << c.result;
            if (!c.message.empty() && c.result != "OK") out << ": " << c.message;
            out << "\n";
        }
    }
    return failed ? 1 : 0;
}

int run_provision(const Options& o, Trigger trigger, std::ostream& out, std::ostream& err) {
    ProvisioningConfig config = load_config(o.config);
    ProvisionOutcome outcome = provision(config, o.state_dir, trigger, [&err](const std::string& line) { err << "provisioning: " << line << "\n"; });
    if (o.json) {
        out << json{{"registered", outcome.registered}, {"reason", outcome.reason}, {"identity", outcome.identity.to_json()}}.dump(2) << "\n";
    } else {
        out << (outcome.registered ? "Registered" : "Kept the stored identity") << " (" << outcome.reason << "): device " << outcome.identity.device_id
            << " on " << outcome.identity.hub_name << "\n";
    }
    return 0;
}

}  // namespace

int provision_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    try {
        Options o = parse(args, true);
        if (o.help) {
            out << command_usage(o.command);
            return 0;
        }
        if (o.version) {
            out << "cairnctl " << version() << "\n";
            return 0;
        }
        if (o.command == "status") return status(o, out);
        if (o.command == "check") return check(o, out);
        if (o.command == "reprovision") return run_provision(o, o.hub_error ? Trigger::HubError : Trigger::Api, out, err);
        if (o.command == "tpm-info") {
            ProvisioningConfig config;
            if (std::filesystem::exists(o.config)) config = load_config(o.config);
            Tpm tpm(config.tpm);
            if (o.json) {
                const std::string ek = tpm.endorsement_key();
                out << json{{"registration_id", tpm_registration_id(ek)}, {"endorsement_key", base64_encode(ek)}}.dump(2) << "\n";
                return 0;
            }
            out << "Gathering the registration information...\n\n" << tpm.info_text();
            return 0;
        }
        err << usage << "\n";
        return 2;
    } catch (const UsageError& e) {
        err << "cairnctl provision: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::exception& e) {
        err << "cairnctl provision: " << e.what() << "\n";
        return 1;
    }
}

int provisiond_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    try {
        Options o = parse(args, false);
        if (o.help) {
            out << "Usage: cairn-provisiond [--config FILE] [--state-dir DIR] [--json]\n\n"
                   "The provisioning agent. At start it provisions the device's cloud identity from the\n"
                   "configuration's [provisioning] (or keeps the stored one, by auto_reprovisioning_mode);\n"
                   "on SIGHUP it does so again.\n"
                << common_options;
            return 0;
        }
        if (o.version) {
            out << "cairn-provisiond " << version() << "\n";
            return 0;
        }
        return run_provision(o, Trigger::Startup, out, err);
    } catch (const UsageError& e) {
        err << "cairn-provisiond: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        err << "cairn-provisiond: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace cairn::provisioning
