// What the updater remembers across boots, in one JSON file under /var/lib/cairn (written
// atomically: temporary file, fsync, rename, fsync of the directory). The firmware's BootOrder and
// BootNext are the truth about what boots; this file is the record of why.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace cairn::updater {

struct SlotRecord {
    std::string state;  // "good", "bad", "installing" (being written), "trial" (written, not yet committed)
    std::string version, build_id;
    int64_t changed = 0;  // seconds since the epoch
};

struct Pending {                // an install waiting for its trial boot
    std::string slot, version;
    std::string phase;          // "written" (slot ready, BootNext not yet set) or "armed" (BootNext set)
    std::string boot_id;        // the boot in which it was armed (/proc/sys/kernel/random/boot_id)
};

struct Event {                  // the outcome of the last install or trial
    std::string kind;           // "installed", "committed", "rolled-back", "failed", "interrupted"
    std::string slot, version, reason;
    int64_t time = 0;
};

struct EtcConflict {            // a file the user changed in /etc whose default the new slot changes
    std::string path;           // "/etc/..."
    std::string resolution;     // what was done: "kept your version"
};

struct UpdateStatus {
    std::map<std::string, SlotRecord> slots;  // "a", "b"
    std::optional<Pending> pending;
    std::optional<Event> last;
    std::vector<EtcConflict> etc_conflicts;   // from the last install
    // Not part of the record: why the latest change is only in the daemon's memory (the save
    // failed, e.g. a full /var); empty when the file holds everything. "save_error" in to_json().
    std::string save_error;
    std::string to_json() const;
};

// A missing file is an empty status; a damaged one (not JSON, cut short, or JSON of the wrong
// shape: missing or mistyped fields, slots other than a and b, unknown states) throws
// DamagedStatus naming it.
class DamagedStatus : public Error {
public:
    using Error::Error;
};
UpdateStatus load_status(const std::filesystem::path& file);
void save_status(const std::filesystem::path& file, const UpdateStatus& status);

// Renames a damaged status file to <file>.damaged-<UTC time, to the ns> beside it, keeping the newest
// `keep` such copies; returns the new name. Throws Error when the rename fails.
std::filesystem::path set_aside_damaged(const std::filesystem::path& file, size_t keep = 3);

}  // namespace cairn::updater
