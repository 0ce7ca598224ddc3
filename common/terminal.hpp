// The host terminal for an interactive serial console (`cairn qemu --keep`): raw mode while the
// console is attached, and the escape key that keeps a way out when every other key goes to the
// guest (as QEMU's own Ctrl-A X).
#pragma once

#include <termios.h>

#include <string>
#include <string_view>

namespace cairn {

// Raw mode on a terminal for as long as it lives: no line editing, no echo (the guest echoes),
// no signals from the keyboard (Ctrl-C, Ctrl-Z and Ctrl-\ are bytes for the guest), no flow
// control or CR/NL translation on input, 8-bit bytes. Output processing stays on, so the host's
// own "\n" still starts a new line. The settings from before are restored by the destructor, and
// also when the program dies of a fatal signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) while
// raw mode is on; the program's own SIGINT/SIGTERM/SIGHUP handlers should end it normally, so
// that this destructor runs. One RawTerminal at a time. Throws Error when `fd` is no terminal.
class RawTerminal {
public:
    explicit RawTerminal(int fd);
    ~RawTerminal();  // restores the terminal; never throws
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;

private:
    int fd_;
    termios saved_{};
};

// The console's escape key: Ctrl-A, then a command key.
//   Ctrl-A x (or X)     quit
//   Ctrl-A h, H or ?    help
//   Ctrl-A Ctrl-A       a Ctrl-A for the guest
// Any other key after Ctrl-A is dropped (with help shown). Every other byte goes to the guest as
// typed. A pure state machine: the escape may be split across reads.
class ConsoleEscape {
public:
    static constexpr char key = '\x01';  // Ctrl-A
    struct Result {
        std::string to_guest;  // bytes to send on
        bool quit = false;     // Ctrl-A x: stop; bytes after it are dropped
        bool help = false;     // show help_text()
    };
    Result feed(std::string_view typed);
    static const char* help_text();  // lines ending in "\n"

private:
    bool escaped_ = false;  // the last byte was the escape key
};

}  // namespace cairn
