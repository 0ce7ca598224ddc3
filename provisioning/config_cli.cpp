#include "provisioning/config_cli.hpp"

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/args.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/version.hpp"
#include "provisioning/config.hpp"
#include "provisioning/config_import.hpp"

namespace cairn::provisioning {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* usage =
    "Usage: cairnctl config check|apply [-c FILE] [--target PATH] [--pid-file PATH] [--json]\n"
    "       cairnctl config import [-i CONFIG.yaml] [-o FILE] [--force]\n"
    "\n"
    "Checks, installs and imports the device's configuration (/etc/cairn/config.toml).\n"
    "\n"
    "  check   read FILE (default: the target) as the provisioning agent would\n"
    "  apply   check FILE, install it as the target (default /etc/cairn/config.toml) and have the\n"
    "          running agent provision again with it; a bad FILE changes nothing\n"
    "  import  turn an IoT Edge 1.1 config.yaml (default /etc/iotedge/config.yaml) into the\n"
    "          target (or -o FILE); refuses to overwrite without --force; then run `apply`\n";

struct Options {
    std::string command;
    fs::path file, target = default_config_path, pid_file = "/run/cairn/provisiond.pid";
    fs::path yaml = "/etc/iotedge/config.yaml", out;
    bool json = false, force = false;
    bool help = false;     // -h or --help
    bool version = false;  // --version
};

// `cairnctl config COMMAND --help`: the command's own usage.
const char* command_usage(const std::string& command) {
    if (command == "check")
        return "Usage: cairnctl config check [-c FILE] [--target PATH] [--json]\n"
               "\n"
               "Reads FILE (default: the target, /etc/cairn/config.toml) as the provisioning agent would\n"
               "and says whether it is valid (exit 1 and the error when it is not).\n";
    if (command == "apply")
        return "Usage: cairnctl config apply [-c FILE] [--target PATH] [--pid-file PATH] [--json]\n"
               "\n"
               "Checks FILE, installs it as the target (default /etc/cairn/config.toml) and has the\n"
               "running agent (--pid-file, default /run/cairn/provisiond.pid) provision again with it;\n"
               "a bad FILE changes nothing.\n";
    if (command == "import")
        return "Usage: cairnctl config import [-i CONFIG.yaml] [-o FILE] [--target PATH] [--force]\n"
               "\n"
               "Turns an IoT Edge 1.1 config.yaml (default /etc/iotedge/config.yaml) into the target\n"
               "(or -o FILE); refuses to overwrite without --force; then run `apply`.\n";
    return usage;
}

Options parse(const std::vector<std::string>& args) {
    Options o;
    Args a(args);
    while (a.next()) {
        if (a.is("-c", "--config")) o.file = a.value();
        else if (a.is("--target")) o.target = a.value();
        else if (a.is("--pid-file")) o.pid_file = a.value();
        else if (a.is("-i", "--in")) o.yaml = a.value();
        else if (a.is("-o", "--out")) o.out = a.value();
        else if (a.is("--force")) o.force = true;
        else if (a.is("--json")) o.json = true;
        else if (o.command.empty() && !a.is_option()) o.command = a.arg();
        else throw UsageError("unknown argument '" + a.arg() + "'");
    }
    o.help = a.help();
    o.version = a.version();
    if (o.file.empty()) o.file = o.target;
    if (o.out.empty()) o.out = o.target;
    return o;
}

// The agent's pid, if it runs.
std::optional<pid_t> agent_pid(const fs::path& pid_file) {
    std::error_code ec;
    if (!fs::is_regular_file(pid_file, ec)) return std::nullopt;
    try {
        pid_t pid = static_cast<pid_t>(std::stol(read_file(pid_file)));
        if (pid > 1 && ::kill(pid, 0) == 0) return pid;
    } catch (const std::exception&) {
    }
    return std::nullopt;
}

}  // namespace

int config_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    Options o;
    try {
        o = parse(args);
        if (o.help) {
            out << command_usage(o.command);
            return 0;
        }
        if (o.version) {
            out << "cairnctl " << version() << "\n";
            return 0;
        }
        if (o.command == "import") {
            std::error_code ec;
            if (fs::exists(o.out, ec) && !o.force) fail(o.out.string() + " exists (--force overwrites it)");
            std::string toml = import_iotedge_config(read_file(o.yaml), o.yaml);
            parse_config(toml, o.out);  // what the agent would say about it, before anything is written
            if (!o.out.parent_path().empty()) fs::create_directories(o.out.parent_path());
            write_file_atomic(o.out, toml, 0600);
            out << "Imported " << o.yaml.string() << " into " << o.out.string() << "; apply it with: cairnctl config apply"
                << (o.out == o.target ? "" : " -c " + o.out.string()) << "\n";
            return 0;
        }
        if (o.command != "check" && o.command != "apply") {
            err << usage;
            return 2;
        }
        ProvisioningConfig config = load_config(o.file);
        json result = {{"file", o.file.string()}, {"valid", true}, {"source", config.source}, {"method", method_name(config.method)},
                       {"mode", mode_name(config.mode)}};
        if (o.command == "check") {
            if (o.json) out << result.dump(2) << "\n";
            else out << o.file.string() << ": OK (source " << config.source << ", method " << method_name(config.method) << ")\n";
            return 0;
        }
        std::error_code ec;
        const bool same = fs::exists(o.target, ec) && fs::equivalent(o.file, o.target, ec);
        if (!same) {
            if (!o.target.parent_path().empty()) fs::create_directories(o.target.parent_path());
            write_file_atomic(o.target, read_file(o.file), 0600);
        }
        result["target"] = o.target.string();
        std::optional<pid_t> pid = agent_pid(o.pid_file);
        if (pid && ::kill(*pid, SIGHUP) != 0) fail_errno("cannot signal the provisioning agent (pid " + std::to_string(*pid) + ")");
        result["agent_pid"] = pid ? json(*pid) : json(nullptr);
        if (o.json) {
            out << result.dump(2) << "\n";
        } else {
            out << "Applied " << o.file.string() << (same ? "" : " as " + o.target.string()) << "; ";
            if (pid) out << "the provisioning agent (pid " << *pid << ") provisions again with it.\n";
            else out << "no provisioning agent is running (" << o.pid_file.string() << "): it reads the configuration when it starts.\n";
        }
        return 0;
    } catch (const UsageError& e) {
        err << "cairnctl config: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::exception& e) {
        if (o.json) out << json{{"file", o.file.string()}, {"valid", false}, {"error", e.what()}}.dump(2) << "\n";
        err << "cairnctl config: " << e.what() << (o.command == "apply" ? " (nothing applied)" : o.command == "import" ? " (nothing written)" : "")
            << "\n";
        return 1;
    }
}

}  // namespace cairn::provisioning
