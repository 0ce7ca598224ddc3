// Progress of long work on standard error: numbered steps, and a live percentage on a terminal.
#pragma once

#include <cstdint>
#include <string>

namespace cairn {

class Progress {
public:
    // enabled=false prints nothing (--quiet, or --json without a terminal).
    Progress(int total_steps, bool enabled);
    ~Progress();
    void step(const std::string& what);              // "[3/9] what"
    void fraction(uint64_t done, uint64_t total);    // terminal only: "[3/9] what  42%"
    void note(const std::string& line);              // an extra line under the current step

private:
    void end_line();
    int total_;
    int current_ = 0;
    bool enabled_;
    bool tty_;
    bool open_line_ = false;
    int last_percent_ = -1;
    std::string what_;
};

}  // namespace cairn
