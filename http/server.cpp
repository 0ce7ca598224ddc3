#include "http/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>

#include "common/error.hpp"
#include "common/text.hpp"
#include "common/encoding.hpp"

namespace cairn::http {

namespace {

using Clock = std::chrono::steady_clock;

int accept_any_client_certificate(int, X509_STORE_CTX*) { return 1; }

// The connection's sockets are non-blocking: every wait is a poll() bounded by a deadline, so a
// client that trickles bytes cannot stretch a request past it (SO_RCVTIMEO bounds one read only).
enum class Io { ok, closed, timeout };

// Waits until the socket can do what OpenSSL asked for after returning `ret`.
Io wait_for(SSL* ssl, int ret, Clock::time_point deadline) {
    const int err = SSL_get_error(ssl, ret);
    short events = 0;
    if (err == SSL_ERROR_WANT_READ) events = POLLIN;
    else if (err == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    else return Io::closed;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return Io::timeout;
        pollfd p{SSL_get_fd(ssl), events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 60000)));
        if (r > 0) return Io::ok;  // ready, or hung up: the next TLS call says which
        if (r < 0 && errno != EINTR) return Io::closed;
    }
}

Io handshake(SSL* ssl, Clock::time_point deadline) {
    for (;;) {
        ERR_clear_error();
        const int r = SSL_accept(ssl);
        if (r == 1) return Io::ok;
        if (Io w = wait_for(ssl, r, deadline); w != Io::ok) return w;
    }
}

// Appends what has arrived (at least one byte) to `buffer`.
Io read_some(SSL* ssl, std::string& buffer, Clock::time_point deadline) {
    char chunk[16384];
    for (;;) {
        ERR_clear_error();
        const int n = SSL_read(ssl, chunk, sizeof chunk);
        if (n > 0) {
            buffer.append(chunk, static_cast<size_t>(n));
            return Io::ok;
        }
        if (Io w = wait_for(ssl, n, deadline); w != Io::ok) return w;
    }
}

Io write_all(SSL* ssl, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
        ERR_clear_error();
        const int n = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
        if (n > 0) {
            data.remove_prefix(static_cast<size_t>(n));
            continue;
        }
        if (Io w = wait_for(ssl, n, deadline); w != Io::ok) return w;
    }
    return Io::ok;
}

std::string serialize(const HttpResponse& response, bool keep_alive) {
    std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " + http_reason(response.status) + "\r\n";
    bool has_type = false;
    for (const auto& [name, value] : response.headers) {
        out += name + ": " + value + "\r\n";
        if (to_lower(name) == "content-type") has_type = true;
    }
    if (!has_type && !response.body.empty()) out += "Content-Type: application/json; charset=utf-8\r\n";
    out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
    out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    out += "\r\n";
    out += response.body;
    return out;
}

}  // namespace

bool parse_request_head(std::string_view head, HttpRequest& request) {
    size_t line_end = head.find("\r\n");
    std::string_view line = head.substr(0, line_end);
    bool ok = true;
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1 || line.substr(sp2 + 1).substr(0, 5) != "HTTP/") {
        ok = false;
    } else {
        request.method = line.substr(0, sp1);
        request.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    }
    std::string_view rest = line_end == std::string_view::npos ? std::string_view{} : head.substr(line_end + 2);
    while (!rest.empty()) {
        size_t e = rest.find("\r\n");
        std::string_view h = rest.substr(0, e);
        rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e + 2);
        size_t colon = h.find(':');
        if (colon == std::string_view::npos) {
            ok = false;
            continue;
        }
        request.headers[to_lower(trim(h.substr(0, colon)))] = trim(h.substr(colon + 1));
    }
    return ok;
}

void decode_request_target(HttpRequest& request) {
    size_t q = request.target.find('?');
    request.path = url_decode(request.target.substr(0, q), "request path");
    if (q != std::string::npos) request.query = parse_query(request.target.substr(q + 1), "request query");
}

std::string HttpRequest::header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
}

HttpResponse HttpResponse::json(int status, const nlohmann::json& body) {
    HttpResponse r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // a client's bytes echoed in a message need not be UTF-8
    r.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
    return r;
}

std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> parts;
    std::string current;
    for (char c : path) {
        if (c == '/') {
            if (!current.empty()) parts.push_back(std::move(current));
            current.clear();
        } else {
            current.push_back(c);
        }
    }
    if (!current.empty()) parts.push_back(std::move(current));
    return parts;
}

std::string http_reason(int status) {
    switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 201: return "Created";
        case 202: return "Accepted";
        case 204: return "No Content";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 411: return "Length Required";
        case 412: return "Precondition Failed";
        case 413: return "Payload Too Large";
        case 415: return "Unsupported Media Type";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 503: return "Service Unavailable";
        default: return "Status";
    }
}

