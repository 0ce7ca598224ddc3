#include "http/byteranges.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "common/error.hpp"

namespace cairn::http {

namespace {

constexpr size_t max_header_bytes = 8 << 10;

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

// Digits only (no sign, no spaces), into `value`; the rest of `s` after them.
std::optional<std::string_view> number(std::string_view s, uint64_t& value) {
    if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc()) return std::nullopt;
    return s.substr(static_cast<size_t>(end - s.data()));
}

}  // namespace

std::optional<std::string> byteranges_boundary(std::string_view content_type) {
    const size_t semicolon = content_type.find(';');
    if (lower(trim(content_type.substr(0, semicolon))) != "multipart/byteranges" || semicolon == std::string_view::npos) return std::nullopt;
    std::string_view params = content_type.substr(semicolon + 1);
    while (!params.empty()) {
        const size_t next = params.find(';');
        std::string_view param = trim(params.substr(0, next));
        params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
        const size_t eq = param.find('=');
        if (eq == std::string_view::npos || lower(trim(param.substr(0, eq))) != "boundary") continue;
        std::string_view value = trim(param.substr(eq + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
        if (value.empty() || value.size() > 70) return std::nullopt;  // RFC 2046: 1 to 70 characters
        return std::string(value);
    }
    return std::nullopt;
}

std::optional<ContentRange> parse_content_range(std::string_view value) {
    value = trim(value);
    if (value.substr(0, 6) != "bytes ") return std::nullopt;
    ContentRange r;
    auto rest = number(value.substr(6), r.first);
    if (!rest || rest->empty() || (*rest)[0] != '-') return std::nullopt;
    rest = number(rest->substr(1), r.last);
    if (!rest || rest->empty() || (*rest)[0] != '/') return std::nullopt;
    rest = number(rest->substr(1), r.total);
    if (!rest || !rest->empty()) return std::nullopt;
    if (r.last < r.first || r.last >= r.total) return std::nullopt;
    return r;
}

ByterangesReader::ByterangesReader(std::string boundary, uint64_t total, Output out)
    : boundary_("--" + std::move(boundary)), total_(total), out_(std::move(out)) {}

void ByterangesReader::header_line(std::string_view line) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) fail("multipart/byteranges: a part's header line has no ':'");
    if (lower(trim(line.substr(0, colon))) != "content-range") return;
    range_ = parse_content_range(line.substr(colon + 1));
    if (!range_) fail("multipart/byteranges: a part's Content-Range is not bytes FIRST-LAST/TOTAL (\"" + std::string(trim(line.substr(colon + 1))) + "\")");
    if (total_ != 0 && range_->total != total_)
        fail("multipart/byteranges: a part names a file of " + std::to_string(range_->total) + " bytes, not " + std::to_string(total_));
}

bool ByterangesReader::feed(const char* data, size_t size) {
    while (size > 0) {
        if (state_ == State::done) return true;  // the epilogue is ignored
        if (state_ == State::body) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(left_, size));
            if (!out_(at_, reinterpret_cast<const uint8_t*>(data), n)) return false;
            at_ += n;
            left_ -= n;
            data += n;
            size -= n;
            if (left_ == 0) state_ = State::after_body;
            continue;
        }
        // Line by line: the preamble, boundary lines and part headers.
        const char* nl = static_cast<const char*>(std::memchr(data, '\n', size));
        const size_t n = nl ? static_cast<size_t>(nl - data) + 1 : size;
        line_.append(data, n);
        data += n;
        size -= n;
        header_bytes_ += n;
        if (header_bytes_ > max_header_bytes) fail("multipart/byteranges: more than 8 KiB of headers and boundaries between parts");
        if (!nl) continue;
        std::string_view line(line_);
        line.remove_suffix(1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        switch (state_) {
            case State::preamble:
            case State::after_body:
                if (line.empty() && state_ == State::after_body) break;  // the CRLF ending the part's body
                if (line == boundary_) {
                    state_ = State::headers;
                    range_.reset();
                } else if (line == boundary_ + "--") {
                    state_ = State::done;
                } else if (state_ == State::after_body) {
                    fail("multipart/byteranges: expected a boundary line after a part");
                }
                break;
            case State::headers:
                if (!line.empty()) {
                    header_line(line);
                    break;
                }
                if (!range_) fail("multipart/byteranges: a part without a Content-Range");
                at_ = range_->first;
                left_ = range_->last - range_->first + 1;
                state_ = State::body;
                header_bytes_ = 0;
                break;
            case State::body:
            case State::done:
                break;
        }
        line_.clear();
    }
    return true;
}

}  // namespace cairn::http
