// The real cairn-verifier program for tests: started, its port read off its first line.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/file.hpp"
#include "common/subprocess.hpp"

namespace cairn::test {

// The real cairn-verifier program, started with `args` (after the program's path), its output in
// `log`; the port it printed ("listening on https://127.0.0.1:PORT"). Fails the test (and leaves
// port 0) when it does not start within 10 s.
struct VerifierProgram {
    std::unique_ptr<Process> process;
    uint16_t port = 0;

    VerifierProgram(const std::vector<std::string>& args, const std::filesystem::path& log) {
        std::filesystem::remove(log);
        std::vector<std::string> argv = {CAIRN_VERIFIER_BINARY};
        argv.insert(argv.end(), args.begin(), args.end());
        RunOptions options;
        options.die_with_parent = true;
        process = std::make_unique<Process>(argv, log, options);
        const auto t0 = std::chrono::steady_clock::now();
        const std::regex listening(R"(cairn-verifier: listening on https://127\.0\.0\.1:(\d+)\n)");
        std::smatch m;
        for (;;) {
            const std::string text = std::filesystem::exists(log) ? read_file(log) : "";
            if (std::regex_search(text, m, listening)) break;
            if (!process->running()) {
                ADD_FAILURE() << "cairn-verifier did not start: " << text;
                return;
            }
            if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) {
                ADD_FAILURE() << "cairn-verifier printed no port in 10 s: " << text;
                return;
            }
            ::usleep(10000);
        }
        port = static_cast<uint16_t>(std::stoi(m[1].str()));
    }
};

}  // namespace cairn::test
