#include "common/error.hpp"

#include <cerrno>
#include <cstring>

namespace cairn {

void fail(const std::string& message) { throw Error(message); }

std::string errno_text(int err) { return std::strerror(err); }

void fail_errno(const std::string& what) { fail_errno(what, errno); }

void fail_errno(const std::string& what, int err) { throw SystemError(what + ": " + errno_text(err), err); }

}  // namespace cairn
