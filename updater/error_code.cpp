#include "updater/error_code.hpp"

#include <cerrno>
#include <utility>

namespace cairn::updater {

namespace {

constexpr std::pair<ErrorCode, std::string_view> names[] = {
    {ErrorCode::internal, "internal"},
    {ErrorCode::io, "io"},
    {ErrorCode::no_space, "no-space"},
    {ErrorCode::bad_bundle, "bad-bundle"},
    {ErrorCode::bad_signature, "bad-signature"},
    {ErrorCode::incompatible, "incompatible"},
    {ErrorCode::downgrade, "downgrade"},
    {ErrorCode::bad_payload, "bad-payload"},
    {ErrorCode::transfer, "transfer"},
    {ErrorCode::verify_failed, "verify-failed"},
    {ErrorCode::save_failed, "save-failed"},
    {ErrorCode::boot_control, "boot-control"},
    {ErrorCode::busy, "busy"},
    {ErrorCode::bad_option, "bad-option"},
    {ErrorCode::unhealthy, "unhealthy"},
    {ErrorCode::boot_failed, "boot-failed"},
    {ErrorCode::interrupted, "interrupted"},
    {ErrorCode::source_changed, "source-changed"},
    {ErrorCode::stale_channel, "stale-channel"},
};

}  // namespace

std::string_view error_code_name(ErrorCode code) {
    for (const auto& [c, name] : names)
        if (c == code) return name;
    return "internal";
}

std::optional<ErrorCode> parse_error_code(std::string_view name) {
    for (const auto& [c, n] : names)
        if (n == name) return c;
    return std::nullopt;
}

void fail_update(ErrorCode code, const std::string& message) { throw UpdateError(code, message); }

ErrorCode code_of(const std::exception& e, ErrorCode fallback) {
    if (const auto* u = dynamic_cast<const UpdateError*>(&e)) return u->code();
    if (const auto* s = dynamic_cast<const SystemError*>(&e)) return s->err() == ENOSPC ? ErrorCode::no_space : ErrorCode::io;
    if (dynamic_cast<const Error*>(&e)) return fallback;
    return ErrorCode::internal;
}

}  // namespace cairn::updater
