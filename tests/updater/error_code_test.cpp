#include "updater/error_code.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace cairn;
using namespace cairn::updater;

// The names are an interface (D-Bus, the status file, cairnctl --json): each is fixed here.
TEST(ErrorCode, EveryCodeHasAStableNameThatParsesBack) {
    const std::vector<std::pair<ErrorCode, std::string>> names = {
        {ErrorCode::internal, "internal"},         {ErrorCode::io, "io"},
        {ErrorCode::no_space, "no-space"},         {ErrorCode::bad_bundle, "bad-bundle"},
        {ErrorCode::bad_signature, "bad-signature"}, {ErrorCode::incompatible, "incompatible"},
        {ErrorCode::downgrade, "downgrade"},       {ErrorCode::bad_payload, "bad-payload"},
        {ErrorCode::transfer, "transfer"},         {ErrorCode::verify_failed, "verify-failed"},
        {ErrorCode::save_failed, "save-failed"},   {ErrorCode::boot_control, "boot-control"},
        {ErrorCode::busy, "busy"},                 {ErrorCode::bad_option, "bad-option"},
        {ErrorCode::unhealthy, "unhealthy"},       {ErrorCode::boot_failed, "boot-failed"},
        {ErrorCode::interrupted, "interrupted"},   {ErrorCode::source_changed, "source-changed"},
        {ErrorCode::stale_channel, "stale-channel"},
    };
    for (const auto& [code, name] : names) {
        EXPECT_EQ(error_code_name(code), name);
        EXPECT_EQ(parse_error_code(name), code);
    }
    EXPECT_FALSE(parse_error_code("Bad-Signature"));
    EXPECT_FALSE(parse_error_code(""));
    // How failures without a code are classified.
    EXPECT_EQ(code_of(SystemError("x", ENOSPC), ErrorCode::bad_bundle), ErrorCode::no_space);
    EXPECT_EQ(code_of(SystemError("x", EIO), ErrorCode::bad_bundle), ErrorCode::io);
    EXPECT_EQ(code_of(Error("x"), ErrorCode::bad_bundle), ErrorCode::bad_bundle);
    EXPECT_EQ(code_of(UpdateError(ErrorCode::downgrade, "x"), ErrorCode::bad_bundle), ErrorCode::downgrade);
    EXPECT_EQ(code_of(std::runtime_error("x"), ErrorCode::bad_bundle), ErrorCode::internal);
}
