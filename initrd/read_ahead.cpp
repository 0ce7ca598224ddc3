#include "initrd/read_ahead.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

namespace cairn::initrd {

int open_regular(const char* path, dev_t device, struct stat& st) {
    if (::lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_dev != device) return -1;
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return -1;
    struct stat opened {};
    if (::fstat(fd, &opened) != 0 || !S_ISREG(opened.st_mode) || opened.st_dev != st.st_dev || opened.st_ino != st.st_ino) {
        ::close(fd);
        return -1;
    }
    st = opened;
    return fd;
}

ReadAheadResult read_ahead(const std::string& list, dev_t device, const ReadAheadLimits& limits) noexcept try {
    ReadAheadResult result;
    struct stat st {};
    const int list_fd = open_regular(list.c_str(), device, st);
    if (list_fd < 0) return result;
    std::string text;
    if (uint64_t(st.st_size) <= limits.max_list_bytes) {
        text.resize(size_t(st.st_size));
        size_t done = 0;
        for (ssize_t n; done < text.size() && (n = ::read(list_fd, text.data() + done, text.size() - done)) > 0;) done += size_t(n);
        text.resize(done);
    }
    ::close(list_fd);

    constexpr size_t chunk = 256 * 1024;
    const std::unique_ptr<char[]> buffer(new char[chunk]);
    for (size_t start = 0; start < text.size();) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        const std::string path = text.substr(start, end - start);
        start = end + 1;
        if (path.empty()) continue;
        if (result.files >= limits.max_files || result.bytes >= limits.max_bytes) break;
        const int fd = path.front() == '/' ? open_regular(path.c_str(), device, st) : -1;
        if (fd < 0) {
            ++result.skipped;
            continue;
        }
        uint64_t left = std::min<uint64_t>(uint64_t(st.st_size), limits.max_bytes - result.bytes);
        for (ssize_t n; left > 0 && (n = ::read(fd, buffer.get(), size_t(std::min<uint64_t>(chunk, left)))) > 0;) {
            left -= uint64_t(n);
            result.bytes += uint64_t(n);
        }
        ::close(fd);
        ++result.files;
    }
    return result;
} catch (...) {  // out of memory for the list: no read-ahead
    return {};
}

pid_t start_read_ahead(const std::string& root, const char* report) {
    struct stat top {}, list {};
    if (::stat(root.c_str(), &top) != 0 || ::lstat((root + read_ahead_list).c_str(), &list) != 0 || !S_ISREG(list.st_mode)) return 0;
    const pid_t pid = ::fork();
    if (pid != 0) return pid < 0 ? 0 : pid;  // the caller (a failed fork: no read-ahead)
    // The child never returns into cairn-init's code, whose failure path would reboot the
    // machine: whatever happens here ends in _exit. It keeps no descriptor of cairn-init's but
    // the one it reports on, and reads nothing outside the root.
    try {
        ::prctl(PR_SET_NAME, "cairn-readahead");
        const int out = ::open(report, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_APPEND);
        if (out > 0) ::close_range(0, unsigned(out) - 1, 0);
        ::close_range(out < 0 ? 0 : unsigned(out) + 1, ~0U, 0);
        if (::chroot(root.c_str()) != 0 || ::chdir("/") != 0) ::_exit(0);
        const auto started = std::chrono::steady_clock::now();
        const ReadAheadResult r = read_ahead(read_ahead_list, top.st_dev);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        char line[200];
        const int n = std::snprintf(line, sizeof line, "<6>cairn-readahead: %zu files, %.1f MiB read ahead in %.2f s (%zu skipped)\n", r.files,
                                    double(r.bytes) / (1 << 20), seconds, r.skipped);
        if (out >= 0 && n > 0 && ::write(out, line, size_t(std::min<int>(n, sizeof line - 1))) < 0) {
        }  // nothing to do: the report is for people
    } catch (...) {
    }
    ::_exit(0);
}

}  // namespace cairn::initrd
