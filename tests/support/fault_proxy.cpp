#include "tests/support/fault_proxy.hpp"

#include <optional>

#include "http/byteranges.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "tests/support/test_support.hpp"

namespace cairn::test {

namespace {

bool send_all(int fd, const char* data, size_t n) {
    while (n > 0) {
        const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        data += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

// Case-insensitive header value from a response head, or "".
std::string header(const std::string& head, const std::string& lower_name) {
    size_t at = head.find("\r\n");
    while (at != std::string::npos && at + 2 < head.size()) {
        const size_t end = head.find("\r\n", at + 2);
        const std::string line = head.substr(at + 2, end == std::string::npos ? std::string::npos : end - at - 2);
        const size_t colon = line.find(':');
        if (colon != std::string::npos) {
            std::string name = line.substr(0, colon);
            for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (name == lower_name) {
                size_t v = colon + 1;
                while (v < line.size() && line[v] == ' ') ++v;
                return line.substr(v);
            }
        }
        at = end;
    }
    return "";
}

}  // namespace

FaultProxy::FaultProxy(uint16_t upstream_port) : upstream_(upstream_port) {
    listen_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = loopback_address(0);
    int one = 1;
    ::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_.get(), 64) != 0)
        throw std::runtime_error("fault proxy: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
}

FaultProxy::~FaultProxy() {
    stopping_ = true;
    ::shutdown(listen_.get(), SHUT_RDWR);
    acceptor_.join();
    std::vector<std::thread> relays;
    {
        std::lock_guard lock(mutex_);
        relays.swap(relays_);
    }
    for (auto& t : relays) t.join();  // without the lock: a relay may be waiting for it
}

std::string FaultProxy::url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + "/" + path; }

void FaultProxy::add(const Fault& fault) {
    std::lock_guard lock(mutex_);
    faults_.push_back(fault);
}

void FaultProxy::accept_loop() {
    while (!stopping_) {
        pollfd p{listen_.get(), POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        UniqueFd client(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) continue;
        ++connections_;
        std::lock_guard lock(mutex_);
        relays_.emplace_back([this, fd = std::make_shared<UniqueFd>(std::move(client))]() mutable { relay(std::move(*fd)); });
    }
}

size_t FaultProxy::strike(char* data, size_t n, uint64_t offset) {
    std::unique_lock lock(mutex_);
    for (Fault& f : faults_) {
        if (f.times == 0) continue;
        size_t i = 0;
        if (f.window_end) {
            const uint64_t from = std::max(f.at, offset), to = std::min(f.window_end, offset + n);
            if (from >= to) continue;
            if (f.passed + (to - from) <= f.after) {
                f.passed += to - from;
                continue;
            }
            i = static_cast<size_t>(from - offset + (f.after - f.passed));
            f.passed = f.after;
        } else {
            if (f.at < offset || f.at >= offset + n) continue;
            i = static_cast<size_t>(f.at - offset);
        }
        if (f.times > 0) --f.times;
        ++fired_;
        switch (f.kind) {
            case Fault::Kind::corrupt:
                data[i] = static_cast<char>(data[i] ^ 0x5a);
                break;
            case Fault::Kind::cut:
                return i;
            case Fault::Kind::stall: {
                const int ms = f.stall_ms;
                lock.unlock();
                const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
                while (!stopping_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
                lock.lock();
                break;
            }
        }
    }
    return n;
}

void FaultProxy::relay(UniqueFd client) {
    UniqueFd server = connect_loopback(upstream_);
    if (!server) return;
    // The server's answers, parsed as they pass: the head, then Content-Length body bytes that are
    // the file's bytes from the Content-Range start (0 for a whole file).
    std::string head;
    bool in_body = false;
    uint64_t body_left = 0, file_at = 0;
    char buffer[16384];
    std::optional<http::ByterangesReader> parts;
    size_t cut_at = SIZE_MAX;
    while (!stopping_) {
        pollfd p[2] = {{client.get(), POLLIN, 0}, {server.get(), POLLIN, 0}};
        if (::poll(p, 2, 100) <= 0) continue;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            const ssize_t r = ::recv(client.get(), buffer, sizeof buffer, 0);
            if (r > 0 && latency_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms_.load()));
            if (r <= 0 || !send_all(server.get(), buffer, static_cast<size_t>(r))) return;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            const ssize_t r = ::recv(server.get(), buffer, sizeof buffer, 0);
            if (r <= 0) return;
            size_t at = 0;
            const size_t got = static_cast<size_t>(r);
            while (at < got) {
                if (!in_body) {
                    // Up to the end of the head: passed on unchanged.
                    size_t take = got - at;
                    head.append(buffer + at, take);
                    const size_t end = head.find("\r\n\r\n");
                    if (end == std::string::npos) {
                        if (!send_all(client.get(), buffer + at, take)) return;
                        at = got;
                        break;
                    }
                    take -= head.size() - (end + 4);  // the head's bytes in this buffer
                    if (!send_all(client.get(), buffer + at, take)) return;
                    at += take;
                    head.resize(end + 4);
                    body_left = std::strtoull(header(head, "content-length").c_str(), nullptr, 10);
                    unsigned long long first = 0;
                    file_at = std::sscanf(header(head, "content-range").c_str(), "bytes %llu-", &first) == 1 ? first : 0;
                    // Several ranges in one answer: each part's bytes are the file's from its own Content-Range.
                    parts.reset();
                    if (const auto boundary = http::byteranges_boundary(header(head, "content-type")))
                        parts.emplace(*boundary, 0, [&](uint64_t offset, const uint8_t* d, size_t size) {
                            char* bytes = buffer + (reinterpret_cast<const char*>(d) - buffer);
                            const size_t s = strike(bytes, size, offset);
                            if (s < size) cut_at = static_cast<size_t>(bytes - buffer) + s;
                            return s == size;
                        });
                    head.clear();
                    in_body = body_left > 0;
                    continue;
                }
                const size_t n = static_cast<size_t>(std::min<uint64_t>(body_left, got - at));
                size_t send = n;
                if (parts) {
                    cut_at = SIZE_MAX;
                    try {
                        if (!parts->feed(buffer + at, n)) send = cut_at - at;
                    } catch (const std::exception&) {  // not ours to judge: passed on as it is
                        parts.reset();
                    }
                } else {
                    send = strike(buffer + at, n, file_at);
                }
                if (!send_all(client.get(), buffer + at, send)) return;
                if (send < n) return;  // cut: both connections close
                at += n;
                file_at += n;
                body_left -= n;
                if (body_left == 0) in_body = false;
            }
        }
    }
}

}  // namespace cairn::test
