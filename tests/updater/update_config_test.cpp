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
    expect_error([&] { parse_update_config("[chanel]\n", file); }, {"chanel", "unknown key"});
    expect_error([&] { parse_update_config("[channel]\ninterval_sec = 60\n", file); }, {"channel.url", "missing"});
    expect_error([&] { parse_update_config("[channel]\nurl = \"ftp://x/stable.json\"\n", file); }, {"channel.url", "http:// or https://"});
    expect_error([&] { parse_update_config("[channel]\nurl = \"http://x/stable.json\"\n", file); }, {"channel.url", "allow_http"});
    expect_error([&] { parse_update_config("[channel]\nurl = \"https://x/s.json\"\ninterval_sec = 5\n", file); },
                 {"channel.interval_sec", "between 10 and"});
    expect_error([&] { parse_update_config("[channel]\nurl = \"https://x/s.json\"\nreboot = \"later\"\n", file); },
                 {"update.toml:3", "channel.reboot", "HH:MM-HH:MM"});
    expect_error([&] { parse_update_config("[channel]\nurl = \"https://x/s.json\"\nreboot = \"25:00-03:00\"\n", file); },
                 {"channel.reboot"});
    expect_error([&] { parse_update_config("[http\n", file); }, {"update.toml:1", "not valid TOML"});
}

TEST(UpdateConfig, ReadsTheChannel) {
    const UpdateConfig none = parse_update_config("", "/etc/cairn/update.toml");
    EXPECT_TRUE(none.channel.url.empty());
    const UpdateConfig c = parse_update_config(
        "[channel]\nurl = \"https://updates.example.com/m/stable.json\"\ninterval_sec = 3600\njitter_sec = 60\ninstall = false\n"
        "reboot = \"23:30-01:00\"\n",
        "/etc/cairn/update.toml");
    EXPECT_EQ(c.channel.url, "https://updates.example.com/m/stable.json");
    EXPECT_EQ(c.channel.interval_sec, 3600);
    EXPECT_EQ(c.channel.jitter(), 60);
    EXPECT_FALSE(c.channel.install);
    EXPECT_EQ(c.channel.reboot.kind, RebootPolicy::Kind::window);
    EXPECT_EQ(c.channel.reboot.start_minute, 23 * 60 + 30);
    EXPECT_EQ(c.channel.reboot.end_minute, 60);
    const UpdateConfig d = parse_update_config("[http]\nallow_http = true\n[channel]\nurl = \"http://mirror/stable.json\"\n", "/u.toml");
    EXPECT_EQ(d.channel.interval_sec, 6 * 3600);
    EXPECT_EQ(d.channel.jitter(), 6 * 360);  // a tenth of the interval
    EXPECT_TRUE(d.channel.install);
    EXPECT_EQ(d.channel.reboot.kind, RebootPolicy::Kind::now);
}
