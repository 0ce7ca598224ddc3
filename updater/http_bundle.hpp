// A bundle on an HTTP(S) server, read by byte ranges: any static server, CDN or object store that
// honours Range requests serves Cairn bundles; no server of Cairn's is needed.
//
// Opening reads the head (header, manifest, signature) with one Range request and checks it as a
// file's head is checked; the install then fetches what it needs by ranges (engine.cpp, "write").
// Every request after the first carries If-Range with the validator the first answer gave (its
// ETag, or Last-Modified when it has no strong ETag), and every answer must be 206 for exactly
// the range asked, of a file of the size first seen, with the same ETag: a server that ignores
// Range (200), answers another range or length, or whose file changed is named in the error.
//
// A request that fails below HTTP (no connection, a cut, a stall of `stall_timeout_ms`) or with
// 408, 429 or 5xx is tried again from where the sink stopped, after a back-off that doubles from
// `backoff_initial_ms` up to `backoff_max_ms` (with up to a quarter more at random, so a fleet
// does not come back in step); `max_attempts` failures in a row without a byte of progress give up
// (transfer). TLS is always verified; plain http:// only when `allow_http` says so.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "http/client.hpp"
#include "updater/bundle.hpp"
#include "updater/bundle_url.hpp"

namespace cairn::updater {

// How the device reaches bundle servers: /etc/cairn/update.toml, [http] (daemon.cpp).
struct HttpSettings {
    std::filesystem::path ca_bundle;           // PEM CAs to trust; empty: the system's store
    std::filesystem::path client_certificate;  // PEM chain for TLS client authentication (optional)
    std::filesystem::path client_key;
    bool allow_http = false;                   // plain http:// URLs (a signed bundle from a plain mirror)
    int connect_timeout_ms = 15000;
    int stall_timeout_ms = 30000;              // under 1 byte/s for this long: the request fails (and is retried)
    int max_attempts = 8;                      // failed requests in a row without progress before giving up
    int backoff_initial_ms = 500;
    int backoff_max_ms = 30000;
    int max_redirects = 5;
    bool multi_range = true;                   // several ranges to a request where the server takes them
    bool deltas = true;                        // look for a delta from the running build beside the bundle
};

// A GET of `url` as `settings` say: CA, client certificate, plain http, timeouts, redirects.
http::HttpsRequest request_for(const std::string& url, const HttpSettings& settings);

// Any file on an HTTP(S) server read by byte ranges, with the checks and retries above: a bundle
// (HttpBundle), a delta (updater/delta.hpp). The first fetch learns the file's size and validator.
// `noun` names the file in messages ("the bundle changed on the server").
class HttpFile : public RangeSource {
public:
    HttpFile(const std::string& url, const HttpSettings& settings, std::string noun);

    void fetch(uint64_t end, RangeSink& sink) override;
    // Up to max_ranges_per_request runs in one request (multipart/byteranges), with If-Range; any
    // run the answer did not complete (a cut, a bad block, a part missing) is fetched on its own
    // with fetch()'s retries. A server that answers a multi-range request with 200 (it serves
    // single ranges only, as S3 does), or a malformed multipart body, is asked one range at a time
    // from then on.
    void fetch_many(const std::vector<Run>& runs) override;
    static constexpr size_t max_ranges_per_request = 64;
    TransferStats stats() const override { return stats_; }
    uint64_t size() const { return size_; }  // 0 before the first fetch
    // Called with a line before each retry ("retrying in 2 s: …"), for progress.
    void on_retry(std::function<void(const std::string&)> notice) { notice_ = std::move(notice); }

protected:
    http::HttpsRequest base_request() const;

    std::string url_, name_, noun_;
    HttpSettings settings_;
    http::Client client_;
    std::string validator_;  // for If-Range: the strong ETag, else Last-Modified
    std::string etag_;       // as first seen ("" when none)
    uint64_t size_ = 0;      // the file's length, from the first Content-Range
    TransferStats stats_;
    bool multi_range_ = true;  // until the server shows it does not do several ranges at once
    std::function<void(const std::string&)> notice_;
};

class HttpBundle final : public BundleSource, public HttpFile {
public:
    // Fetches and checks the head: header, CMS signature against `trust_anchor` (certificates
    // valid at `certificate_time`), manifest, and that the file holds every payload. Throws Error
    // naming the URL (UpdateError transfer when the server cannot be had or ignores Range).
    HttpBundle(const std::string& url, const HttpSettings& settings, const std::filesystem::path& trust_anchor,
               std::optional<int64_t> certificate_time = {});

    const std::string& name() const override { return name_; }
    const BundleManifest& manifest() const override { return manifest_; }
    const std::string& manifest_sha256() const override { return manifest_sha256_; }
    bool random_access() const override { return false; }
    int fd() const override { return -1; }
    // Fetches the payload's range and checks its sha256 at the end, as BundleReader::read does.
    void read(const Payload& payload, const std::function<void(const uint8_t*, size_t)>& sink) override;
    RangeSource* ranges() override { return this; }
    // An HttpFile for delta_url(url, from_build_id), with the same settings; nullptr when they turn
    // deltas off.
    std::unique_ptr<RangeSource> delta(const std::string& from_build_id) override;

private:
    BundleManifest manifest_;
    std::string manifest_sha256_;
};

}  // namespace cairn::updater
