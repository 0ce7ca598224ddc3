// `cairn publish`: a bundle and its channel's signed index (updater/channel.hpp), in a folder
// ready to upload to any static HTTP(S) server, CDN or object store. Devices following the
// channel (update.toml [channel] url = ".../stable.json") pick the new version up by themselves.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "imager/delta.hpp"
#include "updater/channel.hpp"

namespace cairn::imager {

struct PublishOptions {
    std::filesystem::path bundle;      // made by `cairn bundle`
    std::string channel = "stable";    // the index is <out_dir>/<channel>.json
    std::filesystem::path out_dir;
    std::filesystem::path key, cert;   // PEM signing key and certificate: the bundle signer's kind
    std::string key_passphrase;
    std::string url;                   // the bundle's URL in the index; empty: its file name, and the
                                       // bundle is copied into out_dir beside the index
    std::optional<int> expires_days;   // devices refuse the index this many days after publishing
    std::filesystem::path trust_anchor;  // when given: the bundle and the index are checked as a
                                         // device holding this anchor checks them
    int64_t now = 0;                   // seconds since the epoch; 0: the clock
    // Bundles of builds devices may run: a delta from each (imager/delta.hpp) is written beside
    // the bundle, after it and before the index. Not with `url`.
    std::vector<std::filesystem::path> delta_from;
    int delta_level = 19;              // zstd's level for them (DeltaOptions::level)
};

struct PublishResult {
    std::filesystem::path index_file, bundle_file;  // bundle_file empty when url was given
    updater::ChannelIndex index;
    std::vector<DeltaResult> deltas;
};

// Checks the bundle (its signature intact; against trust_anchor when given) and the signer
// certificate (it may sign bundles), then writes the bundle (unless url) and after it the index,
// each under a temporary name renamed into place: a server synced from out_dir never names a
// bundle it does not hold. `published` is the clock, and always after the index it replaces (a
// device refuses an index older than one it accepted). Throws Error naming the file at fault.
PublishResult publish(const PublishOptions& options);

}  // namespace cairn::imager
