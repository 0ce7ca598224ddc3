// The documentation against the repository and the programs: every link in README.md and docs/
// leads to a file of this repository, and README's synopsis of each `cairn` command names every
// option that command's --help offers.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
namespace fs = std::filesystem;

namespace {

std::vector<fs::path> documents() {
    std::vector<fs::path> out = {source_dir() / "README.md"};
    for (const auto& entry : fs::directory_iterator(source_dir() / "docs"))
        if (entry.path().extension() == ".md") out.push_back(entry.path());
    return out;
}

// Long options (--name) in `text`.
std::set<std::string> long_options(const std::string& text) {
    std::set<std::string> out;
    static const std::regex option(R"((^|[\s\[|(,])(--[a-z][a-z0-9-]*))");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), option); it != std::sregex_iterator(); ++it)
        out.insert((*it)[2].str());
    return out;
}

// The options a --help text defines: those that start one of its lines ("  -o, --output DIR ...",
// "      --json ..."), not those its prose mentions.
std::set<std::string> defined_options(const std::string& help) {
    std::set<std::string> out;
    static const std::regex definition(R"((^|\n)[ \t]+(-[a-zA-Z], )?(--[a-z][a-z0-9-]*))");
    for (auto it = std::sregex_iterator(help.begin(), help.end(), definition); it != std::sregex_iterator(); ++it)
        out.insert((*it)[3].str());
    return out;
}

}  // namespace

TEST(Docs, EveryLinkLeadsToAFileOfTheRepository) {
    static const std::regex link(R"(\]\(([^)#\s]+)(#[^)]*)?\))");
    const fs::path root = fs::weakly_canonical(source_dir());
    for (const fs::path& doc : documents()) {
        const std::string text = read_file(doc);
        for (auto it = std::sregex_iterator(text.begin(), text.end(), link); it != std::sregex_iterator(); ++it) {
            const std::string target = (*it)[1].str();
            if (target.find("://") != std::string::npos || target.rfind("mailto:", 0) == 0) continue;
            const fs::path resolved = fs::weakly_canonical(doc.parent_path() / target);
            const std::string rel = resolved.lexically_relative(root).string();
            EXPECT_FALSE(rel.empty() || rel.rfind("..", 0) == 0) << doc.filename() << " links outside the repository: " << target;
            EXPECT_TRUE(fs::exists(resolved)) << doc.filename() << " links to a missing file: " << target;
        }
    }
}

TEST(Docs, ReadmeSynopsisOfEachCairnCommandNamesEveryOption) {
    const std::string readme = read_file(source_dir() / "README.md");
    for (const std::string command : {"build", "bundle", "inspect", "qemu"}) {
        const std::regex synopsis("\\ncairn " + command + " [^\\n]*");
        std::smatch m;
        ASSERT_TRUE(std::regex_search(readme, m, synopsis)) << "README has no synopsis line for cairn " << command;
        const std::set<std::string> documented = long_options(m.str());
        RunResult help = run({CAIRN_BINARY, command, "--help"});
        ASSERT_EQ(help.exit_code, 0) << help.err;
        for (const std::string& option : defined_options(help.out)) {
            if (option == "--help" || option == "--version") continue;
            // "-o, --output FILE" in the help: the synopsis may use the short form.
            std::smatch alias;
            const bool short_form = std::regex_search(help.out, alias, std::regex("(-[a-zA-Z]), " + option + "\\b")) &&
                                    m.str().find(" " + alias[1].str() + " ") != std::string::npos;
            EXPECT_TRUE(documented.count(option) || short_form) << "README's synopsis of cairn " << command << " lacks " << option << ":\n" << m.str();
        }
    }
}
