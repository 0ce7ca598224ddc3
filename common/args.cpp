#include "common/args.hpp"

#include <charconv>

namespace cairn {

bool Args::next() {
    for (;;) {
        if (at_ >= args_.size()) return false;
        ++at_;
        if (is_help(args_[at_ - 1])) help_ = true;
        else if (is_version(args_[at_ - 1])) version_ = true;
        else return true;
    }
}

bool Args::help_in(const std::vector<std::string>& args) {
    Args a(args);
    while (a.next()) {
    }
    return a.help();
}

bool Args::version_in(const std::vector<std::string>& args) {
    Args a(args);
    while (a.next()) {
    }
    return a.version();
}

const std::string& Args::arg() const {
    if (at_ == 0) throw std::logic_error("Args::arg() before next()");
    return args_[at_ - 1];
}

bool Args::is_option() const { return arg().size() > 1 && arg()[0] == '-'; }

std::string Args::value() {
    if (at_ >= args_.size()) throw UsageError(arg() + " needs a value");
    return args_[at_++];
}

long long parse_number(const std::string& text, const std::string& what, long long min, long long max) {
    long long v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size())
        throw UsageError(what + ": '" + text + "' is not a whole number");
    if (v < min || v > max)
        throw UsageError(what + ": " + text + " is out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
    return v;
}

long long Args::number(long long min, long long max) {
    const std::string option = arg();
    return parse_number(value(), option, min, max);
}

}  // namespace cairn
