#include "common/terminal.hpp"

#include <gtest/gtest.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "common/error.hpp"
#include "common/fd.hpp"

using cairn::ConsoleEscape;
using cairn::RawTerminal;
using cairn::UniqueFd;

namespace {

// A pseudo-terminal: the terminal side (slave) is what RawTerminal works on.
struct Pty {
    UniqueFd master, slave;
    Pty() {
        int m = -1, s = -1;
        if (::openpty(&m, &s, nullptr, nullptr, nullptr) != 0) throw std::runtime_error("openpty failed");
        master = UniqueFd(m);
        slave = UniqueFd(s);
    }
    termios settings() const {
        termios t{};
        EXPECT_EQ(::tcgetattr(slave.get(), &t), 0);
        return t;
    }
};

bool same(const termios& a, const termios& b) {
    return a.c_iflag == b.c_iflag && a.c_oflag == b.c_oflag && a.c_cflag == b.c_cflag && a.c_lflag == b.c_lflag &&
           a.c_cc[VMIN] == b.c_cc[VMIN] && a.c_cc[VTIME] == b.c_cc[VTIME];
}

}  // namespace

TEST(ConsoleEscape, EveryOrdinaryKeyGoesToTheGuestCtrlCToo) {
    ConsoleEscape e;
    auto r = e.feed("ls -l\r\x03\x1a\x1c\x04");
    EXPECT_EQ(r.to_guest, "ls -l\r\x03\x1a\x1c\x04");
    EXPECT_FALSE(r.quit);
    EXPECT_FALSE(r.help);
}

TEST(ConsoleEscape, CtrlAXQuitsAndDropsWhatFollows) {
    for (const char* quit : {"\x01x", "\x01X"}) {
        ConsoleEscape e;
        auto r = e.feed(std::string("echo hi\r") + quit + "more");
        EXPECT_TRUE(r.quit) << quit;
        EXPECT_EQ(r.to_guest, "echo hi\r") << "what came before the escape is sent, nothing after";
    }
}

TEST(ConsoleEscape, TheEscapeMayBeSplitAcrossReads) {
    ConsoleEscape e;
    auto r = e.feed("a\x01");
    EXPECT_EQ(r.to_guest, "a");
    EXPECT_FALSE(r.quit);
    r = e.feed("x");
    EXPECT_TRUE(r.quit);
    EXPECT_EQ(r.to_guest, "");
}

TEST(ConsoleEscape, CtrlACtrlASendsOneCtrlA) {
    ConsoleEscape e;
    auto r = e.feed("\x01\x01" "b\x01");
    EXPECT_EQ(r.to_guest, "\x01" "b");
    r = e.feed("\x01");
    EXPECT_EQ(r.to_guest, "\x01");
    EXPECT_FALSE(r.quit);
}

TEST(ConsoleEscape, HelpAndUnknownKeysShowHelpAndSendNothing) {
    for (const char* key : {"h", "H", "?", "q", "\x03"}) {
        ConsoleEscape e;
        auto r = e.feed(std::string("\x01") + key);
        EXPECT_TRUE(r.help) << key;
        EXPECT_FALSE(r.quit) << key;
        EXPECT_EQ(r.to_guest, "") << key;
        r = e.feed("x");
        EXPECT_EQ(r.to_guest, "x") << "the escape is over after its command key";
    }
    EXPECT_NE(std::string(ConsoleEscape::help_text()).find("Ctrl-A x"), std::string::npos);
}

TEST(RawTerminal, RawWhileItLivesRestoredAfter) {
    Pty pty;
    const termios before = pty.settings();
    ASSERT_TRUE(before.c_lflag & ICANON) << "a new pty starts in line mode";
    {
        RawTerminal raw(pty.slave.get());
        const termios t = pty.settings();
        EXPECT_FALSE(t.c_lflag & ICANON) << "line mode";
        EXPECT_FALSE(t.c_lflag & ECHO) << "echo (the guest echoes)";
        EXPECT_FALSE(t.c_lflag & ISIG) << "Ctrl-C would be a signal for the host";
        EXPECT_FALSE(t.c_iflag & ICRNL) << "Enter would arrive as a newline";
        EXPECT_FALSE(t.c_iflag & IXON) << "Ctrl-S and Ctrl-Q would be taken by the host";
        EXPECT_TRUE(t.c_oflag & OPOST) << "output processing stays on";
        EXPECT_EQ(t.c_cc[VMIN], 1);
    }
    EXPECT_TRUE(same(pty.settings(), before));
}

TEST(RawTerminal, RestoredWhenAnExceptionLeavesTheScope) {
    Pty pty;
    const termios before = pty.settings();
    try {
        RawTerminal raw(pty.slave.get());
        cairn::fail("the machine did not start");
    } catch (const cairn::Error&) {
    }
    EXPECT_TRUE(same(pty.settings(), before));
}

TEST(RawTerminal, RestoredWhenTheProgramDiesOfAFatalSignal) {
    for (int sig : {SIGABRT, SIGSEGV}) {
        Pty pty;
        const termios before = pty.settings();
        pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            RawTerminal raw(pty.slave.get());
            ::raise(sig);
            ::_exit(0);
        }
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFSIGNALED(status)) << "the child should have died of signal " << sig;
        EXPECT_EQ(WTERMSIG(status), sig);
        EXPECT_TRUE(same(pty.settings(), before)) << "signal " << sig << " left the terminal raw";
    }
}

TEST(RawTerminal, RefusesWhatIsNoTerminal) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    UniqueFd r(p[0]), w(p[1]);
    struct sigaction before {};
    ::sigaction(SIGSEGV, nullptr, &before);  // SIG_DFL, or a sanitizer's own handler
    EXPECT_THROW(RawTerminal(r.get()), cairn::Error);
    // And a fatal signal afterwards is handled as before (no handler left behind).
    struct sigaction now {};
    ::sigaction(SIGSEGV, nullptr, &now);
    EXPECT_EQ(now.sa_handler, before.sa_handler);
}
