// The cairn-dps program: options, start-up errors, the port file, --fail, a clean stop.
#include <signal.h>

#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/test_support.hpp"

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
    HttpsRequest r;
    r.method = "PUT";
    r.url = dps.endpoint() + cairn::test::dps_scope + "/registrations/x/register?api-version=2021-06-01";
    r.body = R"({"registrationId":"x"})";
    r.trust_bundle = dps.trust_bundle();
    EXPECT_EQ(https_request(r).status, 503);
    HttpsReply reply = https_request(r);
    EXPECT_EQ(reply.status, 401);
    EXPECT_FALSE(reply.header("date").empty());
    EXPECT_FALSE(reply.header("x-ms-request-id").empty());
    EXPECT_EQ(dps.requests().size(), 2u);
    dps.stop();
    EXPECT_NE(cairn::read_file(scratch / "dps" / "dps.log").find("stopping"), std::string::npos);
}
