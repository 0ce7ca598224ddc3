// multipart/byteranges answers, read as they stream in: every byte with its offset in the file,
// whatever the pieces the network cuts the body into; anything malformed refused.
#include "http/byteranges.hpp"

#include <gtest/gtest.h>

#include <map>

#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::http;
using namespace cairn::test;

namespace {

// What a reader handed on: file offset -> byte.
struct Collected {
    std::map<uint64_t, char> bytes;
    ByterangesReader::Output out() {
        return [this](uint64_t offset, const uint8_t* d, size_t n) {
            for (size_t i = 0; i < n; ++i) bytes[offset + i] = static_cast<char>(d[i]);
            return true;
        };
    }
};

// An answer as nginx writes it: CRLF, then each part's boundary, headers, blank line and bytes.
std::string answer(const std::string& boundary, const std::vector<std::pair<uint64_t, std::string>>& parts, uint64_t total) {
    std::string body;
    for (const auto& [at, data] : parts)
        body += "\r\n--" + boundary + "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " + std::to_string(at) + "-" +
                std::to_string(at + data.size() - 1) + "/" + std::to_string(total) + "\r\n\r\n" + data;
    return body + "\r\n--" + boundary + "--\r\n";
}

}  // namespace

TEST(Byteranges, TheBoundaryOfAMultipartByterangesType) {
    EXPECT_EQ(byteranges_boundary("multipart/byteranges; boundary=00000000000000000001"), "00000000000000000001");
    EXPECT_EQ(byteranges_boundary("Multipart/ByteRanges;boundary=\"a b\""), "a b");
    EXPECT_EQ(byteranges_boundary("multipart/byteranges; charset=x; boundary=zz"), "zz");
    EXPECT_FALSE(byteranges_boundary("application/octet-stream"));
    EXPECT_FALSE(byteranges_boundary("multipart/byteranges"));
    EXPECT_FALSE(byteranges_boundary("multipart/byteranges; boundary="));
    EXPECT_FALSE(byteranges_boundary("multipart/mixed; boundary=x"));
    EXPECT_FALSE(byteranges_boundary("multipart/byteranges; boundary=" + std::string(71, 'x')));
}

TEST(Byteranges, ContentRangeIsReadStrictly) {
    const auto r = parse_content_range("bytes 10-19/100");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->first, 10u);
    EXPECT_EQ(r->last, 19u);
    EXPECT_EQ(r->total, 100u);
    for (const char* bad : {"bytes 10-19/*", "bytes -1-19/100", "bytes 19-10/100", "bytes 10-100/100", "bytes 10-19/100x", "bytes 1 0-19/100",
                            "items 10-19/100", "bytes +1-2/3", "bytes 10-19", "", "bytes 99999999999999999999-1/2"})
        EXPECT_FALSE(parse_content_range(bad)) << bad;
}

TEST(Byteranges, PartsArriveWithTheirOffsetsWhateverThePieces) {
    const std::string body = answer("BOUNDARY", {{100, "hello"}, {4000, std::string(5000, 'x') + "end"}, {9, "\r\n--BOUNDARY\r\n"}}, 10000);
    for (size_t piece : {size_t{1}, size_t{2}, size_t{7}, size_t{100}, body.size()}) {
        Collected c;
        ByterangesReader reader("BOUNDARY", 10000, c.out());
        for (size_t at = 0; at < body.size(); at += piece) ASSERT_TRUE(reader.feed(body.data() + at, std::min(piece, body.size() - at)));
        EXPECT_TRUE(reader.complete()) << piece;
        ASSERT_EQ(c.bytes.size(), 5u + 5003u + 14u) << piece;
        EXPECT_EQ(c.bytes[100], 'h');
        EXPECT_EQ(c.bytes[104], 'o');
        EXPECT_EQ(c.bytes[4000], 'x');
        EXPECT_EQ(c.bytes[9002], 'd');
        EXPECT_EQ(c.bytes[9], '\r');  // a body that looks like a boundary is still body: its length says so
        EXPECT_EQ(c.bytes[11], '-');
    }
}

TEST(Byteranges, TheReceiverCanStopIt) {
    const std::string body = answer("b", {{0, "abc"}, {10, "def"}}, 20);
    int calls = 0;
    ByterangesReader reader("b", 20, [&](uint64_t, const uint8_t*, size_t) { return ++calls < 2; });
    EXPECT_FALSE(reader.feed(body.data(), body.size()));
    EXPECT_EQ(calls, 2);
}

TEST(Byteranges, MalformedAnswersAreRefused) {
    auto read = [](const std::string& body, uint64_t total = 100) {
        Collected c;
        ByterangesReader reader("b", total, c.out());
        reader.feed(body.data(), body.size());
        return reader.complete();
    };
    expect_error([&] { read("\r\n--b\r\nContent-Type: x\r\n\r\nabc"); }, {"without a Content-Range"});
    expect_error([&] { read("\r\n--b\r\nContent-Range: bytes 5-1/100\r\n\r\n"); }, {"Content-Range"});
    expect_error([&] { read("\r\n--b\r\nContent-Range: bytes 0-1/99\r\n\r\nab"); }, {"99 bytes, not 100"});
    expect_error([&] { read("\r\n--b\r\nno colon here\r\n\r\n"); }, {"no ':'"});
    expect_error([&] { read("\r\n--b\r\nContent-Range: bytes 0-1/100\r\n\r\nabXYZ\r\n"); }, {"expected a boundary"});
    expect_error([&] { read("\r\n--b\r\nX: " + std::string(9000, 'a')); }, {"8 KiB"});
    expect_error([&] { read(std::string(9000, 'p')); }, {"8 KiB"});  // a preamble without end
    EXPECT_FALSE(read("\r\n--b\r\nContent-Range: bytes 0-1/100\r\n\r\nab"));  // cut short: not complete
    EXPECT_TRUE(read("preamble\r\n--b\r\nContent-Range: bytes 0-1/100\r\n\r\nab\r\n--b--\r\nepilogue"));
}
