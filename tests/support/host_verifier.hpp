// cairn-verifier on the host for the QEMU attestation scenarios (docs/attestation.md): the real
// program over TLS, with a TestPki server certificate that names 10.0.2.2 (the host, as a guest on
// QEMU's user network sees it), its state in a file and an admin token; it can be stopped and
// started again on the same port and state. A recorder in front of it (an HTTPS server that
// forwards every request to the verifier and keeps a copy) plays someone on the network who keeps
// a device's round to send it again later.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "http/server.hpp"
#include "qemu/machine.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/verifier_program.hpp"

namespace cairn::test {

class HostVerifier {
public:
    explicit HostVerifier(const std::filesystem::path& dir);  // started
    ~HostVerifier();

    void start();  // again, on the first start's port and state file
    void stop();
    uint16_t port() const { return port_; }
    const TestPki& pki() const { return pki_; }

    // One request straight to the verifier (`admin`: with the admin token). Throws on a transport error.
    http::HttpsReply call(const std::string& method, const std::string& path, const std::string& body = "", bool admin = false);
    // The device enrolled (ADD_FAILURE when the verifier refuses it).
    void enroll(const std::string& device_id, const std::string& endorsement_key_b64);
    nlohmann::json status(const std::string& device_id);  // its last record (admin API); null when none

    // The recorder: HTTPS on a port of its own (same certificate), every request forwarded.
    struct Recorded {
        std::string method, path, body;
    };
    uint16_t start_recorder();
    std::vector<Recorded> recorded() const;

    // A tar for a guest drive holding the CA the agent must trust (attestation-ca.pem).
    std::filesystem::path give_tar() const;
    // attestation.toml for a guest: this verifier (or the recorder) at 10.0.2.2.
    std::string guest_config(const std::string& device_id, uint16_t port = 0) const;

private:
    std::filesystem::path dir_;
    TestPki pki_;
    uint16_t port_ = 0;
    std::unique_ptr<VerifierProgram> program_;
    std::unique_ptr<http::HttpsServer> recorder_;
    mutable std::mutex mutex_;
    std::vector<Recorded> recorded_;
};

// In a debug image's console shell: the guest TPM's registration ID and EK (`cairnctl provision
// tpm-info --json`) enrolled at `verifier`, the CA from the tar on guest device `give` and an
// attestation.toml naming the verifier installed in /etc/cairn, so that the image's agent starts
// (within seconds) and attests. Returns the device ID (the TPM's registration ID).
std::string enroll_and_configure_attestation(qemu::Machine& m, HostVerifier& verifier, const std::string& give);

}  // namespace cairn::test
