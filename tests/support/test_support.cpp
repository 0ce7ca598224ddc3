#include "tests/support/test_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"

namespace cairn::test {

Scratch::Scratch() {
    std::filesystem::path base = std::filesystem::temp_directory_path();
    std::string templ = (base / "cairn-test-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
}

Scratch::~Scratch() {
    try {
        remove_tree(path_);
    } catch (...) {
    }
}

void write_text(const std::filesystem::path& path, const std::string& text) {
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
}

void write_random(const std::filesystem::path& path, uint64_t size, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::ofstream out(path, std::ios::binary);
    std::vector<uint64_t> buffer(8192);
    while (size > 0) {
        for (auto& v : buffer) v = rng();
        uint64_t n = std::min<uint64_t>(size, buffer.size() * 8);
        out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(n));
        size -= n;
    }
}

bool is_root() { return ::geteuid() == 0; }

void expect_error(const std::function<void()>& action, const std::vector<std::string>& parts) {
    try {
        action();
        ADD_FAILURE() << "no Error thrown";
    } catch (const Error& e) {
        std::string message = e.what();
        for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message << "\nlacks: " << part;
    }
}

std::filesystem::path source_dir() { return CAIRN_SOURCE_DIR; }
std::filesystem::path cairn_binary() { return CAIRN_BINARY; }
std::filesystem::path test_images() { return CAIRN_TEST_IMAGES; }

sockaddr_in loopback_address(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

UniqueFd connect_loopback(uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_in a = loopback_address(port);
    if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
    return fd;
}

uint16_t free_port() {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = loopback_address(0);
    if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("free_port: bind failed");
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
}

}  // namespace cairn::test
