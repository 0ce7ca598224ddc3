// A software TPM (swtpm) on loopback TCP, for tests, benchmarks and labs: its TCTI string is
// "swtpm:host=127.0.0.1,port=P". The state directory keeps the TPM across restarts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/subprocess.hpp"

namespace cairn::tpm {

class Swtpm {
public:
    // Starts `swtpm socket --tpm2` on a free port pair (P for commands, P+1 for control) with
    // not-need-init,startup-clear; waits until it accepts connections. Throws Error with its log.
    explicit Swtpm(const std::filesystem::path& state_dir);
    Swtpm(const Swtpm&) = delete;
    Swtpm& operator=(const Swtpm&) = delete;
    ~Swtpm();

    std::string tcti() const;
    uint16_t port() const { return port_; }
    bool running() { return process_ && process_->running(); }
    void stop();
    // Stops and starts again on the same state and ports (a reboot).
    void restart();

private:
    void start();
    std::filesystem::path state_dir_;
    uint16_t port_ = 0;
    std::unique_ptr<Process> process_;
};

}  // namespace cairn::tpm
