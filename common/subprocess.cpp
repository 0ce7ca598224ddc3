#include "common/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/text.hpp"

extern char** environ;

namespace cairn {
namespace {

// write(2) to a pipe whose reader may have gone: EPIPE instead of SIGPIPE killing the caller. The
// signal is blocked for this thread during the write and a pending one taken away after it.
ssize_t write_without_sigpipe(int fd, const char* data, size_t size) {
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    const bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    ssize_t w = ::write(fd, data, size);
    const int saved = errno;
    if (w < 0 && errno == EPIPE && !was_pending) {
        const timespec zero{};
        while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = saved;
    return w;
}

struct Pipe {
    UniqueFd read, write;
};

Pipe make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) fail_errno("creating a pipe");
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
    std::map<std::string, std::string> vars;
    for (char** e = environ; *e; ++e) {
        std::string entry(*e);
        vars[entry.substr(0, entry.find('='))] = entry;
    }
    for (const auto& entry : extra) vars[entry.substr(0, entry.find('='))] = entry;
    std::vector<std::string> out;
    out.reserve(vars.size());
    for (auto& [_, entry] : vars) out.push_back(std::move(entry));
    return out;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

// The last lines of a program's output, on one line.
std::string last_lines_joined(const std::string& text, int count) {
    std::string tail = last_lines(text, static_cast<size_t>(count));
    for (auto& c : tail)
        if (c == '\n') c = ' ';
    return tail;
}

// Forks and executes argv[0] (looked up in PATH) with fds 0, 1 and 2 taken from stdio (-1:
// inherited), in a new process group when asked. Returns the child's pid.
pid_t spawn(const std::vector<std::string>& argv, const RunOptions& options, const int stdio[3], bool new_group) {
    if (argv.empty()) fail("run: empty command");
    auto program = find_program(argv[0]);
    if (!program) fail(argv[0] + ": program not found in PATH (is its Debian package installed? see scripts/install-deps)");
    std::vector<std::string> args = argv;
    std::vector<std::string> env = merged_environment(options.extra_env);
    std::vector<char*> c_args = c_strings(args);
    std::vector<char*> c_env = c_strings(env);
    std::string program_path = program->string();
    std::string cwd = options.cwd ? options.cwd->string() : std::string();
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) fail_errno("fork for " + argv[0]);
    if (pid == 0) {
        if (options.die_with_parent) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(127);  // the parent is already gone
        }
        if (new_group) ::setpgid(0, 0);
        for (int fd = 0; fd < 3; ++fd)
            if (stdio[fd] >= 0) ::dup2(stdio[fd], fd);
        ::signal(SIGPIPE, SIG_DFL);
        if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
        ::execve(program_path.c_str(), c_args.data(), c_env.data());
        ::_exit(127);
    }
    if (new_group) ::setpgid(pid, pid);  // also from here, so that signals reach the group at once
    return pid;
}

}  // namespace

void replace_process(const std::filesystem::path& program, const std::vector<std::string>& argv) {
    std::vector<std::string> args = argv;
    std::vector<char*> c_args = c_strings(args);
    ::execv(program.c_str(), c_args.data());
    fail_errno("starting " + program.string());
}

std::filesystem::path own_directory() {
    std::error_code ec;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) fail("cannot tell where this program is (/proc/self/exe: " + ec.message() + ")");
    return self.parent_path();
}

std::optional<std::filesystem::path> find_program(const std::string& name) {
    if (name.find('/') != std::string::npos) {
        if (::access(name.c_str(), X_OK) == 0) return std::filesystem::path(name);
        return std::nullopt;
    }
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    dirs += ":/usr/sbin:/sbin";  // tools like mkfs.* live here even for ordinary users
    size_t start = 0;
    while (start <= dirs.size()) {
        size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        std::string dir = dirs.substr(start, end - start);
        if (!dir.empty()) {
            std::filesystem::path candidate = std::filesystem::path(dir) / name;
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        }
        start = end + 1;
    }
    return std::nullopt;
}

