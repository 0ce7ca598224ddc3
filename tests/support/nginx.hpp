// Debian's nginx for the tests of installs from a server: started on loopback as a process of the
// test (no master process, no daemon), serving a directory over TLS with a TestPki server
// certificate (localhost, 127.0.0.1, and 10.0.2.2 for QEMU guests) and over plain HTTP (for the
// fault-injecting proxy in front of it). Range requests are on, as nginx has them by default;
// /norange/ serves the same files with Range ignored (max_ranges 0), as some servers do;
// /onerange/ with one range a request only (max_ranges 1: a request for several gets the whole
// file), as S3 does.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/subprocess.hpp"
#include "tests/support/pki.hpp"

namespace cairn::test {

class Nginx {
public:
    // Serves dir/www (created); config, logs and pid under dir. Throws when nginx does not answer in 10 s.
    Nginx(const std::filesystem::path& dir, const TestPki& pki);
    ~Nginx();

    std::filesystem::path www() const { return dir_ / "www"; }
    uint16_t https_port() const { return https_port_; }
    uint16_t http_port() const { return http_port_; }
    // https://127.0.0.1:PORT/<path> (host: 127.0.0.1, or 10.0.2.2 from a QEMU guest)
    std::string https_url(const std::string& path, const std::string& host = "127.0.0.1") const;
    std::string http_url(const std::string& path) const;
    // The access log: one line per request, "METHOD URI STATUS RANGE BODY_BYTES".
    std::string access_log() const;

private:
    std::filesystem::path dir_;
    uint16_t https_port_ = 0, http_port_ = 0;
    std::unique_ptr<Process> process_;
};

}  // namespace cairn::test
