// The cairn-dps program: options, start-up errors, the port file, --fail, a clean stop.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "common/encoding.hpp"
#include "provisioning/sas.hpp"
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

TEST(DpsMain, ABadStateFileStopsTheStartNamingIt) {
    cairn::test::Scratch scratch;
    cairn::test::write_text(scratch / "enrollments.json", R"({"idScope": "0ne0000CA1R"})");
    cairn::test::write_text(scratch / "state.sqlite", std::string(8192, 'x'));
    auto r = cairn::run({CAIRN_DPS_BINARY, "--enrollments", (scratch / "enrollments.json").string(), "--cert", "c", "--key", "k", "--state",
                         (scratch / "state.sqlite").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find((scratch / "state.sqlite").string()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("not a database"), std::string::npos) << r.err;
    r = cairn::run({CAIRN_DPS_BINARY, "--state", ""});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--state"), std::string::npos) << r.err;
}

// cairn-dps killed with SIGKILL while an operation is still assigning: started again on the same
// --state file, it answers the operation, knows the device and keeps what the admin API put.
TEST(DpsMain, AStateFileSurvivesSigkill) {
    cairn::test::Scratch scratch;
    const std::string key = base64_encode(std::string_view("device-key-0123456789abcdef01234"));
    const nlohmann::json attestation = {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", key}}}};
    nlohmann::json enrollments = {{"enrollments", {{{"registrationId", "dev1"}, {"attestation", attestation}}}}};
    cairn::test::DpsFixture dps(scratch / "dps", enrollments, {"--state", (scratch / "dps" / "state.sqlite").string(), "--assign-delay-ms", "1500"});
    EXPECT_EQ(dps.admin("PUT", "/admin/enrollments/dev2", nlohmann::json{{"attestation", attestation}}.dump()).status, 200);
    auto device_request = [&](const std::string& method, const std::string& path, const std::string& id, const std::string& body = "") {
        http::HttpsRequest r;
        r.method = method;
        r.url = dps.endpoint() + cairn::test::dps_scope + "/registrations/" + id + path + "?api-version=2021-06-01";
        r.body = body;
        r.trust_bundle = dps.trust_bundle();
        const std::string sas = make_sas_token(sas_resource(cairn::test::dps_scope, id), unix_seconds(std::chrono::system_clock::now()) + 3600,
                                               key_signer(base64_decode(key, "key")));
        r.headers = {"Authorization: " + sas, "Content-Type: application/json"};
        return http::https_request(r);
    };
    http::HttpsReply accepted = device_request("PUT", "/register", "dev1", R"({"registrationId":"dev1"})");
    ASSERT_EQ(accepted.status, 202) << accepted.body;
    const std::string operation = nlohmann::json::parse(accepted.body)["operationId"];
    EXPECT_EQ(device_request("GET", "/operations/" + operation, "dev1").status, 202);  // still assigning

    dps.kill();
    dps.start();
    http::HttpsReply done;
    for (int i = 0; i < 50; ++i) {  // ready 1.5 s after the PUT, by the wall clock
        done = device_request("GET", "/operations/" + operation, "dev1");
        if (done.status != 202) break;
        ::usleep(100000);
    }
    ASSERT_EQ(done.status, 200) << done.body;
    EXPECT_EQ(nlohmann::json::parse(done.body)["registrationState"]["status"], "assigned");
    EXPECT_EQ(device_request("POST", "", "dev1").status, 200);
    const nlohmann::json devices = nlohmann::json::parse(dps.admin("GET", "/admin/devices").body);
    ASSERT_EQ(devices.size(), 1u) << devices.dump();
    EXPECT_EQ(devices[0]["deviceId"], "dev1");
    EXPECT_EQ(dps.admin("GET", "/admin/enrollments/dev2").status, 200);
    EXPECT_EQ(device_request("PUT", "/register", "dev2", R"({"registrationId":"dev2"})").status, 202);
}
