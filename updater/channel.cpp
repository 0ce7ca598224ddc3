#include "updater/channel.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>

#include "common/encoding.hpp"
#include "common/file.hpp"
#include "common/versions.hpp"
#include "http/client.hpp"
#include "updater/signature.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json signed_object(const ChannelIndex& i) {
    json j{{"format", channel_format}, {"channel", i.channel}, {"compatible", i.compatible}, {"version", i.version},
           {"build_id", i.build_id},   {"bundle", i.bundle},   {"size", i.size},             {"published", i.published}};
    if (i.expires) j["expires"] = *i.expires;
    return j;
}

[[noreturn]] void bad(const std::string& what, const std::string& problem) {
    fail_update(ErrorCode::bad_bundle, what + ": not a channel index: " + problem);
}

std::string utc(int64_t t) { return utc_timestamp(std::chrono::system_clock::from_time_t(static_cast<time_t>(t))); }

}  // namespace

std::string ChannelIndex::signed_json() const { return signed_object(*this).dump(); }

std::string make_channel_file(const ChannelIndex& index, const fs::path& key, const fs::path& cert, const std::string& passphrase,
                              std::optional<int64_t> signing_time) {
    const std::string data = index.signed_json();
    const std::string signature = cms_sign(data, key, cert, passphrase, signing_time);
    return json{{"signed", signed_object(index)}, {"signature", base64_encode(signature)}}.dump(2) + "\n";
}

ChannelIndex open_channel_file(std::string_view text, const fs::path& trust_anchor, int64_t certificate_time, const std::string& what) {
    if (text.size() > channel_file_max) bad(what, "larger than " + std::to_string(channel_file_max) + " bytes");
    json file;
    try {
        file = json::parse(text);
    } catch (const json::exception& e) {
        bad(what, std::string("not JSON (") + e.what() + ")");
    }
    if (!file.is_object() || file.size() != 2 || !file.contains("signed") || !file.contains("signature") || !file["signed"].is_object() ||
        !file["signature"].is_string())
        bad(what, "expected {\"signed\": {…}, \"signature\": \"…\"}");
    const json& s = file["signed"];
    // The signature first: nothing of an unsigned file is looked at further.
    const std::string signature = with_code(ErrorCode::bad_signature, [&] { return base64_decode(file["signature"].get<std::string>(), what + ": signature"); });
    with_code(ErrorCode::bad_signature, [&] { cms_verify(s.dump(), signature, trust_anchor, what, certificate_time); });
    auto field = [&](const char* name, json::value_t type) -> const json& {
        if (!s.contains(name)) bad(what, std::string("no \"") + name + "\"");
        const json& v = s[name];
        const bool ok = type == json::value_t::number_unsigned ? v.is_number_unsigned() : type == json::value_t::number_integer ? v.is_number_integer() : v.type() == type;
        if (!ok) bad(what, std::string("\"") + name + "\" has the wrong type");
        return v;
    };
    for (const auto& [key, _] : s.items())
        if (key != "format" && key != "channel" && key != "compatible" && key != "version" && key != "build_id" && key != "bundle" &&
            key != "size" && key != "published" && key != "expires")
            bad(what, "unknown field \"" + key + "\"");
    if (field("format", json::value_t::number_integer).get<int64_t>() != channel_format)
        bad(what, "format " + s["format"].dump() + " (this updater reads format " + std::to_string(channel_format) + ")");
    ChannelIndex i;
    i.channel = field("channel", json::value_t::string);
    i.compatible = field("compatible", json::value_t::string);
    i.version = field("version", json::value_t::string);
    i.build_id = field("build_id", json::value_t::string);
    i.bundle = field("bundle", json::value_t::string);
    i.size = field("size", json::value_t::number_unsigned);
    i.published = field("published", json::value_t::number_integer);
    if (s.contains("expires")) i.expires = field("expires", json::value_t::number_integer).get<int64_t>();
    if (const auto problem = version_problem(i.version)) bad(what, "version \"" + i.version + "\": " + *problem);
    if (i.bundle.empty()) bad(what, "\"bundle\" is empty");
    return i;
}

