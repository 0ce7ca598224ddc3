// A small HTTP/1.1 server over OpenSSL TLS for Cairn's services (cairn-dps, cairn-verifier): one
// thread per connection, keep-alive, Content-Length bodies, optional client certificates (accepted
// at the TLS layer and handed to the handler, which decides what they prove). Built for hostile clients: a cap on open connections
// (over it, a new connection is closed at once), one deadline for the TLS handshake and one for
// each request's header and body together, bounded header and body sizes, a backing-off accept
// loop when file descriptors run out, and a connection that cannot get a thread is closed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.hpp"
#include <openssl/ssl.h>

#include "common/openssl.hpp"

namespace cairn::http {

using SslCtxPtr = std::unique_ptr<SSL_CTX, OpensslDeleter<SSL_CTX, SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OpensslDeleter<SSL, SSL_free>>;

struct HttpRequest {
    std::string method;
    std::string target;                          // as sent: path?query
    std::string path;                            // percent-decoded path
    std::map<std::string, std::string> query;    // decoded
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
    std::vector<X509Ptr> peer_chain;             // client certificate first, then what it sent with it
    std::string peer_address;

    // The header's value, or "" when absent.
    std::string header(const std::string& lower_name) const;
};

struct HttpResponse {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    static HttpResponse json(int status, const nlohmann::json& body);
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpsServerConfig {
    std::string address = "127.0.0.1";
    uint16_t port = 0;                       // 0: the kernel chooses; see HttpsServer::port()
    std::filesystem::path certificate_chain; // PEM: server certificate, then intermediates
    std::filesystem::path private_key;       // PEM
    int idle_timeout_ms = 30000;             // a keep-alive connection with no request for this long is closed
    int request_timeout_ms = 30000;          // the TLS handshake, and each request's header and body together, must arrive within this
    int max_connections = 256;               // open connections at most; over it a new one is closed at once
    size_t max_header_bytes = 64 * 1024;     // request line and headers; larger: 431
    size_t max_body_bytes = 1024 * 1024;     // Content-Length at most; larger: 413
};

// What the server has done, for operators and tests.
struct HttpsServerStats {
    uint64_t accepted = 0;         // connections taken on
    uint64_t refused = 0;          // closed at once: over max_connections
    uint64_t accept_errors = 0;    // accept4 failures for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM)
    uint64_t thread_failures = 0;  // connections closed because no thread could be started for them
    uint64_t timeouts = 0;         // connections closed at a handshake or request deadline
    int active = 0;                // connections open now
};

// The request's head (request line and header lines, without the blank line that ends them):
// fills method, target and headers (names lower-cased, values trimmed). False when malformed.
bool parse_request_head(std::string_view head, HttpRequest& request);
// Percent-decodes the target into path and query; throws Error on a malformed escape.
void decode_request_target(HttpRequest& request);

// The path's non-empty segments, in order: "/a//b/" gives {"a", "b"}.
std::vector<std::string> split_path(std::string_view path);

std::string http_reason(int status);
// RFC 7231 IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(int64_t unix_seconds);

class HttpsServer {
public:
    // Listens at once; throws Error naming the address, certificate or key at fault.
    HttpsServer(const HttpsServerConfig& config, HttpHandler handler);
    HttpsServer(const HttpsServer&) = delete;
    HttpsServer& operator=(const HttpsServer&) = delete;
    ~HttpsServer();

    uint16_t port() const { return port_; }
    HttpsServerStats stats() const;
    // Stops accepting, closes open connections and waits for their threads.
    void stop();

private:
    void accept_loop();
    void serve(int fd, std::string peer);
    bool serve_tls(int fd, const std::string& peer);  // true: cut at a deadline

    HttpsServerConfig config_;
    HttpHandler handler_;
    SslCtxPtr ctx_;
    UniqueFd listen_fd_;
    uint16_t port_ = 0;
    std::thread acceptor_;
    std::atomic<bool> stopping_{false};
    mutable std::mutex mutex_;
    std::condition_variable idle_;
    std::condition_variable wake_;  // the accept loop's back-off, cut short by stop()
    HttpsServerStats stats_;
    std::set<int> open_fds_;
    int active_ = 0;
};

}  // namespace cairn::http
