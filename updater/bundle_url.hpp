// Bundle sources that are URLs: recognised and redacted without linking HTTP (cairnctl passes a
// URL on to cairn-updated, which fetches it: updater/http_bundle.hpp).
#pragma once

#include <string>

namespace cairn::updater {

// True for the sources cairn-updated fetches from a server: http:// or https:// (any case).
inline bool is_bundle_url(const std::string& source) {
    std::string scheme = source.substr(0, 8);
    for (char& c : scheme) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return scheme == "https://" || scheme.rfind("http://", 0) == 0;
}

// `url` with its query cut ("…?…"): a signed URL's token stays out of messages and logs.
inline std::string redact_url(const std::string& url) {
    const size_t q = url.find('?');
    return q == std::string::npos ? url : url.substr(0, q) + "?…";
}

}  // namespace cairn::updater
