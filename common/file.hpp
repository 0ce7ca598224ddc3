// File helpers: whole-file reads, atomic writes, temporary directories, sparse copies.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/fd.hpp"

namespace cairn {

namespace fs = std::filesystem;

// Opens with open(2) flags; throws Error naming the path.
UniqueFd open_file(const fs::path& path, int flags, mode_t mode = 0644);

std::string read_file(const fs::path& path);

// Writes data to a temporary file beside path, fsyncs it, renames it over path, fsyncs the directory.
void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode = 0644);

void fsync_directory(const fs::path& dir);

// Reads exactly size bytes at offset, or throws naming `what`.
void pread_exact(int fd, void* buffer, size_t size, uint64_t offset, const std::string& what);
void pwrite_exact(int fd, const void* buffer, size_t size, uint64_t offset, const std::string& what);

// Copies length bytes from src (at src_offset) to dst (at dst_offset), seeking over all-zero
// 4 KiB blocks so that the destination stays sparse.
void copy_sparse(int src, uint64_t src_offset, int dst, uint64_t dst_offset, uint64_t length, const std::string& what);

// A heap buffer aligned for O_DIRECT reads and writes (its address and size a multiple of `alignment`).
class AlignedBuffer {
public:
    static constexpr size_t alignment = 4096;
    explicit AlignedBuffer(size_t size);
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    AlignedBuffer(AlignedBuffer&& other) noexcept;
    AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
    ~AlignedBuffer();
    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

private:
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Opens path for O_DIRECT I/O with open(2) flags, or returns an empty UniqueFd when the filesystem
// does not do direct I/O (tmpfs before Linux 6.6); throws Error naming the path otherwise.
UniqueFd open_direct(const fs::path& path, int flags);

// A directory made with mkdtemp, removed with its content when the object dies unless kept.
class TempDir {
public:
    explicit TempDir(const fs::path& parent, const std::string& prefix = "cairn-");
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir();
    const fs::path& path() const { return path_; }
    void keep() { keep_ = true; }

private:
    fs::path path_;
    bool keep_ = false;
};

// Makes a directory writable by its owner, recursively, then removes it (trees extracted from
// packages may hold read-only directories).
void remove_tree(const fs::path& path);

}  // namespace cairn
