// Update channels without a server of Cairn's: beside the bundles on any static HTTP(S) server
// sits a small signed index per channel (stable.json, beta.json) naming the version devices on
// that channel should run and where its bundle is. `cairn publish` writes it; cairn-updated polls
// it (update.toml [channel]), and installs a newer version from it by itself.
//
// The file (docs/bundle.md, "Channels"):
//   {"signed": {"format": 1, "channel": "stable", "compatible": "cairn-minimal",
//               "version": "0.2.0", "build_id": "…", "bundle": "minimal-0.2.0.cairn",
//               "size": 123456, "published": 1764806400, "expires": 1767398400},
//    "signature": "<base64 of a detached DER CMS signature>"}
// The signature covers the "signed" object as nlohmann::json::dump() writes it (keys sorted, no
// spaces): the bytes are made again from what was parsed, so what is checked is exactly what is
// used. It is made with the bundle signing key and checked against the device's bundle trust
// anchor, as a bundle's manifest is (updater/signature.hpp).
//
// Against a hostile server or network: the file is at most 64 KiB; its signature, compatible and
// form are checked before any field is used; an index published before one the device already
// accepted is refused (a replayed old index cannot hide a newer release), as is an expired one;
// `bundle` is resolved against the index's URL and must be http(s); the bundle it names is
// checked as any bundle, and must also be the build the index names (InstallOptions::expect_build_id).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "updater/error_code.hpp"
#include "updater/http_bundle.hpp"
#include "updater/status.hpp"

namespace cairn::updater {

inline constexpr int channel_format = 1;
inline constexpr size_t channel_file_max = 64 * 1024;

struct ChannelIndex {
    std::string channel, compatible, version, build_id;
    std::string bundle;              // the bundle's URL, absolute or relative to the index's
    uint64_t size = 0;               // the bundle's size in bytes
    int64_t published = 0;           // seconds since the epoch
    std::optional<int64_t> expires;  // seconds since the epoch; devices refuse the index after it

    // The bytes the signature covers.
    std::string signed_json() const;
};

// The channel file: `index` signed with the PEM key and certificate (+ intermediates).
std::string make_channel_file(const ChannelIndex& index, const std::filesystem::path& key, const std::filesystem::path& cert,
                              const std::string& passphrase = {}, std::optional<int64_t> signing_time = {});

// Parses and checks a channel file named `what` (its URL): size, form (strict: unknown format or
// fields, wrong types), the signature against `trust_anchor` with certificates valid at
// `certificate_time`. Throws UpdateError: bad-bundle for the form, bad-signature.
ChannelIndex open_channel_file(std::string_view text, const std::filesystem::path& trust_anchor, int64_t certificate_time,
                               const std::string& what);

// The bundle's URL: `bundle` as it is when it is an http(s) URL, else resolved against the index's
// URL (its directory, or its host for "/…"), without the index's query. Throws UpdateError
// bad-bundle for anything else (another scheme, "..", spaces or control characters).
std::string resolve_bundle_url(const std::string& index_url, const std::string& bundle);

// Fetches the channel file (GET, at most channel_file_max bytes) and opens it.
ChannelIndex fetch_channel_index(const std::string& url, const HttpSettings& http, const std::filesystem::path& trust_anchor,
                                 int64_t certificate_time);

// What a device does with an index it accepted.
enum class ChannelVerdict {
    up_to_date,  // "up-to-date": it runs that version (or a newer one)
    waiting,     // "waiting": that build is installed in the other slot, its trial boot pending
    skipped,     // "skipped": that build failed on this device before (rolled back or refused): not again
    available,   // "available": newer; installed when the channel says install
};
std::string_view channel_verdict_name(ChannelVerdict verdict);

// Decides, and refuses (UpdateError) an index for another system (incompatible), one published
// before `last_published`, the newest the device accepted, or one expired at `now` (stale-channel).
ChannelVerdict judge_channel_index(const ChannelIndex& index, const std::string& compatible, const std::string& running_version,
                                   const std::string& running_build_id, const UpdateStatus& status, int64_t last_published,
                                   int64_t now);

// When to reboot into an update a channel installed (update.toml [channel] reboot).
struct RebootPolicy {
    enum class Kind { now, never, window } kind = Kind::now;
    int start_minute = 0, end_minute = 0;  // window: minutes after 00:00 UTC; end < start crosses midnight
};
// "now", "never" or "HH:MM-HH:MM" (UTC); nullopt when it is none of these.
std::optional<RebootPolicy> parse_reboot_policy(std::string_view text);
// A moment to reboot for a window policy: the next time (≥ now) inside the window, at a random
// place in it (so a fleet does not reboot in step). `now` and the result in seconds since the epoch.
int64_t next_reboot_time(const RebootPolicy& policy, int64_t now, std::mt19937_64& random);

// update.toml [channel].
struct ChannelSettings {
    std::string url;             // the index; empty: no channel is followed
    int interval_sec = 6 * 3600; // between checks
    int jitter_sec = -1;         // a random delay of up to this added to each wait; -1: interval / 10
    bool install = true;         // install a newer version (false: only report it)
    RebootPolicy reboot;
    int jitter() const { return jitter_sec >= 0 ? jitter_sec : interval_sec / 10; }
};

// What the device remembers of its channel: channel.json beside the status file, written
// atomically after each check. `published` is the newest index accepted (replays are refused).
struct ChannelState {
    std::string url;                 // redacted (no query)
    int64_t checked = 0;             // when the last check ended
    int64_t published = 0;
    std::string version;             // what the last index accepted names
    std::string result;              // a ChannelVerdict's name, "installed", or "failed"
    std::optional<ErrorCode> code;   // of a failed check or install
    std::string message;
    int64_t next_check = 0;          // when the daemon checks again (0: not scheduled)
    int64_t reboot_at = 0;           // a reboot scheduled for an installed update (0: none)
    std::string reboot_boot;         // the boot it was scheduled in (/proc/sys/kernel/random/boot_id):
                                     // once the device has rebooted, it is void
    std::string to_json() const;
};
// A missing file is an empty state; a damaged one throws Error naming it.
ChannelState load_channel_state(const std::filesystem::path& file);
void save_channel_state(const std::filesystem::path& file, const ChannelState& state);

}  // namespace cairn::updater
