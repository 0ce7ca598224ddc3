// The one way Cairn's programs walk their command line:
//
//     Args a(args);
//     while (a.next()) {
//         if (a.is("-o", "--output")) out = a.value();
//         else if (a.is("--timeout")) timeout = a.number(1, 86400);
//         else if (a.is("--json")) json = true;
//         else if (a.is_option()) throw UsageError("unknown option '" + a.arg() + "'");
//         else recipe = a.arg();
//     }
//
// A missing or malformed option value throws UsageError naming the option, which the program
// reports with its usage hint and exit status 2, like any other mistake on its command line.
#pragma once

#include <string>
#include <vector>

#include "common/error.hpp"

namespace cairn {

// A mistake on the command line (as opposed to a failure doing the work).
class UsageError : public Error {
public:
    using Error::Error;
};

// `text` as a whole number in [min, max]; UsageError naming `what` (an option) otherwise.
long long parse_number(const std::string& text, const std::string& what, long long min, long long max);

class Args {
public:
    explicit Args(std::vector<std::string> args) : args_(std::move(args)) {}
    Args(int argc, char** argv) : args_(argv + (argc > 0 ? 1 : 0), argv + argc) {}  // without argv[0]

    bool next();                          // moves to the next argument; false after the last
    const std::string& arg() const;       // the current argument
    bool is(const char* name) const { return arg() == name; }
    bool is(const char* short_name, const char* long_name) const { return is(short_name) || is(long_name); }
    bool is_option() const;               // starts with '-' (and is not "-" alone)
    std::string value();                  // the argument after the current option, taken; UsageError when there is none
    // value() as a whole number in [min, max]; UsageError naming the option otherwise.
    long long number(long long min, long long max);

private:
    std::vector<std::string> args_;
    size_t at_ = 0;  // one past the current argument
};

}  // namespace cairn
