#include "http/client.hpp"

#include <curl/curl.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string_view>

#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/text.hpp"

namespace cairn::http {

namespace {

struct CurlSlistDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlSlistPtr = std::unique_ptr<curl_slist, CurlSlistDeleter>;

void curl_global() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fail("libcurl: global initialisation failed");
    });
}

struct BodyTarget {
    CURL* curl;
    const HttpsRequest* request;
    HttpsReply* reply;
    bool stopped = false;
    std::exception_ptr error;  // what on_body threw: rethrown once libcurl has returned
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
    auto* t = static_cast<BodyTarget*>(user);
    const size_t n = size * count;
    if (!t->request->on_body) {
        t->reply->body.append(data, n);
        return n;
    }
    if (t->reply->status == 0) curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->reply->status);
    try {  // nothing may unwind through libcurl's C frames
        if (t->request->on_body(*t->reply, data, n)) return n;
    } catch (...) {
        t->error = std::current_exception();
    }
    t->stopped = true;
    return 0;  // libcurl ends the transfer with CURLE_WRITE_ERROR
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
    auto* headers = static_cast<std::map<std::string, std::string>*>(user);
    std::string_view line(data, size * count);
    if (line.substr(0, 5) == "HTTP/") headers->clear();  // a new response (after 100 Continue or a redirect)
    size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
        (*headers)[to_lower(line.substr(0, colon))] = trim(line.substr(colon + 1));
    }
    return size * count;
}

// The stall timeout: libcurl's own low-speed check averages over several seconds, so a transfer
// that was fast stalls for seconds longer than asked before it trips; this looks at the last byte.
struct StallWatch {
    std::chrono::milliseconds limit;
    curl_off_t last_bytes = -1;
    std::chrono::steady_clock::time_point last_change = std::chrono::steady_clock::now();
    bool tripped = false;
};

int on_transfer_info(void* user, curl_off_t, curl_off_t downloaded, curl_off_t, curl_off_t uploaded) {
    auto* w = static_cast<StallWatch*>(user);
    const auto now = std::chrono::steady_clock::now();
    if (downloaded + uploaded != w->last_bytes) {
        w->last_bytes = downloaded + uploaded;
        w->last_change = now;
        return 0;
    }
    if (now - w->last_change < w->limit) return 0;
    w->tripped = true;
    return 1;  // CURLE_ABORTED_BY_CALLBACK
}

bool retryable(CURLcode code) {
    switch (code) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
            return true;
        default:
            return false;
    }
}

}  // namespace

std::string HttpsReply::header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
}

void Client::Deleter::operator()(CURL* c) const { curl_easy_cleanup(c); }

Client::Client() {
    curl_global();
    curl_.reset(curl_easy_init());
    if (!curl_) fail("libcurl: cannot create a handle");
}

Client::~Client() = default;

std::variant<HttpsReply, TransportError> Client::exchange(const HttpsRequest& request) {
    CURL* curl = curl_.get();
    curl_easy_reset(curl);
    HttpsReply reply;
    char error[CURL_ERROR_SIZE] = "";
    CurlSlistPtr headers;
    for (const auto& h : request.headers) {
        curl_slist* next = curl_slist_append(headers.get(), h.c_str());
        if (!next) fail("libcurl: out of memory");
        headers.release();
        headers.reset(next);
    }
    curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
    const char* protocols = request.allow_http ? "http,https" : "https";
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, protocols);
    if (request.max_redirects > 0) {
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(curl, CURLOPT_MAXREDIRS, static_cast<long>(request.max_redirects));
        curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
    }
    StallWatch stall{std::chrono::milliseconds(request.stall_timeout_ms)};
    if (request.stall_timeout_ms > 0) {
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_transfer_info);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &stall);
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    }
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.connect_timeout_ms));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout_ms));
    curl_easy_setopt(curl, CURLOPT_USERAGENT, request.user_agent.c_str());
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    if (!request.trust_bundle.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, request.trust_bundle.c_str());
    if (!request.client_certificate.empty()) {
        curl_easy_setopt(curl, CURLOPT_SSLCERT, request.client_certificate.c_str());
        curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(curl, CURLOPT_SSLKEY, request.client_key.c_str());
        curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    if (request.method == "GET") {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
    }
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    BodyTarget target{curl, &request, &reply};
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &target);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.headers);
    CURLcode code = curl_easy_perform(curl);
    if (target.error) std::rethrow_exception(target.error);
    if (code != CURLE_OK) {
        if (target.stopped) return TransportError{request.method + " " + request.url + ": stopped by the receiver", false, true};
        if (stall.tripped) {
            char seconds[32];
            std::snprintf(seconds, sizeof seconds, "%g", request.stall_timeout_ms / 1000.0);
            return TransportError{request.method + " " + request.url + ": no data for " + seconds + " s: the server stalled", true};
        }
        std::string reason = error[0] ? error : curl_easy_strerror(code);
        return TransportError{request.method + " " + request.url + ": " + reason, retryable(code)};
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
    return reply;
}

HttpsReply Client::request(const HttpsRequest& request) {
    auto outcome = exchange(request);
    if (auto* transport = std::get_if<TransportError>(&outcome)) fail(transport->message);
    return std::get<HttpsReply>(std::move(outcome));
}

HttpsReply https_request(const HttpsRequest& request) {
    Client client;
    return client.request(request);
}

int64_t parse_http_date(const std::string& date) {
    curl_global();
    return static_cast<int64_t>(curl_getdate(date.c_str(), nullptr));
}

}  // namespace cairn::http
