// The cairn-verifier program: options, start-up errors, the port it prints, the admin token, a
// whole round over real HTTPS (http::Client) with the device played by tpm2-tools, a clean stop.
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "http/client.hpp"
#include "tests/attestation/verifier_fixture.hpp"
#include "tests/support/pki.hpp"

using namespace cairn;
using cairn::test::Reply;
using nlohmann::json;

namespace {

const std::string admin_token = "verifier-admin-token";

class VerifierMainTest : public cairn::test::VerifierDeviceFixture {
protected:
    std::unique_ptr<cairn::test::TestPki> pki;
    std::unique_ptr<cairn::test::VerifierProgram> verifier;
    Process* process = nullptr;
    uint16_t port = 0;
    http::Client client;

    std::vector<std::string> args() {
        return {"--cert", (*pki / "server-chain.pem").string(), "--key", (*pki / "server.key").string(), "--update-ca",
                cairn::test::update_ca().string(), "--state", path("state.db"), "--admin-token-file", path("admin-token"), "--enrollments",
                path("enrollments.json"), "--nonce-ttl", "60"};
    }

    void start() {
        verifier = std::make_unique<cairn::test::VerifierProgram>(args(), scratch / "verifier.log");
        process = verifier->process.get();
        port = verifier->port;
        ASSERT_NE(port, 0);
    }

    void SetUp() override {
        pki = std::make_unique<cairn::test::TestPki>(scratch / "pki");
        make_keys();
        write_file_atomic(path("admin-token"), admin_token + "\n", 0600);
        write_file_atomic(path("enrollments.json"),
                          json{{"devices", {{{"deviceId", "dev1"}, {"endorsementKey", base64_encode(ek_public)}}}}}.dump());
        start();
    }

    Reply request(const std::string& method, const std::string& path, const std::string& body, const std::vector<std::string>& headers) {
        http::HttpsRequest r;
        r.method = method;
        r.url = "https://localhost:" + std::to_string(port) + path;
        r.body = body;
        r.trust_bundle = *pki / "root.pem";
        r.headers = headers;
        r.headers.push_back("Content-Type: application/json");
        const http::HttpsReply reply = client.request(r);
        Reply out{static_cast<int>(reply.status), {}};
        if (!reply.body.empty()) out.body = json::parse(reply.body);
        return out;
    }
    Reply call(const std::string& method, const std::string& path, const json& body, bool admin = false) override {
        return request(method, path, body.is_null() ? "" : body.dump(), admin ? std::vector<std::string>{"Authorization: Bearer " + admin_token}
                                                                             : std::vector<std::string>{});
    }
};

}  // namespace

TEST(VerifierMain, RefusesBadOptionsWithOneLine) {
    auto r = run({CAIRN_VERIFIER_BINARY, "--bogus"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("cairn-verifier: unknown option '--bogus'"), std::string::npos) << r.err;
    r = run({CAIRN_VERIFIER_BINARY, "--port", "x"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--port: 'x' is not a whole number"), std::string::npos) << r.err;
    r = run({CAIRN_VERIFIER_BINARY, "--nonce-ttl", "0"});
    EXPECT_EQ(r.exit_code, 2);
    r = run({CAIRN_VERIFIER_BINARY, "--cert", "c"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--cert, --key, --update-ca and --state are required"), std::string::npos) << r.err;
    r = run({CAIRN_VERIFIER_BINARY, "--cert", "c", "--key", "k", "--update-ca", "/nonexistent/ca.pem", "--state", "/tmp/x.db"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("/nonexistent/ca.pem"), std::string::npos) << r.err;
    r = run({CAIRN_VERIFIER_BINARY, "--help"});
    EXPECT_EQ(r.exit_code, 0);
    for (const char* option : {"--listen", "--port", "--cert", "--key", "--update-ca", "--state", "--admin-token-file", "--enrollments", "--nonce-ttl"})
        EXPECT_NE(r.out.find(option), std::string::npos) << option;
}

// The real program over HTTPS: the admin token guards the admin paths, the device enrolled by the
// enrollments file binds its AK and attests Healthy, SIGTERM stops it, a restart keeps the state.
TEST_F(VerifierMainTest, ServesTheWholeExchangeOverHttps) {
    Reply r = request("GET", "/attest/v1/stale", "", {});
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.body.value("error", ""), "unauthorized");
    r = request("GET", "/attest/v1/stale", "", {"Authorization: Bearer wrong"});
    EXPECT_EQ(r.status, 401);
    r = request("GET", "/attest/v1/devices/dev1/status", "", {"Authorization: Bearer " + admin_token + "x"});
    EXPECT_EQ(r.status, 401);
    r = call("GET", "/attest/v1/stale", nullptr, true);
    ASSERT_EQ(r.status, 200) << r.body.dump();
    ASSERT_EQ(r.body.at("devices").size(), 1u);
    EXPECT_EQ(r.body["devices"][0]["deviceId"], "dev1");  // enrolled by the file, never attested

    const Reply n = nonce("dev1");
    EXPECT_EQ(n.body.at("expiresIn"), 60);
    ASSERT_EQ(bind("dev1").status, 200);
    r = attest("dev1", "sb-on");
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.body.at("healthStatus"), "Healthy") << r.body.dump();
    EXPECT_EQ(call("GET", "/attest/v1/stale", nullptr, true).body.at("devices").size(), 0u);
    const Reply malformed = request("POST", "/attest/v1/devices/dev1/evidence", "{]", {});
    EXPECT_EQ(malformed.status, 400);
    EXPECT_EQ(malformed.body.value("error", ""), "bad-request");

    EXPECT_EQ(process->stop(5000), 0);
    EXPECT_NE(read_file(scratch / "verifier.log").find("stopping"), std::string::npos);
    start();  // the same state file (and enrollments file again: nothing changes for dev1)
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/status", nullptr, true).body, r.body);
    EXPECT_TRUE(nonce("dev1").body.at("attestationKeyBound").get<bool>());
    EXPECT_EQ(process->stop(5000), 0);
}
