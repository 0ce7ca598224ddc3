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
//     if (a.help()) { std::fputs(build_usage, stdout); return 0; }
//     if (a.version()) return print_version("cairn");
//
// -h and --help, wherever an option may stand, are taken by next() itself and never reach the
// loop: after the walk, help() says whether one was given, and the program (or subcommand, which
// the walk may just have found) prints its own usage on standard output and exits 0, before it
// checks for missing arguments. An option's value is never taken for help (`--key --help`).
// --version is taken the same way (version()); the program prints "PROGRAM VERSION" (see
// common/version.hpp) and exits 0. Help wins when both are given.
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

    bool next();                          // moves to the next argument (-h and --help: see help()); false after the last
    bool help() const { return help_; }   // -h or --help was among the arguments walked so far
    bool version() const { return version_; }  // --version was among them
    static bool is_help(const std::string& arg) { return arg == "-h" || arg == "--help"; }
    static bool is_version(const std::string& arg) { return arg == "--version"; }
    // Whether `args` ask for help, for a program whose options take no values (or that dispatches
    // before walking): a walk that takes every argument as an option.
    static bool help_in(const std::vector<std::string>& args);
    static bool version_in(const std::vector<std::string>& args);  // the same for --version
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
    bool help_ = false;
    bool version_ = false;
};

}  // namespace cairn
