#include "firewall/policy.hpp"

#include <charconv>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/toml_reader.hpp"

namespace cairn::firewall {

uint32_t parse_duration(const std::string& text, const std::string& what) {
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    std::string unit(end, text.data() + text.size());
    uint64_t factor = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : 0;
    if (ec != std::errc() || end == text.data() || factor == 0 || value == 0 || value * factor > 7 * 86400)
        fail(what + ": '" + text + "' is not a duration such as \"60s\", \"10m\" or \"1h\" (at most a week)");
    return static_cast<uint32_t>(value * factor);
}

Policy parse_policy(const std::string& text, const std::filesystem::path& file) {
    toml::table root = TomlReader::parse(text, file);
    TomlReader r(file);
    Policy p;
    r.only(root, "", {"ssh", "inbound"});
    auto integer = [&](const toml::table& t, const std::string& prefix, const char* name, int64_t lo, int64_t hi) -> std::optional<int64_t> {
        const toml::node* n = t.get(name);
        if (!n) return std::nullopt;
        if (!n->is_integer() || *n->value<int64_t>() < lo || *n->value<int64_t>() > hi)
            r.error(*n, TomlReader::key(prefix, name), "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
        return *n->value<int64_t>();
    };
    auto duration = [&](const toml::table& t, const std::string& prefix, const char* name) -> std::optional<uint32_t> {
        const toml::node* n = t.get(name);
        if (!n) return std::nullopt;
        if (n->is_integer()) return static_cast<uint32_t>(*integer(t, prefix, name, 1, 7 * 86400));
        if (!n->is_string()) r.error(*n, TomlReader::key(prefix, name), "must be a duration such as \"60s\" or \"10m\"");
        return parse_duration(*n->value<std::string>(), r.where(*n, TomlReader::key(prefix, name)));
    };
    if (const toml::table* ssh = r.table(root, "", "ssh")) {
        r.only(*ssh, "ssh", {"port", "brute_force"});
        if (auto v = integer(*ssh, "ssh", "port", 1, 65535)) p.ssh_port = static_cast<uint16_t>(*v);
        if (const toml::table* bf = r.table(*ssh, "ssh", "brute_force")) {
            r.only(*bf, "ssh.brute_force", {"max_new", "window", "block", "max_sources"});
            if (auto v = integer(*bf, "ssh.brute_force", "max_new", 1, 1000)) p.max_new = static_cast<uint32_t>(*v);
            if (auto v = duration(*bf, "ssh.brute_force", "window")) p.window_seconds = *v;
            if (auto v = duration(*bf, "ssh.brute_force", "block")) p.block_seconds = *v;
            if (auto v = integer(*bf, "ssh.brute_force", "max_sources", 1, 1000000)) p.max_sources = static_cast<uint32_t>(*v);
        }
    }
    if (const toml::table* in = r.table(root, "", "inbound")) {
        r.only(*in, "inbound", {"tcp", "echo_per_second"});
        if (const toml::node* n = in->get("tcp")) {
            const toml::array* a = n->as_array();
            if (!a) r.error(*n, "inbound.tcp", "must be a list of TCP port numbers");
            for (const toml::node& port : *a) {
                if (!port.is_integer() || *port.value<int64_t>() < 1 || *port.value<int64_t>() > 65535)
                    r.error(port, "inbound.tcp", "must be a list of TCP port numbers (1 to 65535)");
                p.tcp.push_back(static_cast<uint16_t>(*port.value<int64_t>()));
            }
        }
        if (auto v = integer(*in, "inbound", "echo_per_second", 0, 10000)) p.echo_per_second = static_cast<uint32_t>(*v);
    }
    return p;
}

Policy load_policy(const std::filesystem::path& file) { return parse_policy(read_file(file), file); }

}  // namespace cairn::firewall
