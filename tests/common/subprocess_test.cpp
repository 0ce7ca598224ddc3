#include "common/subprocess.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"

using namespace cairn;

TEST(Subprocess, CapturesOutputAndExitCode) {
    RunResult r = run({"sh", "-c", "echo out; echo err >&2; exit 3"});
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
}

TEST(Subprocess, PassesArgumentsVerbatimWithoutAShell) {
    RunResult r = run({"printf", "%s|", "a b", "$HOME", "*"});
    EXPECT_EQ(r.out, "a b|$HOME|*|");
}

TEST(Subprocess, FeedsInputAndEnvironment) {
    RunOptions o;
    o.input = std::string(200000, 'x');
    o.extra_env = {"CAIRN_TEST_VAR=42"};
    RunResult r = run({"sh", "-c", "wc -c; echo $CAIRN_TEST_VAR"}, o);
    EXPECT_EQ(r.out, "200000\n42\n");
}

TEST(Subprocess, CheckedRunNamesTheProgramAndItsError) {
    try {
        run_checked({"sh", "-c", "echo 'bad thing happened' >&2; exit 2"});
        FAIL();
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("sh failed (exit 2)"), std::string::npos) << m;
        EXPECT_NE(m.find("bad thing happened"), std::string::npos) << m;
    }
}

TEST(Subprocess, CheckedRunOfAProgramThatFailsSilently) {
    try {
        run_checked({"false"});
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "false failed (exit 1)");
    }
}

TEST(Subprocess, MissingProgramIsAClearError) {
    try {
        run({"cairn-no-such-program"});
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cairn-no-such-program: program not found"), std::string::npos);
    }
}

TEST(Subprocess, OwnDirectoryIsWhereThisTestProgramLives) {
    const std::filesystem::path dir = own_directory();
    EXPECT_TRUE(dir.is_absolute()) << dir;
    EXPECT_TRUE(std::filesystem::is_regular_file(dir / "common_subprocess_test")) << dir;
}

// A child that exits without reading its input: the caller gets the child's result, not SIGPIPE.
TEST(Subprocess, AChildThatIgnoresItsInputDoesNotKillTheCaller) {
    RunOptions o;
    o.input = std::string(8 << 20, 'x');  // far more than a pipe holds
    RunResult r = run({"sh", "-c", "exit 3"}, o);
    EXPECT_EQ(r.exit_code, 3);
}
