#include "tpm/swtpm.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <random>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"

namespace cairn::tpm {

namespace {

sockaddr_in loopback(uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

bool port_free(uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr = loopback(port);
    return fd && ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

bool accepts(uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr = loopback(port);
    return fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::string log_text(const std::filesystem::path& log) {
    try {
        std::string text = read_file(log);
        return text.size() > 600 ? text.substr(text.size() - 600) : text;
    } catch (const Error&) {
        return "(no log)";
    }
}

}  // namespace

Swtpm::Swtpm(const std::filesystem::path& state_dir) : state_dir_(std::filesystem::absolute(state_dir)) {
    std::filesystem::create_directories(state_dir_);
    start();
}

Swtpm::~Swtpm() { stop(); }

std::string Swtpm::tcti() const { return "swtpm:host=127.0.0.1,port=" + std::to_string(port_); }

void Swtpm::stop() {
    if (process_) process_->stop(2000);
    process_.reset();
}

void Swtpm::restart() {
    stop();
    start();
}

void Swtpm::start() {
    const std::filesystem::path log = state_dir_.parent_path() / (state_dir_.filename().string() + ".swtpm.log");
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(20000, 60000);
    const bool fixed = port_ != 0;
    for (int attempt = 0; attempt < 8; ++attempt) {
        if (!fixed) {
            do port_ = static_cast<uint16_t>(pick(rng) & ~1);
            while (!port_free(port_) || !port_free(static_cast<uint16_t>(port_ + 1)));
        }
        RunOptions options;
        options.die_with_parent = true;
        process_ = std::make_unique<Process>(
            std::vector<std::string>{"swtpm", "socket", "--tpm2", "--server", "type=tcp,port=" + std::to_string(port_) + ",bindaddr=127.0.0.1",
                                     "--ctrl", "type=tcp,port=" + std::to_string(port_ + 1) + ",bindaddr=127.0.0.1", "--flags",
                                     "not-need-init,startup-clear", "--tpmstate", "dir=" + state_dir_.string()},
            log, options);
        const auto t0 = std::chrono::steady_clock::now();
        while (process_->running()) {
            if (accepts(port_)) return;
            if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) break;
            ::usleep(5000);
        }
        process_->stop(500);
        process_.reset();
        if (fixed && attempt >= 3) break;
        if (fixed) ::usleep(200000);  // the old instance's ports may still be closing
    }
    fail("swtpm: could not start on " + state_dir_.string() + ": " + log_text(log));
}

}  // namespace cairn::tpm
