// Why an install or a trial failed, as a closed set of codes with stable names: clients
// (cairnctl, scripts) and tests branch on the code; the message beside it is for people and may
// change. The model is update_engine's common/error_code.h, with names instead of numbers.
//
// The names are an interface: they appear in the D-Bus signal Completed, the property
// LastErrorCode, the status file (last.code) and `cairnctl update install --json`. Add codes at
// the end; never rename or reuse one.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace cairn::updater {

enum class ErrorCode {
    internal,       // "internal": an unexpected failure (a bug); the message says what
    io,             // "io": reading the bundle, or writing or reading the disk, failed (an errno)
    no_space,       // "no-space": a payload does not fit its partition, or a write found no room
    bad_bundle,     // "bad-bundle": not a bundle, an unsupported format, a malformed manifest, cut short
    bad_signature,  // "bad-signature": the signature does not verify, does not chain to the trust
                    //   anchor, its certificate is expired or not yet valid or may not sign bundles
    incompatible,   // "incompatible": built for another system (compatible) or another disk (disk GUID)
    downgrade,      // "downgrade": older than the running version, without force
    bad_payload,    // "bad-payload": a payload does not match the signed manifest (corrupted or altered)
    transfer,       // "transfer": a bundle on a pipe or from a server stopped coming (the sender
                    //   stalled or ended early, the server could not be had or answered wrongly)
    verify_failed,  // "verify-failed": the written slot reads back wrong
    save_failed,    // "save-failed": the status file could not record an essential step
    boot_control,   // "boot-control": the firmware's boot variables could not be changed
    busy,           // "busy": an install or health check is already running
    bad_option,     // "bad-option": an unknown install option, or an /etc/cairn/update.toml that does not
                    //   parse (for an install from a server)
    unhealthy,      // "unhealthy": the trial boot failed its health check
    boot_failed,    // "boot-failed": a slot did not come up (cairn-init refused it, it crashed, or it lost
                    //   power before committing) and the firmware fell back
    interrupted,    // "interrupted": an install was cut off (power loss, the daemon killed) before
                    //   its trial boot was armed
    source_changed, // "source-changed": the bundle on the server changed during the install (its
                    //   ETag, Last-Modified or size moved), or is not the build its channel index names
    stale_channel,  // "stale-channel": a channel index older than one the device accepted before (a
                    //   replay), or past its expiry
};

std::string_view error_code_name(ErrorCode code);
std::optional<ErrorCode> parse_error_code(std::string_view name);

// An Error with its code. Everything else stays a cairn::Error; code_of() classifies those.
class UpdateError : public Error {
public:
    UpdateError(ErrorCode code, const std::string& message) : Error(message), code_(code) {}
    ErrorCode code() const { return code_; }

private:
    ErrorCode code_;
};

// Throws UpdateError(code, message).
[[noreturn]] void fail_update(ErrorCode code, const std::string& message);

// The code of a failure: an UpdateError's own; a SystemError's errno (ENOSPC: no_space, else io);
// `fallback` for any other cairn::Error (the step it came from knows what it was doing); internal
// for anything else.
ErrorCode code_of(const std::exception& e, ErrorCode fallback);

// Runs body(); a cairn::Error leaves as UpdateError, classified by code_of(…, fallback). Other
// exceptions pass unchanged (the daemon calls them internal; a test's simulated power cut stays one).
template <typename F>
auto with_code(ErrorCode fallback, F&& body) -> decltype(body()) {
    try {
        return body();
    } catch (const UpdateError&) {
        throw;
    } catch (const Error& e) {
        throw UpdateError(code_of(e, fallback), e.what());
    }
}

}  // namespace cairn::updater
