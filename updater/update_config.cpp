#include "updater/update_config.hpp"

#include "common/file.hpp"
#include "common/toml_reader.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;

UpdateConfig parse_update_config(const std::string& text, const fs::path& file) {
    const toml::table root = TomlReader::parse(text, file);
    TomlReader r(file);
    r.only(root, "", {"http", "channel"});
    UpdateConfig c;
    if (const toml::table* h = r.table(root, "", "http")) {
        r.only(*h, "http", {"ca_bundle", "client_certificate", "client_key", "allow_http", "connect_timeout_sec", "stall_timeout_sec",
                            "max_attempts", "deltas"});
        auto path = [&](const char* name) -> fs::path {
            const auto s = r.string(*h, "http", name);
            if (!s) return {};
            if (s->empty() || (*s)[0] != '/') r.error(*h->get(name), TomlReader::key("http", name), "must be an absolute path");
            return *s;
        };
        c.http.ca_bundle = path("ca_bundle");
        c.http.client_certificate = path("client_certificate");
        c.http.client_key = path("client_key");
        if (c.http.client_certificate.empty() != c.http.client_key.empty())
            r.error(*h, "http", "client_certificate and client_key go together");
        c.http.allow_http = r.boolean(*h, "http", "allow_http").value_or(false);
        c.http.connect_timeout_ms = static_cast<int>(r.integer(*h, "http", "connect_timeout_sec", 1, 600).value_or(15) * 1000);
        c.http.stall_timeout_ms = static_cast<int>(r.integer(*h, "http", "stall_timeout_sec", 1, 3600).value_or(30) * 1000);
        c.http.max_attempts = static_cast<int>(r.integer(*h, "http", "max_attempts", 1, 1000).value_or(8));
        c.http.deltas = r.boolean(*h, "http", "deltas").value_or(true);
    }
    if (const toml::table* ch = r.table(root, "", "channel")) {
        r.only(*ch, "channel", {"url", "interval_sec", "jitter_sec", "install", "reboot"});
        const auto url = r.required_string(*ch, "channel", "url");
        if (!is_bundle_url(url)) r.error(*ch->get("url"), TomlReader::key("channel", "url"), "must be an http:// or https:// URL");
        if (!c.http.allow_http && url.rfind("https://", 0) != 0 && url.rfind("HTTPS://", 0) != 0)
            r.error(*ch->get("url"), TomlReader::key("channel", "url"), "plain http needs [http] allow_http = true");
        c.channel.url = url;
        c.channel.interval_sec = static_cast<int>(r.integer(*ch, "channel", "interval_sec", 10, 366 * 86400).value_or(c.channel.interval_sec));
        c.channel.jitter_sec = static_cast<int>(r.integer(*ch, "channel", "jitter_sec", 0, 366 * 86400).value_or(-1));
        c.channel.install = r.boolean(*ch, "channel", "install").value_or(true);
        if (const auto reboot = r.string(*ch, "channel", "reboot")) {
            const auto policy = parse_reboot_policy(*reboot);
            if (!policy) r.error(*ch->get("reboot"), TomlReader::key("channel", "reboot"), "\"now\", \"never\" or a UTC window \"HH:MM-HH:MM\"");
            c.channel.reboot = *policy;
        }
    }
    return c;
}

UpdateConfig load_update_config(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(file, ec)) return {};
    return parse_update_config(read_file(file), file);
}

}  // namespace cairn::updater
