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

// Throws Error(message).
[[noreturn]] void fail(const std::string& message);

// Throws Error("<what>: <strerror(err)>"); err defaults to the current errno.
[[noreturn]] void fail_errno(const std::string& what);
[[noreturn]] void fail_errno(const std::string& what, int err);

std::string errno_text(int err);

}  // namespace cairn
