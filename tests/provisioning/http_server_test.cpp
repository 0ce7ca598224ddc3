#include "provisioning/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/provisioning/pki.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::provisioning;

namespace {

// A raw TLS client: sends `request` bytes, reads until the server closes or `until` appears.
std::string exchange(uint16_t port, const std::string& request, const std::filesystem::path& ca, const std::filesystem::path& cert = {},
                     const std::filesystem::path& key = {}, const std::string& until = "") {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (!cert.empty()) {
        SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str());
        SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM);
    }
    cairn::UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) cairn::fail_errno("connect");
    SslPtr ssl(SSL_new(ctx.get()));
    SSL_set_fd(ssl.get(), fd.get());
    SSL_set1_host(ssl.get(), "localhost");
    if (SSL_connect(ssl.get()) != 1) cairn::fail("TLS handshake failed: " + openssl_errors());
    SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
    std::string out;
    char buffer[4096];
    for (;;) {
        if (!until.empty() && out.find(until) != std::string::npos) break;
        int n = SSL_read(ssl.get(), buffer, sizeof buffer);
        if (n <= 0) break;
        out.append(buffer, static_cast<size_t>(n));
    }
    return out;
}

}  // namespace

class HttpServerTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    cairn::test::TestPki pki{scratch / "pki"};
    HttpsServerConfig config() {
        HttpsServerConfig c;
        c.certificate_chain = pki / "server-chain.pem";
        c.private_key = pki / "server.key";
        return c;
    }
};

TEST_F(HttpServerTest, ParsesRequestsAndKeepsConnectionsAlive) {
    std::vector<HttpRequest> seen;
    std::mutex m;
    HttpsServer server(config(), [&](const HttpRequest& r) {
        std::lock_guard lock(m);
        HttpRequest copy;
        copy.method = r.method;
        copy.path = r.path;
        copy.query = r.query;
        copy.headers = r.headers;
        copy.body = r.body;
        seen.push_back(std::move(copy));
        return HttpResponse::json(202, {{"echo", r.body}});
    });
    ASSERT_NE(server.port(), 0);
    const std::string one = "PUT /scope/registrations/a%2Fb/register?api-version=2021-06-01 HTTP/1.1\r\nHost: localhost\r\n"
                            "Content-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
    const std::string two = "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    std::string reply = exchange(server.port(), one + two, pki / "root.pem");
    EXPECT_EQ(reply.rfind("HTTP/1.1 202 Accepted\r\n", 0), 0u) << reply;
    EXPECT_NE(reply.find("{\"echo\":\"hello\"}"), std::string::npos);
    EXPECT_NE(reply.find("Connection: close"), std::string::npos);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].method, "PUT");
    EXPECT_EQ(seen[0].path, "/scope/registrations/a/b/register");
    EXPECT_EQ(seen[0].query["api-version"], "2021-06-01");
    EXPECT_EQ(seen[0].header("content-type"), "application/json");
    EXPECT_EQ(seen[0].body, "hello");
    EXPECT_EQ(seen[1].path, "/x");
}

TEST_F(HttpServerTest, HandsClientCertificatesToTheHandler) {
    std::string cn, chain_size;
    HttpsServer server(config(), [&](const HttpRequest& r) {
        cn = r.peer_chain.empty() ? "" : subject_common_name(r.peer_chain[0].get());
        chain_size = std::to_string(r.peer_chain.size());
        return HttpResponse::json(200, nlohmann::json::object());
    });
    auto chain = pki.device("dev", "device-9");
    std::string reply = exchange(server.port(), "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", pki / "root.pem", chain, pki / "dev.key");
    EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK", 0), 0u) << reply;
    EXPECT_EQ(cn, "device-9");
    EXPECT_EQ(chain_size, "2");
}

TEST_F(HttpServerTest, AnswersExpectContinueAndRejectsBadRequests) {
    HttpsServer server(config(), [&](const HttpRequest& r) { return HttpResponse::json(200, {{"size", r.body.size()}}); });
    std::string reply = exchange(server.port(), "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", pki / "root.pem",
                                 {}, {}, "Continue\r\n\r\n");
    EXPECT_EQ(reply.rfind("HTTP/1.1 100 Continue", 0), 0u) << reply;
    reply = exchange(server.port(), "garbage\r\n\r\n", pki / "root.pem");
    EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
    reply = exchange(server.port(), "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", pki / "root.pem");
    EXPECT_EQ(reply.rfind("HTTP/1.1 411", 0), 0u) << reply;
}

TEST_F(HttpServerTest, StopsWithOpenConnections) {
    auto server = std::make_unique<HttpsServer>(config(), [](const HttpRequest&) { return HttpResponse::json(200, {}); });
    std::thread client([&, port = server->port()] {
        try {
            exchange(port, "GET / HTTP/1.1\r\n\r\n", pki / "root.pem");  // keep-alive: waits until the server closes
        } catch (...) {
        }
    });
    ::usleep(200000);
    auto t0 = std::chrono::steady_clock::now();
    server->stop();
    client.join();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(HttpServerTest, ErrorsNameTheirObject) {
    auto c = config();
    c.private_key = pki / "dev-missing.key";
    cairn::test::expect_error([&] { HttpsServer(c, [](const HttpRequest&) { return HttpResponse{}; }); }, {"dev-missing.key"});
    c = config();
    c.address = "localhost";
    cairn::test::expect_error([&] { HttpsServer(c, [](const HttpRequest&) { return HttpResponse{}; }); }, {"'localhost' is not an IPv4 address"});
    EXPECT_EQ(http_date(1700000000), "Tue, 14 Nov 2023 22:13:20 GMT");
}

TEST(HttpRequestHead, ParsesRequestLineHeadersAndTarget) {
    HttpRequest r;
    ASSERT_TRUE(parse_request_head("PUT /scope/registrations/a%2Fb/register?api-version=2021-06-01&x=%20y HTTP/1.1\r\n"
                                   "Host: localhost\r\nContent-Length:  12 \r\nX-Empty:\r\n",
                                   r));
    EXPECT_EQ(r.method, "PUT");
    EXPECT_EQ(r.target, "/scope/registrations/a%2Fb/register?api-version=2021-06-01&x=%20y");
    EXPECT_EQ(r.header("host"), "localhost");
    EXPECT_EQ(r.header("content-length"), "12");
    EXPECT_EQ(r.headers.count("x-empty"), 1u);
    decode_request_target(r);
    EXPECT_EQ(r.path, "/scope/registrations/a/b/register");
    EXPECT_EQ(r.query["api-version"], "2021-06-01");
    EXPECT_EQ(r.query["x"], " y");

    for (const char* bad : {"", "GET", "GET /", "GET / FTP/1.0", "GET / HTTP/1.1\r\nno colon here"}) {
        HttpRequest b;
        EXPECT_FALSE(parse_request_head(bad, b)) << bad;
    }
    HttpRequest escape;
    ASSERT_TRUE(parse_request_head("GET /a%zz HTTP/1.1", escape));
    EXPECT_THROW(decode_request_target(escape), cairn::Error);
}

// Found by fuzz/dps_request: an error message quoting a request byte that is not UTF-8 made
// nlohmann's dump() throw type_error, which nothing caught.
TEST(HttpResponse, JsonBodyWithBytesThatAreNotUtf8) {
    HttpResponse r = HttpResponse::json(400, {{"message", std::string("hub status 'di\x9esabled' is unknown")}});
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("di\xef\xbf\xbdsabled"), std::string::npos) << r.body;
}
