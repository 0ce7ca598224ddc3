// A server's answer to a request for several byte ranges at once (RFC 9110 §14.6,
// multipart/byteranges): parts, each with its own Content-Range, between boundary lines. Read as
// it streams in, so that no part is held whole; every byte is handed on with its offset in the
// file. The answer comes from the network: anything malformed is an Error, never a crash or an
// unbounded buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::http {

// The boundary of a "multipart/byteranges; boundary=…" Content-Type (quoted or not); nullopt
// for any other type.
std::optional<std::string> byteranges_boundary(std::string_view content_type);

// "bytes FIRST-LAST/TOTAL" with FIRST <= LAST < TOTAL, digits only; nullopt otherwise.
struct ContentRange {
    uint64_t first = 0, last = 0, total = 0;
};
std::optional<ContentRange> parse_content_range(std::string_view value);

class ByterangesReader {
public:
    // out(offset in the file, bytes, size); returning false stops the reading (feed returns false).
    using Output = std::function<bool(uint64_t offset, const uint8_t* data, size_t size)>;
    // `total`: the file's size every part's Content-Range must name (0: any).
    ByterangesReader(std::string boundary, uint64_t total, Output out);
    // Takes the next bytes of the body. Throws Error on a malformed answer (a part without a
    // usable Content-Range, one beyond the file, headers over 8 KiB, a bad boundary line).
    bool feed(const char* data, size_t size);
    // Whether the closing boundary was read.
    bool complete() const { return state_ == State::done; }

private:
    enum class State { preamble, headers, body, after_body, done };
    void header_line(std::string_view line);
    std::string boundary_;  // "--" + the boundary
    uint64_t total_;
    Output out_;
    State state_ = State::preamble;
    std::string line_;      // the line being read (preamble, boundary and header lines)
    std::optional<ContentRange> range_;
    uint64_t at_ = 0, left_ = 0;  // the body: the next byte's offset, bytes still to come
    size_t header_bytes_ = 0;
};

}  // namespace cairn::http
