// The updater's logic, independent of D-Bus: installing a bundle into the other slot, deciding at
// boot whether this is a trial to commit or a fallback to report, marking slots. cairn-updated
// wraps it; tests drive it with a fake boot control and a disk image file.
//
// An install is a short sequence of named steps over one install context (engine.cpp, "The
// install"), each only after the one before succeeded:
//   check     open the bundle: header, CMS signature against the trust anchor (certificates
//             checked at the clock's time, never before the running image's build time),
//             manifest; then compatible, version (a downgrade needs `force`), the disk, the sizes
//             against the target's partitions;
//   verify    (a source with random access) read every payload for the target once and check it:
//             the root through its verity tree (whose superblock must say what the manifest says)
//             and by its sha256, the tree and the ESP by sha256: a damaged bundle is refused before
//             anything is written;
//   mark-bad  status "installing", the target out of BootOrder;
//   write     write root-verity, ESP and root into the target's partitions (O_DIRECT where the
//             disk takes it) while a second thread reads them back behind the writer: the root
//             against the tree just written, which must give the manifest's root hash, the ESP by
//             its sha256; then flush. A source read once (a pipe) is written as it arrives, each
//             payload checked by its sha256 at its end, and read back after the flush. A source
//             read by ranges (a server) gives tree and ESP checked before they are written and the
//             root block by block, reusing what the device has (install_url), read back by a
//             second thread behind the assembly;
//   arm       status: target "trial", pending "written"; BootNext = target; pending "armed".
// Progress is the sum of the steps' weights (the bytes each reads and writes; the small steps a
// hundredth of the payloads each), reported in order, never backwards, each message beginning
// with the step's name ("write: root_b"); 100 only when the slot is armed. A failure is an
// UpdateError with its code (updater/error_code.hpp); one after mark-bad is also recorded in the
// status file (last: "failed", with the code).
// A power cut anywhere leaves BootOrder naming only the running slot until arm sets BootNext,
// and BootNext names a slot that was completely written and read back.
//
// The status file (status.hpp) is the record of why; the firmware's variables are the truth of
// what boots. Two saves are essential: the target marked "installing" (mark-bad) and the target
// "trial" with its pending install (arm, before BootNext is set). If either cannot be written
// durably, the install fails (save-failed) and the slot is not armed. Every other save (after BootNext, at boot,
// commit, a failed trial, Mark) follows a change the firmware already holds: when it fails (a full
// or read-only /var), the engine logs it, keeps the state in memory, reports it as `save_error` in
// status(), and writes the whole state again at the next change.
// A damaged status file is moved aside (status.json.damaged-<time>, the newest three kept) and the
// state rebuilt from the boot control: the booted slot, BootOrder and BootNext.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "updater/boot_control.hpp"
#include "updater/bundle.hpp"
#include "updater/http_bundle.hpp"
#include "updater/error_code.hpp"
#include "updater/status.hpp"

