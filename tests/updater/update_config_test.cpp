#include "updater/update_config.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;

TEST(UpdateConfig, ReadsTheHttpTableAndDefaultsWithoutIt) {
    const UpdateConfig none = parse_update_config("", "/etc/cairn/update.toml");
    EXPECT_TRUE(none.http.ca_bundle.empty());
    EXPECT_FALSE(none.http.allow_http);
    EXPECT_EQ(none.http.stall_timeout_ms, 30000);
    const UpdateConfig c = parse_update_config(
        "[http]\nca_bundle = \"/etc/cairn/ca.pem\"\nclient_certificate = \"/etc/cairn/d.pem\"\nclient_key = \"/etc/cairn/d.key\"\n"
        "allow_http = true\nconnect_timeout_sec = 5\nstall_timeout_sec = 60\nmax_attempts = 3\n",
        "/etc/cairn/update.toml");
    EXPECT_EQ(c.http.ca_bundle, "/etc/cairn/ca.pem");
    EXPECT_EQ(c.http.client_certificate, "/etc/cairn/d.pem");
    EXPECT_EQ(c.http.client_key, "/etc/cairn/d.key");
    EXPECT_TRUE(c.http.allow_http);
    EXPECT_EQ(c.http.connect_timeout_ms, 5000);
    EXPECT_EQ(c.http.stall_timeout_ms, 60000);
    EXPECT_EQ(c.http.max_attempts, 3);
    Scratch s;
    EXPECT_TRUE(load_update_config(s / "absent.toml").http.ca_bundle.empty());
}

TEST(UpdateConfig, MistakesNameTheFileLineAndKey) {
    const char* file = "/etc/cairn/update.toml";
    expect_error([&] { parse_update_config("[http]\nca = \"/x\"\n", file); }, {"update.toml:2", "http.ca", "unknown key"});
    expect_error([&] { parse_update_config("[http]\nca_bundle = \"ca.pem\"\n", file); }, {"http.ca_bundle", "absolute path"});
    expect_error([&] { parse_update_config("[http]\nstall_timeout_sec = 0\n", file); }, {"http.stall_timeout_sec", "between 1 and 3600"});
    expect_error([&] { parse_update_config("[http]\nallow_http = \"yes\"\n", file); }, {"http.allow_http", "true or false"});
    expect_error([&] { parse_update_config("[http]\nclient_key = \"/k\"\n", file); }, {"client_certificate and client_key go together"});
    expect_error([&] { parse_update_config("[channel]\n", file); }, {"channel", "unknown key"});
    expect_error([&] { parse_update_config("[http\n", file); }, {"update.toml:1", "not valid TOML"});
}
