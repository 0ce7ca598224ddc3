// Shared by the fuzz targets in fuzz/: each target is one LLVMFuzzerTestOneInput over one parser of
// untrusted input. A cairn::Error is the parser's answer to bad input and is caught; anything else
// (another exception, a crash, a sanitizer report, a hang) is a bug the target lets through.
// Built two ways (fuzz/CMakeLists.txt): with clang's libFuzzer (CAIRN_FUZZ=ON), and with the normal
// compiler against replay_main.cpp, which runs the committed corpus and regressions under CTest.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace cairn::fuzz {

inline std::string_view text(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

// The input as an anonymous in-memory file (memfd), for parsers that take a path: /proc/self/fd/N.
class MemFile {
public:
    MemFile(const uint8_t* data, size_t size) : fd_(::memfd_create("cairn-fuzz", MFD_CLOEXEC)) {
        if (!fd_) fail_errno("memfd_create");
        pwrite_exact(fd_.get(), data, size, 0, "memfd");
    }
    std::string path() const { return "/proc/self/fd/" + std::to_string(fd_.get()); }

private:
    UniqueFd fd_;
};

// Runs `parse`; a cairn::Error is an expected outcome.
template <typename F>
void expect_only_errors(F&& parse) {
    try {
        parse();
    } catch (const cairn::Error&) {
    }
}

}  // namespace cairn::fuzz
