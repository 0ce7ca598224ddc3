// The device's update configuration, /etc/cairn/update.toml (optional: without it, bundles come
// from files and pipes, and from https:// servers the system's CA store trusts):
//
//   [http]
//   ca_bundle = "/etc/cairn/update-server-ca.pem"   # CAs for bundle servers (default: the system's store)
//   client_certificate = "/etc/cairn/device.pem"    # TLS client authentication (optional, with client_key)
//   client_key = "/etc/cairn/device.key"
//   allow_http = false                             # take signed bundles from plain http:// too
//   connect_timeout_sec = 15
//   stall_timeout_sec = 30                          # under 1 byte/s this long: the request is retried
//   max_attempts = 8                                # failed requests in a row without progress
//
//   [channel]                                     # follow an update channel (updater/channel.hpp)
//   url = "https://updates.example.com/minimal/stable.json"
//   interval_sec = 21600                            # between checks (at least 10)
//   jitter_sec = 2160                               # a random delay of up to this added to each wait
//                                                   #   (default: a tenth of the interval)
//   install = true                                  # install a newer version (false: report it only)
//   reboot = "now"                                  # after installing: "now", "never" (you reboot), or
//                                                   #   a daily window in UTC, "02:00-04:00"
//
// Proxies come from the daemon's environment (https_proxy, no_proxy), as libcurl reads them.
#pragma once

#include <filesystem>
#include <string>

#include "updater/channel.hpp"
#include "updater/http_bundle.hpp"

namespace cairn::updater {

struct UpdateConfig {
    HttpSettings http;
    ChannelSettings channel;  // url empty: no channel
};

// Throws Error "<file>:<line>: <key>: <what>" on unknown keys, wrong types, relative paths.
UpdateConfig parse_update_config(const std::string& text, const std::filesystem::path& file);
// A missing file is the defaults.
UpdateConfig load_update_config(const std::filesystem::path& file);

}  // namespace cairn::updater
