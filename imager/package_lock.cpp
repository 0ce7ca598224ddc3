#include "imager/package_lock.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace cairn::imager {

namespace {

using nlohmann::json;
using ordered = nlohmann::ordered_json;

bool is_hex64(const std::string& s) {
    return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

std::string lock_text(const PackageLock& lock) {
    std::vector<LockedPackage> packages = lock.packages;
    std::sort(packages.begin(), packages.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::string out = "{\n  \"format\": " + std::to_string(lock.format) + ",\n  \"request\": " + json(lock.request_digest).dump() +
                      ",\n  \"packages\": [";
    for (size_t i = 0; i < packages.size(); ++i) {
        const auto& p = packages[i];
        ordered line = {{"name", p.name},         {"version", p.version}, {"architecture", p.architecture},
                        {"size", p.size},         {"sha256", p.sha256},   {"filename", p.filename},
                        {"url", p.url},           {"local", p.local}};
        out += (i ? ",\n    " : "\n    ") + line.dump();
    }
    out += packages.empty() ? "]\n}\n" : "\n  ]\n}\n";
    return out;
}

PackageLock parse_lock(std::string_view text, const fs::path& file) {
    const std::string where = file.string();
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large
        fail(where + ": not a Cairn package lock (invalid JSON: " + e.what() + ")");
    }
    if (!j.is_object()) fail(where + ": not a Cairn package lock (not a JSON object)");
    PackageLock lock;
    auto format = j.find("format");
    if (format == j.end() || !format->is_number_integer()) fail(where + ": not a Cairn package lock (no \"format\" number)");
    if (format->get<int64_t>() != 1) fail(where + ": lock format " + format->dump() + " is not known to this Cairn (it reads format 1)");
    lock.format = 1;
    auto request = j.find("request");
    if (request == j.end() || !request->is_string()) fail(where + ": no \"request\" digest string");
    lock.request_digest = request->get<std::string>();
    auto packages = j.find("packages");
    if (packages == j.end() || !packages->is_array()) fail(where + ": no \"packages\" list");
    for (size_t i = 0; i < packages->size(); ++i) {
        const json& e = (*packages)[i];
        std::string at = where + ": package " + std::to_string(i + 1);
        if (!e.is_object()) fail(at + " is not a JSON object");
        auto text_field = [&](const char* key, bool may_be_empty) {
            auto it = e.find(key);
            if (it == e.end() || !it->is_string()) fail(at + ": no \"" + key + "\" string");
            std::string v = it->get<std::string>();
            if (v.empty() && !may_be_empty) fail(at + ": \"" + key + "\" is empty");
            return v;
        };
        LockedPackage p;
        p.name = text_field("name", false);
        at = where + ": package '" + p.name + "'";
        p.version = text_field("version", false);
        p.architecture = text_field("architecture", false);
        p.filename = text_field("filename", false);
        p.sha256 = text_field("sha256", false);
        auto local = e.find("local");
        if (local == e.end() || !local->is_boolean()) fail(at + ": no \"local\" true/false");
        p.local = local->get<bool>();
        p.url = text_field("url", p.local);
        auto size = e.find("size");
        if (size == e.end() || !size->is_number_unsigned()) fail(at + ": no \"size\" number");
        p.size = size->get<uint64_t>();
        if (!is_hex64(p.sha256)) fail(at + ": \"sha256\" is not 64 lower-case hex digits");
        if (p.filename.find('/') != std::string::npos || p.filename == "." || p.filename == "..")
            fail(at + ": \"filename\" must be a plain file name");
        if (find_locked(lock, p.name)) fail(at + " is listed twice");
        lock.packages.push_back(std::move(p));
    }
    std::sort(lock.packages.begin(), lock.packages.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return lock;
}

const LockedPackage* find_locked(const PackageLock& lock, std::string_view name) {
    for (const auto& p : lock.packages)
        if (p.name == name) return &p;
    return nullptr;
}

}  // namespace cairn::imager