std::string http_date(int64_t unix_seconds) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    static const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                  tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buffer;
}

HttpsServer::HttpsServer(const HttpsServerConfig& config, HttpHandler handler) : config_(config), handler_(std::move(handler)) {
    if (config_.max_connections < 1) fail("HTTPS server: max_connections must be at least 1");
    if (config_.idle_timeout_ms < 1 || config_.request_timeout_ms < 1) fail("HTTPS server: idle and request timeouts must be at least 1 ms");
    ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not end the server
    ctx_.reset(SSL_CTX_new(TLS_server_method()));
    if (!ctx_) fail("HTTPS server: cannot create a TLS context: " + openssl_errors());
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx_.get(), config_.certificate_chain.c_str()) != 1)
        fail(config_.certificate_chain.string() + ": cannot use as the server certificate chain: " + openssl_errors());
    if (SSL_CTX_use_PrivateKey_file(ctx_.get(), config_.private_key.c_str(), SSL_FILETYPE_PEM) != 1)
        fail(config_.private_key.string() + ": cannot use as the server key: " + openssl_errors());
    if (SSL_CTX_check_private_key(ctx_.get()) != 1)
        fail(config_.private_key.string() + ": does not match " + config_.certificate_chain.string());
    // Ask for a client certificate, accept any: the DPS layer checks it against the enrollments.
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, accept_any_client_certificate);
    SSL_CTX_set_session_id_context(ctx_.get(), reinterpret_cast<const unsigned char*>("cairn"), 5);

    const std::string where = config_.address + ":" + std::to_string(config_.port);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(config_.port);
    if (::inet_pton(AF_INET, config_.address.c_str(), &addr.sin_addr) != 1) fail("HTTPS server: '" + config_.address + "' is not an IPv4 address");
    listen_fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listen_fd_) fail_errno("HTTPS server: socket");
    int one = 1;
    ::setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail_errno("HTTPS server: bind " + where);
    if (::listen(listen_fd_.get(), 64) != 0) fail_errno("HTTPS server: listen " + where);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
}

HttpsServer::~HttpsServer() { stop(); }

HttpsServerStats HttpsServer::stats() const {
    std::lock_guard lock(mutex_);
    HttpsServerStats s = stats_;
    s.active = active_;
    return s;
}

void HttpsServer::stop() {
    if (stopping_.exchange(true)) {
        if (acceptor_.joinable()) acceptor_.join();
        return;
    }
    {
        std::lock_guard lock(mutex_);  // the accept loop's back-off checks stopping_ under it
    }
    wake_.notify_all();
    ::shutdown(listen_fd_.get(), SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    std::unique_lock lock(mutex_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    idle_.wait(lock, [this] { return active_ == 0; });
}

void HttpsServer::accept_loop() {
    std::chrono::milliseconds backoff{0};
    while (!stopping_) {
        pollfd p{listen_fd_.get(), POLLIN, 0};
        int r = ::poll(&p, 1, 200);
        if (r <= 0) continue;
        sockaddr_in peer{};
        socklen_t len = sizeof peer;
        int fd = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Out of descriptors or memory: the connection stays queued and poll() reports it
                // at once, so wait (50 ms, doubling to 1 s) instead of spinning; stop() cuts it short.
                backoff = std::clamp(backoff * 2, std::chrono::milliseconds(50), std::chrono::milliseconds(1000));
                std::unique_lock lock(mutex_);
                ++stats_.accept_errors;
                wake_.wait_for(lock, backoff, [this] { return stopping_.load(); });
            }
            continue;
        }
        backoff = std::chrono::milliseconds(0);
        {
            std::lock_guard lock(mutex_);
            if (stopping_) {
                ::close(fd);
                break;
            }
            if (active_ >= config_.max_connections) {  // over the cap: closed before any TLS work
                ++stats_.refused;
                ::close(fd);
                continue;
            }
            open_fds_.insert(fd);
            ++active_;
            ++stats_.accepted;
        }
        try {
            char text[INET_ADDRSTRLEN] = "?";
            ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
            std::string peer_text = std::string(text) + ":" + std::to_string(ntohs(peer.sin_port));
            std::thread([this, fd, peer_text] { serve(fd, peer_text); }).detach();
        } catch (const std::exception&) {
            // No thread for it (std::system_error: out of memory or tasks): close this one, keep serving.
            std::lock_guard lock(mutex_);
            ++stats_.thread_failures;
            open_fds_.erase(fd);
            ::close(fd);
            if (--active_ == 0) idle_.notify_all();
        }
    }
}

void HttpsServer::serve(int raw_fd, std::string peer) {
    UniqueFd fd(raw_fd);
    bool timed_out = false;
    try {
        timed_out = serve_tls(fd.get(), peer);
    } catch (...) {
    }
    ERR_clear_error();
    std::lock_guard lock(mutex_);
    if (timed_out) ++stats_.timeouts;
    open_fds_.erase(fd.get());
    fd.reset();
    if (--active_ == 0) idle_.notify_all();
}

