// A fault-injecting HTTP proxy for the tests of installs from a server: a TCP relay on 127.0.0.1
// in front of a plain-HTTP server (nginx), which reads the server's answers as they pass (status
// line, Content-Length, Content-Range) so that it knows which byte of the served file each body
// byte is, and at given file offsets cuts the connection, stalls it, or flips a byte. Faults are
// told in file offsets, so they hit the same bytes of the bundle whichever request carries them.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "common/fd.hpp"

namespace cairn::test {

struct Fault {
    enum class Kind { cut, stall, corrupt } kind = Kind::cut;
    uint64_t at = 0;     // the served file's byte at which it strikes
    int times = 1;       // how many times it strikes (-1: every time that byte passes)
    int stall_ms = 0;    // stall: how long nothing is sent
    // When set, `at` is the start of a window of the file [at, window_end) and the fault strikes
    // once `after` bytes of that window have passed (in whatever ranges they come).
    uint64_t window_end = 0, after = 0;
    uint64_t passed = 0;  // the proxy's count
};

class FaultProxy {
public:
    explicit FaultProxy(uint16_t upstream_port);
    ~FaultProxy();

    uint16_t port() const { return port_; }
    std::string url(const std::string& path) const;  // http://127.0.0.1:PORT/<path>
    void add(const Fault& fault);
    // Holds every request this long before passing it on: a link's round trip (the benches).
    void set_latency(int ms) { latency_ms_ = ms; }
    uint64_t fired() const { return fired_; }          // faults that struck
    uint64_t connections() const { return connections_; }

private:
    void accept_loop();
    void relay(UniqueFd client);
    // The body bytes [data, data + n) are file bytes [offset, offset + n): applies the faults.
    // Returns how many bytes to send before cutting (n: no cut), and may stall or flip bytes.
    size_t strike(char* data, size_t n, uint64_t offset);

    uint16_t upstream_;
    uint16_t port_ = 0;
    UniqueFd listen_;
    std::thread acceptor_;
    std::atomic<bool> stopping_{false};
    std::mutex mutex_;
    std::vector<Fault> faults_;
    std::vector<std::thread> relays_;
    std::atomic<uint64_t> fired_{0}, connections_{0};
    std::atomic<int> latency_ms_{0};
};

}  // namespace cairn::test
