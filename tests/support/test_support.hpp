// Shared helpers for Cairn's tests.
#pragma once

#include <netinet/in.h>

#include <cstdint>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/fd.hpp"

namespace cairn::test {

// A fresh directory under the build's temporary area, removed when the test ends.
class Scratch {
public:
    Scratch();
    ~Scratch();
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// Writes text to a file, creating parent directories.
void write_text(const std::filesystem::path& path, const std::string& text);

// Writes `size` bytes of deterministic pseudo-random data.
void write_random(const std::filesystem::path& path, uint64_t size, uint32_t seed);

bool is_root();

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t free_port();
// 127.0.0.1:port, and a TCP connection to it (an empty UniqueFd when it is refused).
sockaddr_in loopback_address(uint16_t port);
UniqueFd connect_loopback(uint16_t port);

// Runs `action`, expecting a cairn::Error whose message holds each of `parts` (a test failure otherwise).
void expect_error(const std::function<void()>& action, const std::vector<std::string>& parts);

std::filesystem::path source_dir();
std::filesystem::path cairn_binary();
// Where the integration fixture builds the shipped recipes (build/test-images/<recipe>).
std::filesystem::path test_images();

}  // namespace cairn::test