bool HttpsServer::serve_tls(int fd, const std::string& peer) {
    const auto request_time = std::chrono::milliseconds(config_.request_timeout_ms);
    const auto idle_time = std::chrono::milliseconds(config_.idle_timeout_ms);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    SslPtr ssl(SSL_new(ctx_.get()));
    if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return false;
    if (Io io = handshake(ssl.get(), Clock::now() + request_time); io != Io::ok) return io == Io::timeout;
    std::vector<X509Ptr> chain;
    if (X509* leaf = SSL_get0_peer_certificate(ssl.get())) {
        chain.push_back(copy_certificate(leaf));
        if (STACK_OF(X509)* rest = SSL_get_peer_cert_chain(ssl.get()))
            for (int i = 0; i < sk_X509_num(rest); ++i) {
                X509* c = sk_X509_value(rest, i);
                if (X509_cmp(c, leaf) != 0) chain.push_back(copy_certificate(c));
            }
    }
    auto send = [&](const HttpResponse& response, bool keep_alive) {
        return write_all(ssl.get(), serialize(response, keep_alive), Clock::now() + request_time) == Io::ok;
    };
    bool timed_out = false;
    std::string buffer;
    for (bool keep_alive = true; keep_alive && !stopping_;) {
        // Between requests the connection may idle; from a request's first byte, its header and
        // body share one deadline.
        if (buffer.empty() && read_some(ssl.get(), buffer, Clock::now() + idle_time) != Io::ok) break;
        const auto deadline = Clock::now() + request_time;
        Io io = Io::ok;
        size_t end, scanned = 0;
        while ((end = buffer.find("\r\n\r\n", scanned)) == std::string::npos && buffer.size() <= config_.max_header_bytes) {
            scanned = buffer.size() >= 3 ? buffer.size() - 3 : 0;
            if ((io = read_some(ssl.get(), buffer, deadline)) != Io::ok) break;
        }
        if (io == Io::timeout) {
            timed_out = true;
            send(HttpResponse::json(408, {{"errorCode", 408000}, {"message", "the request did not arrive in time"}}), false);
            break;
        }
        if (io != Io::ok) break;
        if (end == std::string::npos || end > config_.max_header_bytes) {
            send(HttpResponse::json(431, {{"errorCode", 431000}, {"message", "request header larger than " + std::to_string(config_.max_header_bytes) + " bytes"}}),
                 false);
            break;
        }
        HttpRequest request;
        request.peer_address = peer;
        for (const auto& c : chain) request.peer_chain.push_back(copy_certificate(c.get()));
        HttpResponse response;
        bool bad = !parse_request_head(std::string_view(buffer.data(), end), request);
        buffer.erase(0, end + 4);
        keep_alive = to_lower(request.header("connection")) != "close";
        size_t length = 0;
        const std::string cl = request.header("content-length");
        if (!request.header("transfer-encoding").empty()) {
            response = HttpResponse::json(411, {{"errorCode", 411000}, {"message", "chunked bodies are not supported; send Content-Length"}});
            bad = true;
        } else if (!cl.empty()) {
            if (cl.find_first_not_of("0123456789") != std::string::npos || cl.size() > 18) bad = true;
            else length = std::stoull(cl);
            if (length > config_.max_body_bytes) {
                response = HttpResponse::json(413, {{"errorCode", 413000}, {"message", "body larger than " + std::to_string(config_.max_body_bytes) + " bytes"}});
                bad = true;
            }
        }
        if (bad) {
            if (response.body.empty()) response = HttpResponse::json(400, {{"errorCode", 400000}, {"message", "malformed HTTP request"}});
            send(response, false);
            break;
        }
        if (to_lower(request.header("expect")) == "100-continue" && buffer.size() < length &&
            write_all(ssl.get(), "HTTP/1.1 100 Continue\r\n\r\n", deadline) != Io::ok)
            break;
        while (buffer.size() < length && (io = read_some(ssl.get(), buffer, deadline)) == Io::ok) {
        }
        if (io == Io::timeout) {
            timed_out = true;
            send(HttpResponse::json(408, {{"errorCode", 408000}, {"message", "the request body did not arrive in time"}}), false);
            break;
        }
        if (buffer.size() < length) break;
        request.body = buffer.substr(0, length);
        buffer.erase(0, length);
        try {
            decode_request_target(request);
            response = handler_(request);
        } catch (const std::exception& e) {
            response = HttpResponse::json(400, {{"errorCode", 400000}, {"message", e.what()}});
        }
        if (!send(response, keep_alive)) break;
    }
    SSL_shutdown(ssl.get());
    return timed_out;
}

}  // namespace cairn::http
