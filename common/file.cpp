#include "common/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "common/error.hpp"

namespace cairn {

UniqueFd open_file(const fs::path& path, int flags, mode_t mode) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd < 0) fail_errno(path.string());
    return UniqueFd(fd);
}

std::string read_file(const fs::path& path) {
    UniqueFd fd = open_file(path, O_RDONLY);
    std::string data;
    char buffer[65536];
    for (;;) {
        ssize_t r = ::read(fd.get(), buffer, sizeof buffer);
        if (r < 0) {
            if (errno == EINTR) continue;
            fail_errno("reading " + path.string());
        }
        if (r == 0) break;
        data.append(buffer, static_cast<size_t>(r));
    }
    return data;
}

void fsync_directory(const fs::path& dir) {
    UniqueFd fd = open_file(dir.empty() ? fs::path(".") : dir, O_RDONLY | O_DIRECTORY);
    if (::fsync(fd.get()) != 0) fail_errno("syncing directory " + dir.string());
}

void pread_exact(int fd, void* buffer, size_t size, uint64_t offset, const std::string& what) {
    auto* p = static_cast<char*>(buffer);
    while (size > 0) {
        ssize_t r = ::pread(fd, p, size, static_cast<off_t>(offset));
        if (r < 0) {
            if (errno == EINTR) continue;
            fail_errno("reading " + what);
        }
        if (r == 0) fail("reading " + what + ": unexpected end of file at offset " + std::to_string(offset));
        p += r;
        size -= static_cast<size_t>(r);
        offset += static_cast<uint64_t>(r);
    }
}

void pwrite_exact(int fd, const void* buffer, size_t size, uint64_t offset, const std::string& what) {
    const auto* p = static_cast<const char*>(buffer);
    while (size > 0) {
        ssize_t w = ::pwrite(fd, p, size, static_cast<off_t>(offset));
        if (w < 0) {
            if (errno == EINTR) continue;
            fail_errno("writing " + what);
        }
        p += w;
        size -= static_cast<size_t>(w);
        offset += static_cast<uint64_t>(w);
    }
}

AlignedBuffer::AlignedBuffer(size_t size) : size_((size + alignment - 1) / alignment * alignment) {
    data_ = static_cast<uint8_t*>(std::aligned_alloc(alignment, size_ ? size_ : alignment));
    if (!data_) throw std::bad_alloc();
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
        std::free(data_);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

UniqueFd open_direct(const fs::path& path, int flags) {
    int fd = ::open(path.c_str(), flags | O_DIRECT | O_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINVAL) return {};
    fail_errno("opening " + path.string() + " for direct I/O");
}

void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode) {
    fs::path tmp = path;
    tmp += ".tmp-" + std::to_string(::getpid());
    {
        UniqueFd fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
        try {
            pwrite_exact(fd.get(), data.data(), data.size(), 0, tmp.string());
            if (::fsync(fd.get()) != 0) fail_errno("syncing " + tmp.string());
        } catch (...) {
            ::unlink(tmp.c_str());
            throw;
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        fail_errno("renaming " + tmp.string() + " to " + path.string(), err);
    }
    fsync_directory(path.parent_path());
}

void copy_sparse(int src, uint64_t src_offset, int dst, uint64_t dst_offset, uint64_t length, const std::string& what) {
    constexpr size_t chunk = 1 << 20;
    constexpr size_t block = 4096;
    std::vector<char> buffer(chunk);
    static const std::array<char, block> zeros{};
    uint64_t done = 0;
    while (done < length) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, length - done));
        pread_exact(src, buffer.data(), n, src_offset + done, what);
        // Write runs of non-zero blocks; leave zero blocks as holes.
        size_t pos = 0;
        while (pos < n) {
            size_t len = std::min(block, n - pos);
            bool zero = std::equal(buffer.data() + pos, buffer.data() + pos + len, zeros.data());
            if (zero) { pos += len; continue; }
            size_t run_end = pos + len;
            while (run_end < n) {
                size_t l = std::min(block, n - run_end);
                if (std::equal(buffer.data() + run_end, buffer.data() + run_end + l, zeros.data())) break;
                run_end += l;
            }
            pwrite_exact(dst, buffer.data() + pos, run_end - pos, dst_offset + done + pos, what);
            pos = run_end;
        }
        done += n;
    }
}

TempDir::TempDir(const fs::path& parent, const std::string& prefix) {
    std::string templ = (parent / (prefix + "XXXXXX")).string();
    if (::mkdtemp(templ.data()) == nullptr) fail_errno("creating a temporary directory in " + parent.string());
    path_ = templ;
}

TempDir::~TempDir() {
    if (keep_) return;
    try {
        remove_tree(path_);
    } catch (...) {
    }
}

void remove_tree(const fs::path& path) {
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(path, ec))) return;
    for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    }
    ::chmod(path.c_str(), 0700);
    fs::remove_all(path, ec);
    if (ec) fail("removing " + path.string() + ": " + ec.message());
}

}  // namespace cairn
