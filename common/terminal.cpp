#include "common/terminal.hpp"

#include <unistd.h>

#include <csignal>

#include "common/error.hpp"

namespace cairn {

namespace {

// What a fatal-signal handler needs to put the terminal back: plain data, set before the handlers
// are installed and cleared after they are removed.
int raw_fd = -1;
termios raw_saved{};

constexpr int fatal_signals[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};
struct sigaction previous[sizeof fatal_signals / sizeof fatal_signals[0]];

extern "C" void restore_and_die(int sig) {
    if (raw_fd >= 0) ::tcsetattr(raw_fd, TCSANOW, &raw_saved);  // async-signal-safe
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

}  // namespace

RawTerminal::RawTerminal(int fd) : fd_(fd) {
    if (::tcgetattr(fd, &saved_) != 0) fail_errno("the console's terminal (fd " + std::to_string(fd) + ")");
    termios raw = saved_;
    raw.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF);
    raw.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_oflag |= OPOST;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;

    raw_saved = saved_;
    raw_fd = fd;
    struct sigaction action {};
    action.sa_handler = restore_and_die;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < std::size(fatal_signals); ++i) ::sigaction(fatal_signals[i], &action, &previous[i]);
    if (::tcsetattr(fd, TCSAFLUSH, &raw) != 0) {
        const int err = errno;
        for (size_t i = 0; i < std::size(fatal_signals); ++i) ::sigaction(fatal_signals[i], &previous[i], nullptr);
        raw_fd = -1;
        fail_errno("the console's terminal: raw mode", err);
    }
}

RawTerminal::~RawTerminal() {
    ::tcsetattr(fd_, TCSAFLUSH, &saved_);
    for (size_t i = 0; i < std::size(fatal_signals); ++i) ::sigaction(fatal_signals[i], &previous[i], nullptr);
    raw_fd = -1;
}

ConsoleEscape::Result ConsoleEscape::feed(std::string_view typed) {
    Result r;
    for (char c : typed) {
        if (!escaped_) {
            if (c == key) escaped_ = true;
            else r.to_guest.push_back(c);
            continue;
        }
        escaped_ = false;
        switch (c) {
            case key: r.to_guest.push_back(key); break;
            case 'x':
            case 'X': r.quit = true; return r;
            default: r.help = true; break;  // h, H, ? and every key without a meaning
        }
    }
    return r;
}

const char* ConsoleEscape::help_text() {
    return "cairn: console keys (every other key goes to the guest, Ctrl-C too):\n"
           "  Ctrl-A x        quit: stop the machine\n"
           "  Ctrl-A h or ?   this help\n"
           "  Ctrl-A Ctrl-A   send Ctrl-A to the guest\n";
}

}  // namespace cairn
