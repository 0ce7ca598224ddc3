// `cairn delta`: the file a device running one build downloads, instead of the blocks it lacks, to
// install the bundle of another (updater/delta.hpp has the format and the device's side).
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "updater/delta.hpp"

namespace cairn::imager {

struct DeltaOptions {
    std::filesystem::path from;  // the bundle of the build devices run
    std::filesystem::path to;    // the bundle they are to install
    std::filesystem::path out;   // empty: beside `to`, named as devices look for it (updater::delta_url)
    int level = 19;              // zstd's
    std::function<void(const std::string&)> progress;  // a line per payload
};

struct DeltaResult {
    std::filesystem::path file;
    updater::DeltaTable table;
    uint64_t size = 0;       // of the file
    uint64_t payloads = 0;   // what a device installing `to` would otherwise have to place: one slot's root, tree and ESP
};

// Reads both bundles' heads (their signatures are not checked here: a device checks everything a
// delta gives against the signed manifest of `to`), cuts each payload a device writes into segments
// and, for each segment that differs from what a device running `from` has, patches it against the
// same range of that base. Root segments whose blocks such a device has anywhere (it copies them)
// get no section. Written under a temporary name and renamed into place. Throws Error naming the
// bundle at fault: not a bundle, cut short, or bundles of different systems.
DeltaResult make_delta(const DeltaOptions& options);

}  // namespace cairn::imager
