// HTTPS requests through libcurl (with OpenSSL), for Cairn's device programs: the DPS client, the
// attestation agent, the updater fetching bundles. TLS is always verified (against `trust_bundle`,
// or the system's store); only https:// URLs are followed unless a request allows plain http (a
// signed bundle, whose every byte is checked, may come from a plain HTTP mirror); every exchange is
// bounded by a connect timeout and a total timeout or, for long downloads, a stall timeout.
// Proxies come from the environment (https_proxy, http_proxy, no_proxy), as libcurl reads them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

typedef void CURL;

namespace cairn::http {

struct HttpsReply;

// One exchange (no retries).
struct HttpsRequest {
    std::string method = "GET";
    std::string url;
    std::string body;
    std::vector<std::string> headers;          // "Name: value"
    std::filesystem::path trust_bundle;        // PEM CA file; empty: the system's store
    std::filesystem::path client_certificate;  // PEM chain (TLS client authentication)
    std::filesystem::path client_key;
    int connect_timeout_ms = 10000;
    int timeout_ms = 30000;                    // the whole exchange; 0: none (then set stall_timeout_ms)
    int stall_timeout_ms = 0;                  // no byte for this long fails the exchange (retryable); 0: off
    bool allow_http = false;                   // http:// as well as https://
    int max_redirects = 0;                     // redirects followed (same protocols only)
    std::string user_agent = "cairn";
    // When set, the body goes here instead of HttpsReply::body, as it arrives, with the status and
    // headers already known (`head`). Returning false stops the transfer (TransportError, not
    // retryable, message "stopped by the receiver"); an exception stops it too and leaves
    // exchange() once libcurl has returned.
    std::function<bool(const HttpsReply& head, const char* data, size_t size)> on_body;
};

struct HttpsReply {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string header(const std::string& lower_name) const;
};

// What failed below HTTP: "METHOD URL: libcurl's reason", and whether trying again may help
// (no connection, a timeout, a cut transfer; not a TLS verification failure or a bad URL).
struct TransportError {
    std::string message;
    bool retryable = false;
    bool stopped = false;  // on_body returned false
};

// A libcurl handle kept across requests (connections to the same server are reused).
class Client {
public:
    Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client();

    // The reply (any HTTP status), or what failed below HTTP.
    std::variant<HttpsReply, TransportError> exchange(const HttpsRequest& request);
    // The reply (any HTTP status); throws Error with TransportError's message on transport failure.
    HttpsReply request(const HttpsRequest& request);

private:
    struct Deleter {
        void operator()(CURL* c) const;
    };
    std::unique_ptr<CURL, Deleter> curl_;
};

// One request on a handle of its own; throws Error on transport failure.
HttpsReply https_request(const HttpsRequest& request);

// Seconds since 1970 of an HTTP Date header, or -1.
int64_t parse_http_date(const std::string& date);

}  // namespace cairn::http
