// A QEMU machine for boot tests and `cairn qemu`: q35 with OVMF (Secure Boot on by default, with
// the snakeoil keys Debian ships for tests), a swtpm TPM 2.0, a virtio disk, user-mode network
// with port forwards, and a serial console logged to a file and open for input.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/fd.hpp"
#include "common/subprocess.hpp"

namespace cairn::qemu {

struct Config {
    std::filesystem::path disk;          // raw disk image, used in place (read-write)
    std::filesystem::path state_dir;     // NVRAM copy, TPM state, console log, sockets; kept across starts
    bool secure_boot = true;             // OVMF_CODE_4M.secboot.fd + OVMF_VARS_4M.snakeoil.fd; false: plain OVMF
    bool tpm = true;                     // a swtpm per machine; its state stays in state_dir
    unsigned memory_mb = 1024;
    unsigned cpus = 2;
    std::vector<std::pair<uint16_t, uint16_t>> forwards;  // host TCP port (127.0.0.1) -> guest port
    std::vector<std::string> extra_args;
};

class Machine {
public:
    explicit Machine(Config config);
    ~Machine();  // stops QEMU and swtpm; never throws
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // Starts swtpm (if asked) and QEMU. The first start copies the firmware's variable store.
    void start();
    // Waits until `marker` appears in the console since the last start(); returns its offset in
    // console(). Throws Error naming the marker, with the console's last lines, on a timeout or
    // when QEMU exits first.
    size_t wait_for(const std::string& marker, std::chrono::seconds timeout);
    // Like wait_for, but only looks at output from offset `from` on.
    size_t wait_for_after(const std::string& marker, size_t from, std::chrono::seconds timeout);
    std::string console() const;         // the console output since the last start()
    std::string console_tail(size_t lines) const;
    void send(const std::string& text);  // types on the serial console
    bool running();
    void reset();                        // system_reset: same process; disk, NVRAM and TPM kept
    void power_off(std::chrono::seconds grace = std::chrono::seconds(30));  // ACPI power button, then kill
    void kill();                         // SIGKILL at once: a power cut
    std::optional<int> wait_exit(std::chrono::seconds timeout);
    std::string qmp(const std::string& execute_json);  // one QMP command, its reply
    const Config& config() const { return config_; }
    std::filesystem::path console_log() const { return config_.state_dir / "console.log"; }

private:
    void stop_all();
    void drain_console();

    Config config_;
    std::unique_ptr<Process> swtpm_;
    std::unique_ptr<Process> qemu_;
    uint64_t console_start_ = 0;         // console.log size at the last start()
    UniqueFd console_fd_;                // connection to the serial socket, made by send()
    std::thread drainer_;
    std::atomic<bool> draining_{false};
};

}  // namespace cairn::qemu