std::string resolve_bundle_url(const std::string& index_url, const std::string& bundle) {
    auto refuse = [&](const std::string& why) -> std::string {
        fail_update(ErrorCode::bad_bundle, "the channel index names bundle \"" + bundle + "\": " + why);
    };
    if (bundle.empty()) refuse("empty");
    for (unsigned char c : bundle)
        if (c <= ' ' || c == 0x7f || c == '\\') refuse("spaces, control characters or backslashes");
    if (is_bundle_url(bundle)) return bundle;
    if (bundle.rfind("//", 0) == 0) refuse("a URL without a scheme");
    const size_t colon = bundle.find(':'), slash = bundle.find('/');
    if (colon != std::string::npos && (slash == std::string::npos || colon < slash)) refuse("only http:// and https:// URLs");
    for (size_t start = 0;;) {
        const size_t end = bundle.find('/', start);
        const std::string part = bundle.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (part == ".." || part == ".") refuse("no . or .. in the path");
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (!is_bundle_url(index_url)) refuse("the index's URL " + redact_url(index_url) + " is not http(s)");
    const size_t authority = index_url.find("://") + 3;
    const size_t path = index_url.find_first_of("/?#", authority);
    const std::string origin = index_url.substr(0, path);
    if (bundle[0] == '/') return origin + bundle;
    std::string dir = "/";
    if (path != std::string::npos && index_url[path] == '/') {
        const size_t end = index_url.find_first_of("?#", path);
        const std::string p = index_url.substr(path, end == std::string::npos ? std::string::npos : end - path);
        dir = p.substr(0, p.rfind('/') + 1);
    }
    return origin + dir + bundle;
}

ChannelIndex fetch_channel_index(const std::string& url, const HttpSettings& http, const fs::path& trust_anchor, int64_t certificate_time) {
    const std::string what = redact_url(url);
    http::HttpsRequest request = request_for(url, http);
    request.headers = {"Cache-Control: no-cache"};  // a cache in between must ask the server
    std::string body;
    bool too_big = false;
    request.on_body = [&](const http::HttpsReply& head, const char* data, size_t size) {
        if (head.status != 200) return true;  // the error page is not kept
        if (body.size() + size > channel_file_max) {
            too_big = true;
            return false;
        }
        body.append(data, size);
        return true;
    };
    http::Client client;
    auto result = client.exchange(request);
    if (too_big) fail_update(ErrorCode::bad_bundle, what + ": not a channel index: larger than " + std::to_string(channel_file_max) + " bytes");
    if (const auto* failed = std::get_if<http::TransportError>(&result)) fail_update(ErrorCode::transfer, failed->message);
    const http::HttpsReply& reply = std::get<http::HttpsReply>(result);
    if (reply.status != 200) fail_update(ErrorCode::transfer, what + ": the server answered " + std::to_string(reply.status));
    return open_channel_file(body, trust_anchor, certificate_time, what);
}

std::string_view channel_verdict_name(ChannelVerdict verdict) {
    switch (verdict) {
        case ChannelVerdict::up_to_date: return "up-to-date";
        case ChannelVerdict::waiting: return "waiting";
        case ChannelVerdict::skipped: return "skipped";
        case ChannelVerdict::available: return "available";
    }
    return "available";
}

ChannelVerdict judge_channel_index(const ChannelIndex& index, const std::string& compatible, const std::string& running_version,
                                   const std::string& running_build_id, const UpdateStatus& status, int64_t last_published, int64_t now) {
    if (index.compatible != compatible)
        fail_update(ErrorCode::incompatible, "the channel index is for \"" + index.compatible + "\", this system is \"" + compatible + "\"");
    if (index.expires && now > *index.expires)
        fail_update(ErrorCode::stale_channel, "the channel index expired at " + utc(*index.expires) + " (the clock says " + utc(now) + ")");
    if (index.published < last_published)
        fail_update(ErrorCode::stale_channel, "the channel index was published at " + utc(index.published) +
                                                  ", before the one this device accepted (" + utc(last_published) +
                                                  "): an old copy (a stale cache, or replayed)");
    if (index.build_id == running_build_id || compare_versions(index.version, running_version) <= 0) return ChannelVerdict::up_to_date;
    if (status.pending && status.pending->version == index.version) return ChannelVerdict::waiting;
    for (const auto& [slot, record] : status.slots) {
        if (record.build_id != index.build_id) continue;
        if (record.state == SlotState::trial) return ChannelVerdict::waiting;
        if (record.state == SlotState::bad) return ChannelVerdict::skipped;
    }
    if (status.last && status.last->version == index.version &&
        (status.last->kind == EventKind::rolled_back || status.last->kind == EventKind::fell_back))
        return ChannelVerdict::skipped;
    return ChannelVerdict::available;
}

std::optional<RebootPolicy> parse_reboot_policy(std::string_view text) {
    if (text == "now") return RebootPolicy{RebootPolicy::Kind::now};
    if (text == "never") return RebootPolicy{RebootPolicy::Kind::never};
    auto minute = [](std::string_view t) -> std::optional<int> {
        if (t.size() != 5 || t[2] != ':') return std::nullopt;
        for (size_t i : {0, 1, 3, 4})
            if (t[i] < '0' || t[i] > '9') return std::nullopt;
        const int h = (t[0] - '0') * 10 + (t[1] - '0'), m = (t[3] - '0') * 10 + (t[4] - '0');
        if (h > 23 || m > 59) return std::nullopt;
        return h * 60 + m;
    };
    if (text.size() != 11 || text[5] != '-') return std::nullopt;
    const auto start = minute(text.substr(0, 5)), end = minute(text.substr(6));
    if (!start || !end || *start == *end) return std::nullopt;
    return RebootPolicy{RebootPolicy::Kind::window, *start, *end};
}

int64_t next_reboot_time(const RebootPolicy& policy, int64_t now, std::mt19937_64& random) {
    if (policy.kind != RebootPolicy::Kind::window) return now;
    const int64_t length = ((policy.end_minute - policy.start_minute + 1440) % 1440) * 60;
    const int64_t day = now - ((now % 86400) + 86400) % 86400;
    for (int64_t d = -1; d <= 1; ++d) {
        const int64_t start = day + d * 86400 + policy.start_minute * 60, end = start + length;
        if (now >= end) continue;
        const int64_t from = std::max(now, start);
        return from + static_cast<int64_t>(random() % static_cast<uint64_t>(end - from));
    }
    return now;  // not reached: tomorrow's window always lies ahead
}

std::string ChannelState::to_json() const {
    json j{{"url", url},         {"checked", checked}, {"published", published},   {"version", version},
           {"result", result},   {"message", message}, {"next_check", next_check}, {"reboot_at", reboot_at}, {"reboot_boot", reboot_boot}};
    j["code"] = code ? json(std::string(error_code_name(*code))) : json(nullptr);
    return j.dump();
}

ChannelState load_channel_state(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(file, ec)) return {};
    try {
        const json j = json::parse(read_file(file));
        ChannelState s;
        s.url = j.at("url");
        s.checked = j.at("checked");
        s.published = j.at("published");
        s.version = j.at("version");
        s.result = j.at("result");
        s.message = j.at("message");
        s.next_check = j.value("next_check", int64_t{0});
        s.reboot_at = j.value("reboot_at", int64_t{0});
        s.reboot_boot = j.value("reboot_boot", "");
        if (j.contains("code") && j["code"].is_string()) s.code = parse_error_code(j["code"].get<std::string>()).value_or(ErrorCode::internal);
        return s;
    } catch (const json::exception& e) {
        fail(file.string() + ": damaged (" + e.what() + ")");
    }
}

void save_channel_state(const fs::path& file, const ChannelState& state) {
    fs::create_directories(file.parent_path());
    write_file_atomic(file, state.to_json() + "\n", 0644);
}

}  // namespace cairn::updater
