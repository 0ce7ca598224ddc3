#include "updater/http_bundle.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <variant>

#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/hash.hpp"
#include "common/text.hpp"
#include "common/units.hpp"
#include "http/byteranges.hpp"
#include "updater/delta.hpp"
#include "updater/error_code.hpp"
#include "updater/signature.hpp"

namespace cairn::updater {

namespace {

// The first request: the header says how much more the manifest and signature need (a second
// request); a larger first one would fetch payload bytes for nothing.
constexpr uint64_t head_request_size = 4096;

using http::parse_content_range;

std::string seconds_text(int ms) {
    char text[32];
    std::snprintf(text, sizeof text, "%g s", ms / 1000.0);
    return text;
}

}  // namespace

HttpFile::HttpFile(const std::string& url, const HttpSettings& settings, std::string noun)
    : url_(url), name_(redact_url(url)), noun_(std::move(noun)), settings_(settings), multi_range_(settings.multi_range) {
    if (!is_bundle_url(url)) fail(name_ + ": not an http:// or https:// URL");
    if (!settings_.allow_http && to_lower(url.substr(0, 7)) == "http://")
        fail_update(ErrorCode::transfer, name_ + ": plain http is not allowed (set allow_http in /etc/cairn/update.toml, [http], "
                                                 "to take signed bundles from a plain HTTP server)");
}

HttpBundle::HttpBundle(const std::string& url, const HttpSettings& settings, const std::filesystem::path& trust_anchor,
                       std::optional<int64_t> certificate_time)
    : HttpFile(url, settings, "the bundle") {
    // The head, with what the server says about the file: its size and validator. The first answer
    // must be 206: without Range no install can fetch the tree first, resume, or skip blocks.
    std::string head = fetch_range(*this, 0, head_request_size);
    const BundleHeader h = decode_header(head, name_);
    const uint64_t signed_end = bundle_header_size + h.manifest_size + h.signature_size;
    if (signed_end > size_) fail(name_ + ": the bundle ends inside its manifest or signature (" + std::to_string(size_) + " bytes)");
    if (head.size() < signed_end) head += fetch_range(*this, head.size(), signed_end);
    const std::string manifest_bytes = head.substr(bundle_header_size, h.manifest_size);
    const std::string signature = head.substr(bundle_header_size + h.manifest_size, h.signature_size);
    with_code(ErrorCode::bad_signature, [&] { cms_verify(manifest_bytes, signature, trust_anchor, name_, certificate_time); });
    manifest_ = BundleManifest::parse(manifest_bytes, name_);
    manifest_sha256_ = to_hex(sha256(manifest_bytes));
    if (manifest_.payloads.front().offset < h.payload_offset) fail(name_ + ": manifest: the first payload starts inside the signature");
    const Payload& last = manifest_.payloads.back();
    const uint64_t needed = checked_add(last.offset, last.size, name_);
    if (size_ < needed)
        fail(name_ + ": the bundle is truncated (the server has " + std::to_string(size_) + " bytes; the manifest needs " +
             std::to_string(needed) + ")");
}

std::unique_ptr<RangeSource> HttpBundle::delta(const std::string& from_build_id) {
    if (!settings_.deltas) return nullptr;
    return std::make_unique<HttpFile>(delta_url(url_, from_build_id), settings_, "the delta");
}

http::HttpsRequest request_for(const std::string& url, const HttpSettings& settings) {
    http::HttpsRequest r;
    r.url = url;
    r.trust_bundle = settings.ca_bundle;
    r.client_certificate = settings.client_certificate;
    r.client_key = settings.client_key;
    r.allow_http = settings.allow_http;
    r.max_redirects = settings.max_redirects;
    r.connect_timeout_ms = settings.connect_timeout_ms;
    r.timeout_ms = 0;  // a payload takes as long as it takes; a stall is what fails it
    r.stall_timeout_ms = settings.stall_timeout_ms;
    r.user_agent = "cairn-updated";
    return r;
}

http::HttpsRequest HttpFile::base_request() const { return request_for(url_, settings_); }

void HttpFile::fetch(uint64_t end, RangeSink& sink) {
    const bool opening = size_ == 0;  // the first request learns size and validator
    if (!opening && end > size_) fail(name_ + ": a range up to " + std::to_string(end) + " is past the end of " + noun_);
    int failures = 0;
    int backoff = settings_.backoff_initial_ms;
    std::mt19937 jitter(std::random_device{}());
    std::string last_problem;
    while (sink.position() < (opening && size_ ? std::min(end, size_) : end)) {
        const uint64_t start = sink.position();
        const uint64_t stop = opening && size_ ? std::min(end, size_) : end;
        sink.restart();
        http::HttpsRequest r = base_request();
        r.headers.push_back("Range: bytes=" + std::to_string(start) + "-" + std::to_string(stop - 1));
        if (!validator_.empty()) r.headers.push_back("If-Range: " + validator_);
        // What this answer did wrong, if anything: fatal ends the install at once.
        std::string problem;
        ErrorCode problem_code = ErrorCode::transfer;
        bool fatal = false, checked = false;
        auto check_head = [&](const http::HttpsReply& head) {
            checked = true;
            const long s = head.status;
            if (s == 200) {
                fatal = true;
                if (!validator_.empty()) {
                    problem_code = ErrorCode::source_changed;
                    problem = noun_ + " changed on the server during the install (it no longer matches " + validator_ +
                              ", so the server sent the whole new file)";
                } else {
                    problem = "the server ignores Range requests (it answered 200 with the whole file to a request for bytes " +
                              std::to_string(start) + "-" + std::to_string(stop - 1) +
                              "); serve the bundle from a server that honours Range, or copy it to the device and install the file";
                }
                return false;
            }
            if (s != 206) {
                problem = "the server answered HTTP " + std::to_string(s);
                fatal = !(s == 408 || s == 429 || s >= 500);
                if (s == 416) {
                    problem_code = ErrorCode::source_changed;
                    problem += " to bytes " + std::to_string(start) + "-" + std::to_string(stop - 1) + " (is the file shorter now?)";
                }
                return false;
            }
            const auto range = parse_content_range(head.header("content-range"));
            if (!range) {
                fatal = true;
                problem = "the server's 206 answer has no usable Content-Range (\"" + head.header("content-range") + "\")";
                return false;
            }
            if (size_ != 0 && range->total != size_) {
                fatal = true;
                problem_code = ErrorCode::source_changed;
                problem = noun_ + " changed on the server during the install (it was " + std::to_string(size_) + " bytes, now " +
                          std::to_string(range->total) + ")";
                return false;
            }
            if (range->first != start || (range->last + 1 != stop && !(opening && range->last + 1 == range->total))) {
                fatal = true;
                problem = "the server answered bytes " + std::to_string(range->first) + "-" + std::to_string(range->last) +
                          " to a request for " + std::to_string(start) + "-" + std::to_string(stop - 1);
                return false;
            }
            const std::string etag = head.header("etag");
            if (size_ == 0) {
                size_ = range->total;
                etag_ = etag;
                if (!etag.empty() && etag.rfind("W/", 0) != 0) validator_ = etag;
                else validator_ = head.header("last-modified");
            } else if (etag != etag_) {
                fatal = true;
                problem_code = ErrorCode::source_changed;
                problem = noun_ + " changed on the server during the install (ETag " + (etag_.empty() ? "none" : etag_) + ", now " +
                          (etag.empty() ? "none" : etag) + ")";
                return false;
            }
            return true;
        };
        bool bad_data = false;
        r.on_body = [&](const http::HttpsReply& head, const char* data, size_t n) {
            if (!checked && !check_head(head)) return false;
            stats_.downloaded += n;
            if (!sink.take(reinterpret_cast<const uint8_t*>(data), n)) {
                bad_data = true;
                return false;
            }
            return true;
        };
        ++stats_.requests;
        auto outcome = client_.exchange(r);
        if (auto* reply = std::get_if<http::HttpsReply>(&outcome)) {
            if (!checked) check_head(*reply);  // an answer without a body (416, 304, an empty 5xx)
            else if (problem.empty() && sink.position() < stop) problem = "the server ended the answer early";
        } else {
            const auto& t = std::get<http::TransportError>(outcome);
            if (problem.empty() && !bad_data) {
                problem = t.message;
                fatal = !t.retryable;
            }
        }
        if (fatal) fail_update(problem_code, name_ + ": " + problem);
        if (bad_data) problem = "bytes at " + std::to_string(sink.position()) + " did not match their signed hash";
        if (problem.empty()) continue;  // this range is done; the loop checks the end
        last_problem = problem;
        if (sink.position() > start) {
            failures = 0;
            backoff = settings_.backoff_initial_ms;
        }
        if (++failures >= settings_.max_attempts)
            fail_update(ErrorCode::transfer, name_ + ": gave up after " + std::to_string(failures) +
                                                 " failed requests in a row without progress; the last: " + problem);
        const int wait = backoff + static_cast<int>(jitter() % static_cast<unsigned>(backoff / 4 + 1));
        if (notice_) notice_("retrying in " + seconds_text(wait) + " from byte " + std::to_string(sink.position()) + ": " + problem);
        std::this_thread::sleep_for(std::chrono::milliseconds(wait));
        backoff = std::min(backoff * 2, settings_.backoff_max_ms);
        ++stats_.retries;
    }
}

void HttpFile::fetch_many(const std::vector<Run>& all) {
    std::vector<Run> runs = all;  // runs[next..] are still to come, in order
    size_t next = 0;
    while (next < runs.size()) {
        if (!multi_range_ || runs.size() - next < 2) {
            for (; next < runs.size(); ++next) fetch(runs[next].end, *runs[next].sink);
            return;
        }
        const size_t count = std::min(max_ranges_per_request, runs.size() - next);
        const std::vector<Run> batch(runs.begin() + static_cast<std::ptrdiff_t>(next), runs.begin() + static_cast<std::ptrdiff_t>(next + count));
        next += count;
        std::vector<bool> broken(batch.size(), false);  // a gap or a bad block: left to fetch()
        std::vector<uint64_t> got(batch.size());         // the next byte each run takes (a sink's
                                                         // position() moves by whole blocks)
        std::vector<uint64_t> first(batch.size());
        std::string ranges;
        for (size_t k = 0; k < batch.size(); ++k) {
            const Run& run = batch[k];
            if (run.end > size_) fail(name_ + ": a range up to " + std::to_string(run.end) + " is past the end of " + noun_);
            run.sink->restart();
            got[k] = first[k] = run.sink->position();
            ranges += (ranges.empty() ? "" : ",") + std::to_string(got[k]) + "-" + std::to_string(run.end - 1);
        }
        http::HttpsRequest r = base_request();
        r.headers.push_back("Range: bytes=" + ranges);
        if (!validator_.empty()) r.headers.push_back("If-Range: " + validator_);
        // Hands bytes at a file offset to the runs they belong to, in order of the runs.
        size_t cursor = 0;
        auto dispatch = [&](uint64_t offset, const uint8_t* data, size_t size) {
            stats_.downloaded += size;
            const uint64_t stop = offset + size;
            // The first run that ends after `offset` (parts usually come in order: start at the cursor).
            if (cursor >= batch.size() || batch[cursor].end <= offset || (cursor > 0 && batch[cursor - 1].end > offset)) {
                cursor = static_cast<size_t>(std::upper_bound(batch.begin(), batch.end(), offset, [](uint64_t o, const Run& run) { return o < run.end; }) -
                                             batch.begin());
            }
            for (size_t k = cursor; k < batch.size() && offset < stop; ++k) {
                if (broken[k]) continue;
                const uint64_t at = got[k];
                if (at >= stop) break;  // this part ends before what the run still needs
                if (batch[k].end <= offset || at >= batch[k].end) continue;
                if (offset > at) {  // the answer skipped bytes the run needs
                    broken[k] = true;
                    continue;
                }
                const uint64_t until = std::min(stop, batch[k].end);
                got[k] = until;
                if (!batch[k].sink->take(data + (at - offset), static_cast<size_t>(until - at))) broken[k] = true;
                cursor = k;
            }
            return true;
        };
        std::optional<http::ByterangesReader> parts;  // a multipart answer
        std::optional<uint64_t> single_at;            // a single-part answer: the next byte's offset
        bool fall_back = false;
        r.on_body = [&](const http::HttpsReply& head, const char* data, size_t n) {
            if (!parts && !single_at) {
                const std::string etag = head.header("etag");
                if ((head.status == 200 || head.status == 206) && etag != etag_)
                    fail_update(ErrorCode::source_changed, name_ + ": " + noun_ + " changed on the server during the install (ETag " +
                                                               (etag_.empty() ? "none" : etag_) + ", now " + (etag.empty() ? "none" : etag) + ")");
                if (head.status != 206) {  // 200: several ranges are not served; anything else: fetch() retries
                    fall_back = head.status == 200;
                    return false;
                }
                if (const auto boundary = http::byteranges_boundary(head.header("content-type"))) {
                    parts.emplace(*boundary, size_, dispatch);
                } else {  // one part: the server joined the ranges, or sent only some
                    const auto range = parse_content_range(head.header("content-range"));
                    if (!range || range->total != size_) fail(name_ + ": a 206 answer without a usable Content-Range");
                    single_at = range->first;
                }
            }
            if (parts) return parts->feed(data, n);
            dispatch(*single_at, reinterpret_cast<const uint8_t*>(data), n);
            *single_at += n;
            return true;
        };
        ++stats_.requests;
        ++stats_.multi_range_requests;
        try {
            client_.exchange(r);  // a transport failure leaves runs unfinished: fetch() takes them up
        } catch (const UpdateError&) {
            throw;
        } catch (const Error& e) {  // a malformed multipart answer
            fall_back = true;
            if (notice_) notice_("asking for one range at a time: " + std::string(e.what()));
        }
        if (fall_back) multi_range_ = false;
        // What the answer left unfinished (a cut, a bad block, a part missing): asked for again
        // together while answers make progress, else one by one with fetch()'s back-off and limits.
        std::vector<Run> unfinished;
        bool progress = false;
        for (size_t k = 0; k < batch.size(); ++k) {
            progress = progress || batch[k].sink->position() > first[k];  // checked bytes, not just received
            if (batch[k].sink->position() < batch[k].end) unfinished.push_back(batch[k]);
        }
        if (unfinished.empty()) continue;
        ++stats_.retries;
        if (fall_back || !progress) {
            for (const Run& run : unfinished) fetch(run.end, *run.sink);
            continue;
        }
        next -= unfinished.size();  // in order, before what is still to come
        std::copy(unfinished.begin(), unfinished.end(), runs.begin() + static_cast<std::ptrdiff_t>(next));
    }
}

void HttpBundle::read(const Payload& p, const std::function<void(const uint8_t*, size_t)>& sink) {
    class HashingSink final : public RangeSink {
    public:
        HashingSink(uint64_t start, const std::function<void(const uint8_t*, size_t)>& out) : at_(start), out_(out) {}
        uint64_t position() const override { return at_; }
        void restart() override {}
        bool take(const uint8_t* data, size_t size) override {
            hash.update(data, size);
            out_(data, size);
            at_ += size;
            return true;
        }
        Sha256 hash;

    private:
        uint64_t at_;
        const std::function<void(const uint8_t*, size_t)>& out_;
    } hashing(p.offset, sink);
    fetch(p.offset + p.size, hashing);
    if (to_hex(hashing.hash.final()) != p.sha256)
        fail_update(ErrorCode::bad_payload, name_ + ": payload " + p.name + ": sha256 does not match the manifest (corrupted or altered bundle)");
}

}  // namespace cairn::updater
