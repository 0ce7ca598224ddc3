// The cairn-dps program: options, start-up errors, the port file, --fail, a clean stop.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;

TEST(DpsMain, RefusesBadOptionsWithOneLine) {
    auto r = cairn::run({CAIRN_DPS_BINARY, "--bogus"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unknown option '--bogus'"), std::string::npos) << r.err;
    r = cairn::run({CAIRN_DPS_BINARY, "--enrollments", "/nonexistent.json", "--cert", "c", "--key", "k"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("/nonexistent.json"), std::string::npos) << r.err;
    r = cairn::run({CAIRN_DPS_BINARY, "--port", "x"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("cairn-dps: --port: 'x' is not a whole number"), std::string::npos) << r.err;
    r = cairn::run({CAIRN_DPS_BINARY, "--fail", "503"});
    EXPECT_NE(r.err.find("--fail: expected STATUS:COUNT, got '503'"), std::string::npos) << r.err;
    EXPECT_EQ(cairn::run({CAIRN_DPS_BINARY, "--help"}).exit_code, 0);
}

TEST(DpsMain, ServesAnswersInjectedFaultsAndStopsOnSigterm) {
    cairn::test::Scratch scratch;
    nlohmann::json enrollments = {{"enrollments", nlohmann::json::array()}};
    cairn::test::DpsFixture dps(scratch / "dps", enrollments, {"--fail", "503:1"});
    http::HttpsRequest r;
    r.method = "PUT";
    r.url = dps.endpoint() + cairn::test::dps_scope + "/registrations/x/register?api-version=2021-06-01";
    r.body = R"({"registrationId":"x"})";
    r.trust_bundle = dps.trust_bundle();
    EXPECT_EQ(http::https_request(r).status, 503);
    http::HttpsReply reply = http::https_request(r);
    EXPECT_EQ(reply.status, 401);
    EXPECT_FALSE(reply.header("date").empty());
    EXPECT_FALSE(reply.header("x-ms-request-id").empty());
    EXPECT_EQ(dps.requests().size(), 2u);
    dps.stop();
    EXPECT_NE(cairn::read_file(scratch / "dps" / "dps.log").find("stopping"), std::string::npos);
}

// --max-connections and --request-timeout-ms reach the server: one silent client takes the only
// place, a second is closed at once, and the silent one is cut at the deadline.
TEST(DpsMain, CapsConnectionsAndCutsSilentClients) {
    auto r = cairn::run({CAIRN_DPS_BINARY, "--max-connections", "0"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--max-connections"), std::string::npos) << r.err;
    cairn::test::Scratch scratch;
    nlohmann::json enrollments = {{"enrollments", nlohmann::json::array()}};
    cairn::test::DpsFixture dps(scratch / "dps", enrollments,
                                {"--max-connections", "1", "--request-timeout-ms", "1500", "--request-log-max-bytes", "100000",
                                 "--tpm-challenge-ttl", "60"});
    http::HttpsRequest q;
    q.method = "PUT";
    q.url = dps.endpoint() + cairn::test::dps_scope + "/registrations/x/register?api-version=2021-06-01";
    q.body = R"({"registrationId":"x"})";
    q.trust_bundle = dps.trust_bundle();
    EXPECT_EQ(http::https_request(q).status, 401);
    // The silent client takes the place once the first request's connection is gone (the
    // server may still be closing it: then the silent one is refused and tries again).
    cairn::UniqueFd silent;
    for (int attempt = 0; attempt < 20; ++attempt) {
        silent.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(dps.port());
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(::connect(silent.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        pollfd p{silent.get(), POLLIN, 0};
        if (::poll(&p, 1, 300) == 0) break;  // still open: it holds the place
    }
    EXPECT_THROW(http::https_request(q), cairn::Error);
    ::usleep(1700000);  // past the silent client's deadline
    EXPECT_EQ(http::https_request(q).status, 401);
}
