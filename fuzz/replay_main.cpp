// Replays inputs through a fuzz target without libFuzzer, so the normal (g++) build proves under
// CTest that the committed corpus and every past crash (fuzz/regressions/) still pass.
// Usage: fuzz_replay_<target> FILE|FOLDER...   Each file is one input; folders are walked (sorted).
// A crash or an exception other than the target's expected ones ends the program abnormally.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <vector>

#include "common/file.hpp"
#include "fuzz/fuzz.hpp"

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        fs::path p = argv[i];
        if (fs::is_directory(p)) {
            for (const auto& e : fs::recursive_directory_iterator(p))
                if (e.is_regular_file()) inputs.push_back(e.path());
        } else if (fs::exists(p)) {
            inputs.push_back(p);
        }
    }
    std::sort(inputs.begin(), inputs.end());
    for (const auto& p : inputs) {
        std::cerr << "replay " << p.string() << "\n";
        std::string data = cairn::read_file(p);
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    }
    std::cout << "replayed " << inputs.size() << " inputs\n";
    return inputs.empty() ? 1 : 0;
}
