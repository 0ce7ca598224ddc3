#include "common/versions.hpp"

#include <algorithm>

namespace cairn {

namespace {

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Two runs of digits by value, whatever their length (leading zeros do not count).
int compare_numbers(std::string_view a, std::string_view b) {
    a.remove_prefix(std::min(a.find_first_not_of('0'), a.size()));
    b.remove_prefix(std::min(b.find_first_not_of('0'), b.size()));
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    int c = a.compare(b);
    return c < 0 ? -1 : c > 0;
}

// One part ("10", "rc2", "beta"): a purely numeric part is below one with other characters
// (semver); two numeric parts by value; otherwise runs of digits by value and other runs as
// ASCII text, in turn ("rc9" < "rc10").
int compare_parts(std::string_view a, std::string_view b) {
    const bool na = all_digits(a), nb = all_digits(b);
    if (na != nb) return na ? -1 : 1;
    auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
    while (!a.empty() && !b.empty()) {
        const bool da = is_digit(a.front()), db = is_digit(b.front());
        if (da != db) return da ? -1 : 1;
        size_t ra = 0, rb = 0;
        while (ra < a.size() && is_digit(a[ra]) == da) ++ra;
        while (rb < b.size() && is_digit(b[rb]) == db) ++rb;
        const std::string_view run_a = a.substr(0, ra), run_b = b.substr(0, rb);
        int c = da ? compare_numbers(run_a, run_b) : run_a.compare(run_b);
        if (c != 0) return c < 0 ? -1 : 1;
        a.remove_prefix(ra);
        b.remove_prefix(rb);
    }
    if (a.empty() != b.empty()) return a.empty() ? -1 : 1;
    return 0;
}

// Dot-separated parts in turn; with the common parts equal, more parts is newer.
int compare_dotted(std::string_view a, std::string_view b) {
    auto next = [](std::string_view& s) {
        size_t dot = s.find('.');
        std::string_view part = s.substr(0, dot);
        s = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
        return part;
    };
    while (!a.empty() || !b.empty()) {
        if (a.empty()) return -1;
        if (b.empty()) return 1;
        if (int c = compare_parts(next(a), next(b)); c != 0) return c;
    }
    return 0;
}

}  // namespace

int compare_versions(std::string_view a, std::string_view b) {
    // Build metadata ("+...") does not order versions.
    a = a.substr(0, a.find('+'));
    b = b.substr(0, b.find('+'));
    // "1.2.0-rc1" and "1.2.0~rc1": the release "1.2.0" and the pre-release "rc1".
    const size_t pa = a.find_first_of("-~"), pb = b.find_first_of("-~");
    if (int c = compare_dotted(a.substr(0, pa), b.substr(0, pb)); c != 0) return c;
    const bool pre_a = pa != std::string_view::npos, pre_b = pb != std::string_view::npos;
    if (pre_a != pre_b) return pre_a ? -1 : 1;  // a pre-release comes before its release
    if (!pre_a) return 0;
    return compare_dotted(a.substr(pa + 1), b.substr(pb + 1));
}

std::optional<std::string> version_problem(std::string_view version) {
    if (version.empty()) return "it is empty";
    const auto is_alnum = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (!(version[0] >= '0' && version[0] <= '9'))
        return "it starts with '" + std::string(1, version[0]) + "': a version starts with a digit, such as 1.0 or 2.1.0-rc1";
    // Dot-separated identifiers of allowed characters, none empty.
    const auto check = [&](std::string_view part, const char* what, bool dash) -> std::optional<std::string> {
        if (part.empty()) return std::string("its ") + what + " is empty";
        size_t start = 0;
        for (size_t i = 0; i <= part.size(); ++i) {
            if (i == part.size() || part[i] == '.') {
                if (i == start) return std::string("its ") + what + " has an empty part (two dots, or a dot at an end)";
                start = i + 1;
            } else if (!is_alnum(part[i]) && !(dash && part[i] == '-')) {
                return "'" + std::string(1, part[i]) + "' is not allowed in its " + what +
                       " (letters, digits and dots; then -pre-release or ~pre-release, +build)";
            }
        }
        return std::nullopt;
    };
    const size_t plus = version.find('+');
    std::string_view rest = version.substr(0, plus);
    if (plus != std::string_view::npos)
        if (auto p = check(version.substr(plus + 1), "build metadata (after +)", true)) return p;
    const size_t pre = rest.find_first_of("-~");
    if (auto p = check(rest.substr(0, pre), "release", false)) return p;
    if (pre != std::string_view::npos)
        if (auto p = check(rest.substr(pre + 1), "pre-release (after - or ~)", true)) return p;
    return std::nullopt;
}

}  // namespace cairn
