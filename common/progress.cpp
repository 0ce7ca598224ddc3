#include "common/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace cairn {

Progress::Progress(int total_steps, bool enabled) : total_(total_steps), enabled_(enabled), tty_(::isatty(2) == 1) {}

Progress::~Progress() { end_line(); }

void Progress::end_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
}

void Progress::step(const std::string& what) {
    if (!enabled_) return;
    end_line();
    ++current_;
    what_ = what;
    last_percent_ = -1;
    std::fprintf(stderr, "[%d/%d] %s", current_, total_, what.c_str());
    if (tty_) open_line_ = true;
    else std::fputc('\n', stderr);
    std::fflush(stderr);
}

void Progress::fraction(uint64_t done, uint64_t total) {
    if (!enabled_ || !tty_ || total == 0) return;
    int percent = static_cast<int>(done * 100 / total);
    if (percent == last_percent_) return;
    last_percent_ = percent;
    std::fprintf(stderr, "\r[%d/%d] %s  %3d%%", current_, total_, what_.c_str(), percent);
    open_line_ = true;
    std::fflush(stderr);
}

void Progress::note(const std::string& line) {
    if (!enabled_) return;
    end_line();
    std::fprintf(stderr, "      %s\n", line.c_str());
}

}  // namespace cairn
