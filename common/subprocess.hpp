// The one way Cairn runs external programs: an argv vector, never a shell string.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace cairn {

struct RunOptions {
    std::vector<std::string> extra_env;           // "NAME=value", added to (or replacing in) the environment
    std::optional<std::filesystem::path> cwd;     // working directory of the child
    std::string input;                            // written to the child's standard input
    bool capture_stdout = true;                   // false: the child inherits our stdout
    bool capture_stderr = true;                   // false: the child inherits our stderr
    // The child gets SIGKILL when the thread that started it ends: for a Process, so that even a
    // crashed or killed parent leaves no QEMU or daemon behind (start it from a thread that
    // outlives it, e.g. the main thread).
    bool die_with_parent = false;
};

struct RunResult {
    int exit_code = 0;   // exit status, or 128 + signal number
    std::string out;     // captured standard output
    std::string err;     // captured standard error
};

// Runs argv[0] (looked up in PATH) and waits. Throws Error only when it cannot be started.
RunResult run(const std::vector<std::string>& argv, const RunOptions& options = {});

// Like run(), but a non-zero exit throws Error naming the program, its exit code and the last
// lines of its standard error. Returns the captured standard output.
std::string run_checked(const std::vector<std::string>& argv, const RunOptions& options = {});

// A program running in the background in its own process group (for QEMU, swtpm, daemons under
// test). Its standard output and error go to a file. The destructor kills the whole group.
class Process {
public:
    // Starts argv; output_file receives stdout and stderr (appended). Throws Error when it cannot start.
    Process(const std::vector<std::string>& argv, const std::filesystem::path& output_file, const RunOptions& options = {});
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    ~Process();

    pid_t pid() const { return pid_; }
    bool running();                                    // false once it has exited (and reaps it)
    void signal(int sig);                              // to the whole process group
    // Waits up to `timeout_ms` for it to exit; returns its exit status (128 + signal) or nullopt.
    std::optional<int> wait(int timeout_ms);
    // SIGTERM, then SIGKILL after grace_ms; returns the exit status.
    int stop(int grace_ms = 2000);

private:
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// Replaces this process with `program` (a path), given argv (argv[0] included). Returns only by
// throwing Error, when the program cannot be started.
[[noreturn]] void replace_process(const std::filesystem::path& program, const std::vector<std::string>& argv);

// The directory of the running program (/proc/self/exe): where Cairn's programs look for their
// companions (beside them in a build tree, in ../lib/cairn when installed).
std::filesystem::path own_directory();

// Finds a program in PATH (or checks an absolute path) and tells whether it is executable.
std::optional<std::filesystem::path> find_program(const std::string& name);

}  // namespace cairn
