// `cairn qemu --keep` on a terminal (CTest label `qemu`): the program runs on a pseudo-terminal as
// a user's shell would run it, on the debug image, whose console is a shell. Raw mode while the
// console is attached (every command echoed once, by the guest), Ctrl-C for the guest's command
// and not for the host, Ctrl-A x to quit, and the terminal as it was afterwards.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/fd.hpp"
#include "common/subprocess.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct Terminal {
    UniqueFd master, slave;
    std::string seen;  // everything the program wrote to the terminal

    Terminal() {
        int m = -1, s = -1;
        if (::openpty(&m, &s, nullptr, nullptr, nullptr) != 0) throw std::runtime_error("openpty failed");
        master = UniqueFd(m);
        slave = UniqueFd(s);
    }
    // Reads until `text` appears after `from`; returns its offset (npos on a timeout).
    size_t wait_for(const std::string& text, std::chrono::seconds timeout, size_t from = 0) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            size_t at = seen.find(text, from);
            if (at != std::string::npos) return at;
            if (std::chrono::steady_clock::now() > deadline) return std::string::npos;
            pollfd p{master.get(), POLLIN, 0};
            if (::poll(&p, 1, 200) > 0) {
                char buffer[4096];
                ssize_t r = ::read(master.get(), buffer, sizeof buffer);
                if (r > 0) seen.append(buffer, static_cast<size_t>(r));
            }
        }
    }
    void type(const std::string& keys) { ASSERT_EQ(::write(master.get(), keys.data(), keys.size()), static_cast<ssize_t>(keys.size())); }
    termios settings() const {
        termios t{};
        ::tcgetattr(slave.get(), &t);
        return t;
    }
};

size_t count(const std::string& haystack, const std::string& needle) {
    size_t n = 0;
    for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
    return n;
}

}  // namespace

TEST(CairnQemu, KeepOnATerminalPassesEveryKeyAndCtrlAXQuits) {
    Scratch dir;
    const fs::path disk = dir / "disk.raw";
    run_checked({"cp", "--sparse=always", (image_dir("minimal-debug") / "disk.raw").string(), disk.string()});
    Terminal term;
    const termios before = term.settings();
    ASSERT_TRUE(before.c_lflag & ICANON);

    const std::string cairn = cairn_binary().string();
    const std::string state = (dir / "state").string();
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // A session of its own with the pty as its controlling terminal, in the foreground: as in
        // a terminal window.
        ::setsid();
        ::ioctl(term.slave.get(), TIOCSCTTY, 0);
        for (int fd = 0; fd < 3; ++fd) ::dup2(term.slave.get(), fd);
        ::execl(cairn.c_str(), cairn.c_str(), "qemu", disk.c_str(), "--keep", "--state", state.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    // However the test ends, cairn qemu (and with it QEMU) is stopped.
    struct Reap {
        pid_t pid;
        bool done = false;
        ~Reap() {
            if (done) return;
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
        }
    } reap{child};

    size_t attached = term.wait_for("console attached; Ctrl-A x quits", 60s);
    ASSERT_NE(attached, std::string::npos) << term.seen;
    const termios raw = term.settings();
    EXPECT_FALSE(raw.c_lflag & (ICANON | ECHO | ISIG)) << "the terminal is not raw while the console is attached";

    size_t ready = term.wait_for("cairn: ready", 300s, attached);
    ASSERT_NE(ready, std::string::npos) << term.seen.substr(term.seen.size() > 3000 ? term.seen.size() - 3000 : 0);
    ASSERT_NE(term.wait_for("# ", 60s, ready), std::string::npos) << term.seen.substr(ready);
    EXPECT_NE(term.wait_for("console attached; Ctrl-A x quits", 10s, ready), std::string::npos) << "the escape key is named again";

    // Typed once, echoed once (by the guest: the host terminal echoes nothing).
    size_t from = term.seen.size();
    term.type("echo one-\"echo\"\r");
    ASSERT_NE(term.wait_for("one-echo", 30s, from), std::string::npos) << term.seen.substr(from);
    EXPECT_EQ(count(term.seen.substr(from), "echo one-\"echo\""), 1u) << term.seen.substr(from);

    // Ctrl-C stops the guest's command, not the machine.
    from = term.seen.size();
    term.type("sleep 1000\r");
    ASSERT_NE(term.wait_for("sleep 1000", 30s, from), std::string::npos);
    std::this_thread::sleep_for(1s);
    term.type("\x03");
    term.type("echo after-\"ctrl-c\"\r");
    EXPECT_NE(term.wait_for("after-ctrl-c", 30s, from), std::string::npos) << term.seen.substr(from);
    EXPECT_EQ(::waitpid(child, nullptr, WNOHANG), 0) << "Ctrl-C ended cairn qemu";

    // Ctrl-A h lists the keys; Ctrl-A x quits, exit status 0 (the image was ready), terminal restored.
    from = term.seen.size();
    term.type("\x01h");
    EXPECT_NE(term.wait_for("Ctrl-A Ctrl-A", 10s, from), std::string::npos) << term.seen.substr(from);
    term.type("\x01x");
    int status = -1;
    for (int i = 0; i < 300 && ::waitpid(child, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(100ms);
    if (status == -1) FAIL() << "Ctrl-A x did not end cairn qemu: " << term.seen.substr(from);
    reap.done = true;
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << term.seen.substr(from);
    const termios after = term.settings();
    EXPECT_EQ(after.c_lflag, before.c_lflag);
    EXPECT_EQ(after.c_iflag, before.c_iflag);
    EXPECT_EQ(after.c_oflag, before.c_oflag);
}