namespace cairn::updater {

// What the running system is, from /usr/lib/cairn/release.json in its root.
struct Release {
    std::string compatible, version, build_id;
    // When the image was built (seconds since the epoch, the build's SOURCE_DATE_EPOCH); 0 when
    // release.json predates it. Certificates are checked at no earlier time (cms_verify).
    int64_t created = 0;
    std::vector<std::string> health_check;     // argv; empty: the default check (services up)
    std::map<std::string, std::string> etc;    // this root's /etc defaults: path -> sha256
    static Release load(const std::filesystem::path& file);
};

struct EngineConfig {
    std::filesystem::path disk;           // whole disk holding esp_X, root_X, root_X_verity (device or image file)
    std::filesystem::path state_file;     // /var/lib/cairn/update/status.json
    std::filesystem::path trust_anchor;   // /usr/share/cairn/update-ca.pem
    std::filesystem::path etc_upper;      // the /etc overlay's upper dir (user changes); may not exist
    std::filesystem::path boot_id_file = "/proc/sys/kernel/random/boot_id";
    Release release;
    std::function<int64_t()> clock;       // seconds since the epoch; empty: the system clock (tests set it)
    // A bundle read from a pipe that sends nothing for this long fails the install (a stalled SSH
    // session must not keep the daemon busy for ever).
    std::chrono::milliseconds stall_timeout = std::chrono::minutes(5);
};

struct InstallOptions {
    bool force = false;                   // allow a downgrade
    // When set (an install a channel index asked for), the bundle must be this build, else
    // source-changed before anything is written: the index and the bundle on the server disagree.
    std::string expect_build_id;
};

// percent: 0 to 100, never lower than the one before; message: "<step>: <what it is doing>".
using ProgressFn = std::function<void(int percent, const std::string& message)>;

// The steps of an install, in order (above).
enum class InstallStep { check, verify, mark_bad, write, arm };
std::string_view install_step_name(InstallStep step);  // "check", "verify", "mark-bad", "write", "arm"

// Opens the bundle for the check step: header, signature against `trust_anchor` (certificates
// valid at `certificate_time`), manifest. Throws Error (with a code where it knows one).
using SourceOpener = std::function<std::unique_ptr<BundleSource>(const std::filesystem::path& trust_anchor, int64_t certificate_time)>;

// What a Mark call asks for.
enum class MarkState { good, bad, active };
std::string_view mark_state_name(MarkState state);  // "good", "bad", "active"
std::optional<MarkState> parse_mark_state(std::string_view name);

// The result of the boot-time decision.
struct BootDecision {
    enum class Kind { normal, trial, rolled_back, interrupted, fell_back } kind = Kind::normal;
    std::string slot, reason;
};

class Engine {
public:
    Engine(BootControl& boot, EngineConfig config);
    // Throws Error with the reason; the target slot is untouched when the bundle is refused.
    void install(const std::filesystem::path& bundle, const InstallOptions& options, const ProgressFn& progress);
    // The same from an open descriptor named `name` in messages. A file or block device is checked
    // whole before the slot is touched. A pipe (`cairnctl update install -`) is read once: what can
    // refuse the bundle without its payloads (signature, compatible, version, disk, sizes) still
    // refuses it before any write; then the slot is marked bad, the payloads are written as they
    // arrive, each checked by its signed sha256 at its end, and the slot is read back and verified
    // against its tree and the signed root hash before it is armed, exactly as for a file.
    void install(UniqueFd bundle, const std::string& name, const InstallOptions& options, const ProgressFn& progress);
    // The same from any source (a later HTTP source plugs in here): the steps read the bundle only
    // through BundleSource. Failures are UpdateError (or, from outside Cairn's code, other exceptions).
    void install(const SourceOpener& open, const InstallOptions& options, const ProgressFn& progress);
    // From an http:// or https:// URL (HttpBundle), straight into the slot: the
    // signed head first, then the slot's tree and ESP (each checked by its signed sha256 before it
    // is written), then the root assembled block by block (updater/assemble.hpp: blocks the device
    // holds are reused, the rest fetched, each checked against the tree before it is written), read
    // back and armed as any install. Run again after a cut or a power loss, it finds what is
    // already in the slot and fetches only the rest. The last event records what moved (transfer).
    // `http`: how to reach the server (the daemon reads /etc/cairn/update.toml for each install).
    void install_url(const std::string& url, const HttpSettings& http, const InstallOptions& options, const ProgressFn& progress);
    // At daemon start: records the booted slot, recognises a trial (the booted slot is not first
    // in BootOrder) or a fallback (an armed install from an earlier boot whose slot did not stay).
    // `failure_reason` is what the failed slot left behind (e.g. cairn-init's EFI variable), if anything.
    BootDecision on_boot(const std::string& failure_reason = {});
    // After a trial's health check: commit (BootOrder with the booted slot first) or record the
    // failure (the caller then reboots, and the firmware falls back).
    void commit();
    void fail_trial(const std::string& reason, ErrorCode code = ErrorCode::unhealthy);
    // Mark(state, slot): good (first in BootOrder), bad (out of BootOrder), active (BootNext).
    Slot mark(MarkState state, const std::string& slot);
    Slot mark(const std::string& state, const std::string& slot);  // parses it; Error on an unknown state
    // The last state recorded (or, after a failed save, held in memory). A damaged file is moved
    // aside and the state rebuilt from the boot control, with a log line.
    UpdateStatus status() const;
    Slot booted() const { return boot_.booted(); }

private:
    struct InstallContext;  // engine.cpp
    // The steps (above), in order.
    void check(InstallContext& in, const SourceOpener& open);
    void verify(InstallContext& in);
    void mark_bad(InstallContext& in);
    void write(InstallContext& in);
    void write_ranged(InstallContext& in, RangeSource& remote);  // write, for a source read by ranges
    void open_delta(InstallContext& in);                         // write_ranged: a delta from the running build
    void arm(InstallContext& in);
    void record_failure(InstallContext& in, const UpdateError& e);
    enum class Durability { essential, best_effort };
    // essential: throws UpdateError (save-failed) when the file cannot be written. best_effort: logs, keeps `st` in
    // memory (status() returns it) and returns.
    void save(const UpdateStatus& st, Durability durability = Durability::best_effort);
    UpdateStatus rebuild(const std::string& why) const;
    int64_t now() const;
    std::string boot_id() const;
    BootControl& boot_;
    EngineConfig config_;
    mutable std::mutex mutex_;                  // status() runs on the D-Bus thread while a worker installs
    mutable std::optional<UpdateStatus> unsaved_;
    mutable std::string save_error_;
};

}  // namespace cairn::updater