RunResult run(const std::vector<std::string>& argv, const RunOptions& options) {
    Pipe in = make_pipe();
    Pipe out, err;
    if (options.capture_stdout) out = make_pipe();
    if (options.capture_stderr) err = make_pipe();
    const int stdio[3] = {in.read.get(), options.capture_stdout ? out.write.get() : -1, options.capture_stderr ? err.write.get() : -1};
    pid_t pid = spawn(argv, options, stdio, false);
    const std::string cwd = options.cwd ? options.cwd->string() : std::string();
    in.read.reset();
    out.write.reset();
    err.write.reset();

    RunResult result;
    size_t written = 0;
    if (options.input.empty()) in.write.reset();
    else ::fcntl(in.write.get(), F_SETFL, O_NONBLOCK);

    char buffer[65536];
    while (in.write || out.read || err.read) {
        pollfd fds[3];
        int n = 0;
        int in_index = -1, out_index = -1, err_index = -1;
        if (in.write) { in_index = n; fds[n++] = {in.write.get(), POLLOUT, 0}; }
        if (out.read) { out_index = n; fds[n++] = {out.read.get(), POLLIN, 0}; }
        if (err.read) { err_index = n; fds[n++] = {err.read.get(), POLLIN, 0}; }
        if (::poll(fds, n, -1) < 0) {
            if (errno == EINTR) continue;
            fail_errno("waiting for " + argv[0]);
        }
        if (in_index >= 0 && fds[in_index].revents) {
            ssize_t w = write_without_sigpipe(in.write.get(), options.input.data() + written, options.input.size() - written);
            if (w > 0) written += static_cast<size_t>(w);
            if (w < 0 && errno != EAGAIN && errno != EINTR) in.write.reset();  // child closed its stdin
            if (written == options.input.size()) in.write.reset();
        }
        auto drain = [&](int index, UniqueFd& fd, std::string& sink) {
            if (index < 0 || !fds[index].revents) return;
            ssize_t r = ::read(fd.get(), buffer, sizeof buffer);
            if (r > 0) sink.append(buffer, static_cast<size_t>(r));
            else if (r == 0 || (errno != EINTR && errno != EAGAIN)) fd.reset();
        };
        drain(out_index, out.read, result.out);
        drain(err_index, err.read, result.err);
    }

    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) fail_errno("waiting for " + argv[0]);
    }
    if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) result.exit_code = 128 + WTERMSIG(status);
    if (result.exit_code == 126 && !cwd.empty()) fail(argv[0] + ": cannot enter working directory " + cwd);
    return result;
}

std::string run_checked(const std::vector<std::string>& argv, const RunOptions& options) {
    RunResult r = run(argv, options);
    if (r.exit_code != 0) {
        std::string detail = last_lines_joined(r.err.empty() ? r.out : r.err, 3);
        fail(argv[0] + " failed (exit " + std::to_string(r.exit_code) + ")" + (detail.empty() ? "" : ": " + detail));
    }
    return r.out;
}

Process::Process(const std::vector<std::string>& argv, const std::filesystem::path& output_file, const RunOptions& options) {
    int out = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) fail_errno(output_file.string());
    UniqueFd out_fd(out);
    UniqueFd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    const int stdio[3] = {null_fd.get(), out_fd.get(), out_fd.get()};
    pid_ = spawn(argv, options, stdio, true);
}

Process::~Process() {
    try {
        if (running()) stop(500);
    } catch (...) {
    }
}

bool Process::running() {
    if (status_ || pid_ < 0) return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        ::kill(-pid_, SIGKILL);  // anything it left behind in its group
        return false;
    }
    return r == 0;
}

void Process::signal(int sig) {
    if (pid_ > 0 && !status_) ::kill(-pid_, sig);
}

std::optional<int> Process::wait(int timeout_ms) {
    for (int waited = 0;; waited += 10) {
        if (!running()) return status_;
        if (waited >= timeout_ms) return std::nullopt;
        ::usleep(10000);
    }
}

int Process::stop(int grace_ms) {
    signal(SIGTERM);
    if (auto st = wait(grace_ms)) return *st;
    signal(SIGKILL);
    return wait(5000).value_or(128 + SIGKILL);
}

}  // namespace cairn
