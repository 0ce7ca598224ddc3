#include "http/client.hpp"

#include <gtest/gtest.h>

#include <variant>

#include "common/error.hpp"
#include "http/server.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::http;

namespace {

class HttpClientTest : public ::testing::Test {
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

HttpResponse echo(const HttpRequest& request) {
    HttpResponse r;
    r.status = request.method == "POST" ? 201 : 200;
    r.headers.emplace_back("X-Method", request.method);
    r.body = request.path + "|" + request.body + "|" + request.header("x-test");
    return r;
}

}  // namespace

TEST_F(HttpClientTest, SendsMethodBodyAndHeadersAndReusesItsHandle) {
    HttpsServer server(config(), echo);
    Client client;
    HttpsRequest request;
    request.url = "https://127.0.0.1:" + std::to_string(server.port()) + "/a/b";
    request.trust_bundle = pki / "root.pem";
    request.headers = {"X-Test: yes"};
    HttpsReply reply = client.request(request);
    EXPECT_EQ(reply.status, 200);
    EXPECT_EQ(reply.body, "/a/b||yes");
    EXPECT_EQ(reply.header("x-method"), "GET");
    request.method = "POST";
    request.body = std::string("bytes\0with nul", 14);
    reply = client.request(request);
    EXPECT_EQ(reply.status, 201);
    EXPECT_EQ(reply.body, "/a/b|" + request.body + "|yes");
    EXPECT_EQ(server.stats().accepted, 1u);  // one connection for both
}

TEST_F(HttpClientTest, AnUntrustedServerIsATransportErrorNotWorthRetrying) {
    HttpsServer server(config(), echo);
    HttpsRequest request;
    request.url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
    request.trust_bundle = pki / "unknown-root.pem";
    Client client;
    auto outcome = client.exchange(request);
    auto* error = std::get_if<TransportError>(&outcome);
    ASSERT_NE(error, nullptr);
    EXPECT_FALSE(error->retryable);
    EXPECT_NE(error->message.find(request.url), std::string::npos) << error->message;
    cairn::test::expect_error([&] { https_request(request); }, {"GET " + request.url});
}

TEST_F(HttpClientTest, NoServerIsATransportErrorWorthRetrying) {
    uint16_t port;
    {
        HttpsServer server(config(), echo);
        port = server.port();
    }
    HttpsRequest request;
    request.url = "https://127.0.0.1:" + std::to_string(port) + "/";
    request.trust_bundle = pki / "root.pem";
    request.connect_timeout_ms = 2000;
    Client client;
    auto outcome = client.exchange(request);
    auto* error = std::get_if<TransportError>(&outcome);
    ASSERT_NE(error, nullptr);
    EXPECT_TRUE(error->retryable) << error->message;
}

TEST_F(HttpClientTest, OnlyHttpsIsSpoken) {
    HttpsRequest request;
    request.url = "http://127.0.0.1:1/";
    Client client;
    auto outcome = client.exchange(request);
    ASSERT_TRUE(std::holds_alternative<TransportError>(outcome));
    EXPECT_FALSE(std::get<TransportError>(outcome).retryable);
}

TEST(HttpDate, ParsesImfFixdate) {
    EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    EXPECT_EQ(parse_http_date(http_date(1700000000)), 1700000000);
    EXPECT_EQ(parse_http_date("not a date"), -1);
}
