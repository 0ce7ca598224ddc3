// What the updater remembers across boots, in one JSON file under /var/lib/cairn (written
// atomically: temporary file, fsync, rename, fsync of the directory). The firmware's BootOrder and
// BootNext are the truth about what boots; this file is the record of why.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "updater/error_code.hpp"

namespace cairn::updater {

// The state machines, as enums; their names below are the strings in the status file and on
// D-Bus (the same strings earlier versions wrote, so their files still load).

enum class SlotState {
    unknown,     // "unknown": nothing recorded (a missing record; "" in a file is read as this)
    good,        // "good": boots, committed
    bad,         // "bad": out of BootOrder (refused, rolled back, marked bad)
    installing,  // "installing": being written, or left half-written by a failed install
    trial,       // "trial": written and read back, not yet committed
};
std::string_view slot_state_name(SlotState state);
std::optional<SlotState> parse_slot_state(std::string_view name);

enum class PendingPhase {
    written,  // "written": the slot is ready, BootNext not yet set
    armed,    // "armed": BootNext names it
};
std::string_view pending_phase_name(PendingPhase phase);
std::optional<PendingPhase> parse_pending_phase(std::string_view name);

enum class EventKind {
    installed,      // "installed"
    committed,      // "committed"
    rolled_back,    // "rolled-back": the trial failed (health check, or it did not come up)
    failed,         // "failed": an install failed after the target was marked bad
    interrupted,    // "interrupted": an install was cut off before its trial boot was armed
    fell_back,      // "fell-back": a committed slot failed to boot
    state_rebuilt,  // "state-rebuilt": a damaged status file was set aside
};
std::string_view event_kind_name(EventKind kind);
std::optional<EventKind> parse_event_kind(std::string_view name);

struct SlotRecord {
    SlotState state = SlotState::unknown;
    std::string version, build_id;
    int64_t changed = 0;  // seconds since the epoch
};

struct Pending {                // an install waiting for its trial boot
    std::string slot, version;
    PendingPhase phase = PendingPhase::written;
    std::string boot_id;        // the boot in which it was armed (/proc/sys/kernel/random/boot_id)
};

struct Transfer {               // what an install from a server moved ("transfer" in the file)
    uint64_t payload_bytes = 0; // the slot's payloads in the bundle: root, tree and ESP
    uint64_t downloaded = 0;    // bytes received (the head, payloads, and anything fetched again)
    uint64_t reused = 0;        // payload bytes the device already had: root blocks in place, zeros or
                                // copied from the running slot; a tree or ESP already in place
    double seconds = 0;         // the whole install
    uint64_t delta = 0;         // of `downloaded`, bytes of a delta from the running build (updater/delta.hpp)
};

struct Event {                  // the outcome of the last install or trial
    EventKind kind = EventKind::installed;
    std::string slot, version, reason;
    int64_t time = 0;
    // Why it failed, beside the reason (updater/error_code.hpp); none for a success. "code" in the
    // file: absent in files of earlier versions, a name this version does not know is read as internal.
    std::optional<ErrorCode> code;
    std::optional<Transfer> transfer;  // installs from a server (absent in earlier files)
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
// shape: missing or mistyped fields, slots other than a and b, unknown states, phases or event
// kinds) throws
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
