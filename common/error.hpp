// The one error style of Cairn: throw cairn::Error with a message that names the object at fault
// (file, device, recipe key) and the reason. Programs catch it once, print one line, exit non-zero.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace cairn {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// An Error from a failed system call (fail_errno): the same message, and the errno for callers
// that classify failures (updater/error_code.hpp: ENOSPC is no-space, the rest I/O).
class SystemError : public Error {
public:
    SystemError(const std::string& message, int err) : Error(message), err_(err) {}
    int err() const { return err_; }

private:
    int err_;
};

// Throws Error(message).
[[noreturn]] void fail(const std::string& message);

// Throws SystemError("<what>: <strerror(err)>", err); err defaults to the current errno.
[[noreturn]] void fail_errno(const std::string& what);
[[noreturn]] void fail_errno(const std::string& what, int err);

std::string errno_text(int err);

}  // namespace cairn
