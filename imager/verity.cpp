#include "imager/verity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/sha256_blocks.hpp"

namespace cairn::verity {
namespace {

constexpr uint32_t digest_size = 32;
constexpr uint32_t hash_type_normal = 1;
constexpr char algorithm_name[] = "sha256";
constexpr uint8_t signature[8] = {'v', 'e', 'r', 'i', 't', 'y', 0, 0};
// Largest block size read_superblock accepts (libcryptsetup's limit); format and verify stay within
// max_block_size.
constexpr uint32_t superblock_max_block_size = 512 * 1024;
// Data hashed per unit of work handed to a thread, and per pread.
constexpr uint64_t segment_bytes = 16 << 20;
constexpr size_t read_chunk_bytes = 1 << 20;
constexpr uint64_t max_offset = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

// Superblock field offsets (little-endian, 512 bytes; cryptsetup's struct verity_sb).
constexpr size_t sb_signature = 0, sb_version = 8, sb_hash_type = 12, sb_uuid = 16, sb_algorithm = 32,
                 sb_algorithm_size = 32, sb_data_block_size = 64, sb_hash_block_size = 68, sb_data_blocks = 72,
                 sb_salt_size = 80, sb_salt = 88;

void put_le(uint8_t* at, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) at[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint64_t get_le(const uint8_t* at, int bytes) {
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) value = value << 8 | at[i];
    return value;
}

bool power_of_two_between(uint64_t value, uint64_t low, uint64_t high) {
    return value >= low && value <= high && (value & (value - 1)) == 0;
}

void validate(const Params& p, const std::string& what) {
    auto check_size = [&](uint32_t size, const char* name) {
        if (!power_of_two_between(size, min_block_size, max_block_size))
            fail(what + ": " + name + " block size " + std::to_string(size) +
                 " is not supported (a power of two from " + std::to_string(min_block_size) + " to " +
                 std::to_string(max_block_size) + ")");
    };
    check_size(p.data_block_size, "data");
    check_size(p.hash_block_size, "hash");
    if (p.data_blocks == 0) fail(what + ": no data to protect (0 data blocks)");
    if (p.data_blocks > max_offset / p.data_block_size)
        fail(what + ": " + std::to_string(p.data_blocks) + " data blocks is more than a device can hold");
    if (p.salt.size() > max_salt_size)
        fail(what + ": salt of " + std::to_string(p.salt.size()) + " bytes is longer than " +
             std::to_string(max_salt_size));
}

void check_hash_offset(uint64_t hash_offset, const Params& p, const std::string& what) {
    if (hash_offset % p.hash_block_size != 0)
        fail(what + ": hash offset " + std::to_string(hash_offset) + " is not a multiple of the hash block size " +
             std::to_string(p.hash_block_size));
}

// Where each level of the tree sits. Block numbers count hash blocks from hash_offset: block 0 holds the
// superblock, the top level starts at block 1, the leaves (level 0) come last.
struct Geometry {
    uint32_t per_block = 0;  // digests per hash block
    unsigned levels = 0;
    std::vector<uint64_t> blocks;  // [level] number of hash blocks
    std::vector<uint64_t> first;   // [level] first block
    uint64_t total_blocks = 1;     // superblock block + tree
};

Geometry geometry(const Params& p) {
    Geometry g;
    g.per_block = p.hash_block_size / digest_size;
    // Level i has ceil(data_blocks / per_block^(i+1)) blocks; the top level is the first with one block.
    for (uint64_t n = p.data_blocks; n > 1;) {
        n = (n + g.per_block - 1) / g.per_block;
        g.blocks.push_back(n);
    }
    g.levels = static_cast<unsigned>(g.blocks.size());
    g.first.resize(g.levels);
    uint64_t position = 1;
    for (unsigned level = g.levels; level-- > 0;) {
        g.first[level] = position;
        position += g.blocks[level];
    }
    g.total_blocks = position;
    return g;
}

// "/path/of/the/file (role)", for error messages about a descriptor.
std::string describe_fd(int fd, const char* role) {
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    char target[4096];
    ssize_t n = ::readlink(link.c_str(), target, sizeof target);
    std::string name = n > 0 ? std::string(target, static_cast<size_t>(n)) : "descriptor " + std::to_string(fd);
    return name + " (" + role + ")";
}

// Refuses a hash area that overlaps the data when both live in the same file or device.
void check_disjoint(int data_fd, uint64_t data_offset, uint64_t data_size, int hash_fd, uint64_t hash_offset,
                    uint64_t hash_size, const std::string& hash_name) {
    struct stat ds {
    }, hs{};
    if (::fstat(data_fd, &ds) != 0) fail_errno("examining " + describe_fd(data_fd, "dm-verity data"));
    if (::fstat(hash_fd, &hs) != 0) fail_errno("examining " + hash_name);
    bool same = (S_ISBLK(ds.st_mode) && S_ISBLK(hs.st_mode)) ? ds.st_rdev == hs.st_rdev
                                                             : ds.st_dev == hs.st_dev && ds.st_ino == hs.st_ino;
    if (same && hash_offset < data_offset + data_size && data_offset < hash_offset + hash_size)
        fail(hash_name + ": hash area [" + std::to_string(hash_offset) + ", " +
             std::to_string(hash_offset + hash_size) + ") overlaps the data [" + std::to_string(data_offset) + ", " +
             std::to_string(data_offset + data_size) + ")");
}

// dm-verity's digest of a block is sha256(salt || block); sha256_blocks does runs of them at once. Digests
// are stored back to back, so a vector<Digest> is a run of outputs.
static_assert(sizeof(Digest) == digest_size);

std::vector<uint8_t> encode_superblock(const Params& p) {
    std::vector<uint8_t> sb(superblock_size, 0);
    std::memcpy(&sb[sb_signature], signature, sizeof signature);
    put_le(&sb[sb_version], 1, 4);
    put_le(&sb[sb_hash_type], hash_type_normal, 4);
    std::memcpy(&sb[sb_uuid], p.uuid.bytes.data(), p.uuid.bytes.size());
    std::memcpy(&sb[sb_algorithm], algorithm_name, sizeof algorithm_name - 1);
    put_le(&sb[sb_data_block_size], p.data_block_size, 4);
    put_le(&sb[sb_hash_block_size], p.hash_block_size, 4);
    put_le(&sb[sb_data_blocks], p.data_blocks, 8);
    put_le(&sb[sb_salt_size], p.salt.size(), 2);
    if (!p.salt.empty()) std::memcpy(&sb[sb_salt], p.salt.data(), p.salt.size());
    return sb;
}

// Runs work over segments [0, count) on `threads` threads. Each thread calls make_worker() once for its own
// state, then worker(segment), which returns the number of data blocks it covered. report(done) runs on the
// calling thread whenever progress was made. The first exception (from a worker or from report) stops the
// others and is rethrown once every thread has ended.
template <class MakeWorker>
void run_parallel(unsigned threads, uint64_t count, MakeWorker make_worker,
                  const std::function<void(uint64_t)>& report) {
    std::mutex mutex;
    std::condition_variable changed;
    uint64_t done = 0;
    unsigned running = threads;
    std::exception_ptr error;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> stop{false};

    auto record_error = [&](std::exception_ptr e) {
        if (!error) error = std::move(e);
        stop = true;
    };
    auto body = [&] {
        try {
            auto worker = make_worker();
            for (;;) {
                if (stop.load(std::memory_order_relaxed)) break;
                uint64_t segment = next.fetch_add(1, std::memory_order_relaxed);
                if (segment >= count) break;
                uint64_t blocks = worker(segment);
                std::lock_guard lock(mutex);
                done += blocks;
                changed.notify_one();
            }
        } catch (...) {
            std::lock_guard lock(mutex);
            record_error(std::current_exception());
        }
        std::lock_guard lock(mutex);
        --running;
        changed.notify_one();
    };

    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) {
        try {
            pool.emplace_back(body);
        } catch (...) {
            std::lock_guard lock(mutex);
            running -= threads - i;
            record_error(std::current_exception());
            break;
        }
    }

    std::unique_lock lock(mutex);
    uint64_t reported = 0;
    while (running > 0) {
        changed.wait(lock, [&] { return running == 0 || (report && !error && done != reported); });
        if (report && !error && done != reported) {
            reported = done;
            lock.unlock();
            try {
                report(reported);
            } catch (...) {
                lock.lock();
                record_error(std::current_exception());
                continue;
            }
            lock.lock();
        }
    }
    lock.unlock();
    for (auto& thread : pool) thread.join();
    if (error) std::rethrow_exception(error);
}

unsigned thread_count(unsigned requested, uint64_t segments) {
    unsigned n = requested ? requested : std::max(1u, std::thread::hardware_concurrency());
    return static_cast<unsigned>(std::min<uint64_t>(n, segments));
}

struct Mismatch {
    unsigned level = 0;
    uint64_t block = 0;  // counted from hash_offset
    std::string detail;
};

std::string describe(const Mismatch& m) {
    return "hash block " + std::to_string(m.block) + " (level " + std::to_string(m.level) + ") differs: " + m.detail;
}

// The first differing digest slot of a hash block, or per_block when only bytes outside the slots differ.
size_t first_differing_slot(const uint8_t* computed, const uint8_t* on_disk, uint32_t per_block) {
    for (size_t slot = 0; slot < per_block; ++slot)
        if (std::memcmp(computed + slot * digest_size, on_disk + slot * digest_size, digest_size) != 0) return slot;
    return per_block;
}

struct Devices {
    int data_fd;
    uint64_t data_offset;
    std::string data_name;
    int hash_fd;
    uint64_t hash_offset;
    std::string hash_name;
};

// Hashes every data block into the leaf level (level 0), segment by segment and in parallel, and returns the
// digest of each leaf block (what level 1 is made of). Writes the leaf blocks to the hash device, or, when
// `mismatch` is given, compares them with the hash device and records the first block that differs.
std::vector<Digest> hash_leaves(const Devices& dev, const Params& p, const Geometry& g, unsigned threads,
                                const std::function<void(uint64_t, uint64_t)>& progress,
                                std::optional<Mismatch>* mismatch, const std::function<void(uint64_t)>& wait_for_data = {}) {
    const uint32_t dbs = p.data_block_size, hbs = p.hash_block_size;
    const uint64_t leaf_blocks = g.blocks[0];
    const uint64_t leaves_per_segment = std::max<uint64_t>(1, segment_bytes / dbs / g.per_block);
    const uint64_t segments = (leaf_blocks + leaves_per_segment - 1) / leaves_per_segment;
    const size_t blocks_per_read = read_chunk_bytes / dbs;
    std::vector<Digest> digests(leaf_blocks);
    std::mutex mismatch_mutex;

    ::posix_fadvise(dev.data_fd, static_cast<off_t>(dev.data_offset), static_cast<off_t>(p.data_blocks * dbs),
                    POSIX_FADV_SEQUENTIAL);

    auto make_worker = [&] {
        return [&, data = AlignedBuffer(blocks_per_read * dbs),
                leaves = std::vector<uint8_t>(leaves_per_segment * hbs),
                disk = std::vector<uint8_t>(mismatch ? leaves_per_segment * hbs : 0)](uint64_t segment) mutable {
            const uint64_t first_leaf = segment * leaves_per_segment;
            const uint64_t leaf_count = std::min(leaves_per_segment, leaf_blocks - first_leaf);
            const uint64_t first_data = first_leaf * g.per_block;
            const uint64_t data_count = std::min(leaf_count * g.per_block, p.data_blocks - first_data);
            const size_t leaf_bytes = leaf_count * hbs;

            // Digests tile the hash blocks exactly (hbs is a multiple of 32), so data block i's digest sits at
            // byte i * 32 of the segment's leaves; whatever follows the last one stays zero.
            std::fill_n(leaves.begin(), leaf_bytes, 0);
            for (uint64_t done = 0; done < data_count;) {
                uint64_t n = std::min<uint64_t>(blocks_per_read, data_count - done);
                if (wait_for_data) wait_for_data((first_data + done + n) * dbs);
                pread_exact(dev.data_fd, data.data(), n * dbs, dev.data_offset + (first_data + done) * dbs,
                            dev.data_name);
                sha256_blocks(p.salt, data.data(), dbs, n, leaves.data() + done * digest_size);
                done += n;
            }
            sha256_blocks(p.salt, leaves.data(), hbs, leaf_count, digests[first_leaf].data());

            const uint64_t first_block = g.first[0] + first_leaf;
            const uint64_t at = dev.hash_offset + first_block * hbs;
            if (!mismatch) {
                pwrite_exact(dev.hash_fd, leaves.data(), leaf_bytes, at, dev.hash_name);
                return data_count;
            }
            pread_exact(dev.hash_fd, disk.data(), leaf_bytes, at, dev.hash_name);
            for (uint64_t k = 0; k < leaf_count; ++k) {
                const uint8_t* computed = leaves.data() + k * hbs;
                const uint8_t* on_disk = disk.data() + k * hbs;
                if (std::memcmp(computed, on_disk, hbs) == 0) continue;
                size_t slot = first_differing_slot(computed, on_disk, g.per_block);
                uint64_t data_block = (first_leaf + k) * g.per_block + slot;
                std::string detail = slot < g.per_block && data_block < p.data_blocks
                                         ? "data block " + std::to_string(data_block) + " does not match its digest"
                                         : "bytes after the last digest are not zero";
                std::lock_guard lock(mismatch_mutex);
                if (!*mismatch || (*mismatch)->block > first_block + k)
                    *mismatch = Mismatch{0, first_block + k, detail};
                break;
            }
            return data_count;
        };
    };
    std::function<void(uint64_t)> report;
    if (progress) report = [&](uint64_t done) { progress(done, p.data_blocks); };
    run_parallel(thread_count(threads, segments), segments, make_worker, report);
    return digests;
}

// Builds levels 1 .. levels-1 from the leaf-block digests. Returns the image of hash blocks [0, first[0]):
// a zeroed superblock block, then the upper levels as stored; sets root.
std::vector<uint8_t> build_upper(const Params& p, const Geometry& g, std::vector<Digest> below, Digest& root) {
    const uint32_t hbs = p.hash_block_size;
    std::vector<uint8_t> image(g.first[0] * hbs, 0);
    for (unsigned level = 1; level < g.levels; ++level) {
        uint8_t* base = image.data() + g.first[level] * hbs;
        for (size_t i = 0; i < below.size(); ++i) std::memcpy(base + i * digest_size, below[i].data(), digest_size);
        std::vector<Digest> digests(g.blocks[level]);
        sha256_blocks(p.salt, base, hbs, digests.size(), digests.front().data());
        below = std::move(digests);
    }
    root = below.at(0);  // the top level is a single block
    return image;
}

Digest hash_single_block(const Devices& dev, const Params& p, const std::function<void(uint64_t)>& wait_for_data = {}) {
    if (wait_for_data) wait_for_data(p.data_block_size);
    AlignedBuffer block(p.data_block_size);
    pread_exact(dev.data_fd, block.data(), p.data_block_size, dev.data_offset, dev.data_name);
    Digest d{};
    sha256_blocks(p.salt, block.data(), p.data_block_size, 1, d.data());
    return d;
}

}  // namespace

uint64_t hash_device_size(const Params& p) {
    validate(p, "dm-verity hash device size");
    return geometry(p).total_blocks * p.hash_block_size;
}

unsigned tree_levels(const Params& p) {
    validate(p, "dm-verity tree levels");
    return geometry(p).levels;
}

Result format(int data_fd, uint64_t data_offset, int hash_fd, uint64_t hash_offset, const Params& p, unsigned threads,
              const std::function<void(uint64_t, uint64_t)>& progress) {
    Devices dev{data_fd, data_offset, describe_fd(data_fd, "dm-verity data"),
                hash_fd, hash_offset, describe_fd(hash_fd, "dm-verity hash device")};
    validate(p, "dm-verity format of " + dev.data_name);
    check_hash_offset(hash_offset, p, dev.hash_name);
    const Geometry g = geometry(p);
    const uint64_t data_size = p.data_blocks * p.data_block_size;
    const uint64_t hash_size = g.total_blocks * p.hash_block_size;
    if (data_offset > max_offset - data_size)
        fail(dev.data_name + ": data offset " + std::to_string(data_offset) + " is too large");
    if (hash_offset > max_offset - hash_size)
        fail(dev.hash_name + ": hash offset " + std::to_string(hash_offset) + " is too large");
    check_disjoint(data_fd, data_offset, data_size, hash_fd, hash_offset, hash_size, dev.hash_name);

    uint64_t reported = 0;
    std::function<void(uint64_t, uint64_t)> report;
    if (progress) report = [&](uint64_t done, uint64_t total) { progress(reported = done, total); };

    Result result{{}, hash_size};
    std::vector<uint8_t> head;
    if (g.levels == 0) {
        result.root_hash = hash_single_block(dev, p);
        head.assign(p.hash_block_size, 0);
    } else {
        head = build_upper(p, g, hash_leaves(dev, p, g, threads, report, nullptr), result.root_hash);
    }
    if (progress && reported != p.data_blocks) progress(p.data_blocks, p.data_blocks);
    // The superblock (and the small upper levels) go last, so an interrupted format leaves no valid header.
    std::vector<uint8_t> sb = encode_superblock(p);
    std::copy(sb.begin(), sb.end(), head.begin());
    pwrite_exact(hash_fd, head.data(), head.size(), hash_offset, dev.hash_name);
    return result;
}

Superblock read_superblock(int hash_fd, uint64_t hash_offset, const std::string& what) {
    uint8_t raw[superblock_size];
    pread_exact(hash_fd, raw, sizeof raw, hash_offset, what);
    const std::string where = what + ": dm-verity superblock at offset " + std::to_string(hash_offset);
    if (std::memcmp(raw + sb_signature, signature, sizeof signature) != 0)
        fail(what + ": no dm-verity superblock at offset " + std::to_string(hash_offset) +
             " (no \"verity\" signature)");
    Superblock sb;
    sb.version = static_cast<uint32_t>(get_le(raw + sb_version, 4));
    sb.hash_type = static_cast<uint32_t>(get_le(raw + sb_hash_type, 4));
    sb.uuid = Uuid::from_bytes(raw + sb_uuid);
    const char* name = reinterpret_cast<const char*>(raw + sb_algorithm);
    sb.algorithm.assign(name, strnlen(name, sb_algorithm_size));
    sb.data_block_size = static_cast<uint32_t>(get_le(raw + sb_data_block_size, 4));
    sb.hash_block_size = static_cast<uint32_t>(get_le(raw + sb_hash_block_size, 4));
    sb.data_blocks = get_le(raw + sb_data_blocks, 8);
    const size_t salt_size = static_cast<size_t>(get_le(raw + sb_salt_size, 2));

    if (sb.version != 1) fail(where + " has unsupported version " + std::to_string(sb.version));
    if (sb.hash_type > 1) fail(where + " has unknown hash type " + std::to_string(sb.hash_type));
    if (sb.algorithm.empty() || sb.algorithm.size() == sb_algorithm_size ||
        !std::all_of(sb.algorithm.begin(), sb.algorithm.end(), [](char c) { return c > ' ' && c < 127; }))
        fail(where + " has no valid hash algorithm name");
    for (auto [size, kind] : {std::pair{sb.data_block_size, "data"}, std::pair{sb.hash_block_size, "hash"}})
        if (!power_of_two_between(size, min_block_size, superblock_max_block_size))
            fail(where + " has invalid " + kind + " block size " + std::to_string(size));
    if (sb.data_blocks == 0) fail(where + " covers 0 data blocks");
    if (salt_size > max_salt_size) fail(where + " has a salt of " + std::to_string(salt_size) + " bytes (at most 256)");
    sb.salt.assign(raw + sb_salt, raw + sb_salt + salt_size);
    return sb;
}

VerifyResult verify(int data_fd, uint64_t data_offset, int hash_fd, uint64_t hash_offset, unsigned threads,
                    const std::function<void(uint64_t)>& wait_for_data) {
    Devices dev{data_fd, data_offset, describe_fd(data_fd, "dm-verity data"),
                hash_fd, hash_offset, describe_fd(hash_fd, "dm-verity hash device")};
    const Superblock sb = read_superblock(hash_fd, hash_offset, dev.hash_name);
    if (sb.hash_type != hash_type_normal)
        fail(dev.hash_name + ": dm-verity hash type " + std::to_string(sb.hash_type) +
             (sb.hash_type == 0 ? " (Chrome OS)" : "") + " is not supported; only type 1");
    if (sb.algorithm != algorithm_name)
        fail(dev.hash_name + ": dm-verity hash algorithm \"" + sb.algorithm + "\" is not supported; only sha256");
    const Params p{sb.data_block_size, sb.hash_block_size, sb.data_blocks, sb.salt, sb.uuid};
    validate(p, dev.hash_name);
    check_hash_offset(hash_offset, p, dev.hash_name);
    const Geometry g = geometry(p);
    const uint64_t data_size = p.data_blocks * p.data_block_size;
    if (data_offset > max_offset - data_size)
        fail(dev.data_name + ": data offset " + std::to_string(data_offset) + " is too large");
    if (hash_offset > max_offset - g.total_blocks * p.hash_block_size)
        fail(dev.hash_name + ": hash offset " + std::to_string(hash_offset) + " is too large");

    VerifyResult result;
    if (g.levels == 0) {
        result.root_hash = hash_single_block(dev, p, wait_for_data);
        result.ok = true;
        return result;
    }
    std::optional<Mismatch> mismatch;
    std::vector<uint8_t> computed = build_upper(p, g, hash_leaves(dev, p, g, threads, {}, &mismatch, wait_for_data), result.root_hash);
    if (!mismatch && g.levels > 1) {
        const uint32_t hbs = p.hash_block_size;
        std::vector<uint8_t> on_disk(computed.size() - hbs);
        pread_exact(hash_fd, on_disk.data(), on_disk.size(), hash_offset + hbs, dev.hash_name);
        // Lowest level first: a wrong level-1 block explains a wrong top block, not the other way round.
        for (unsigned level = 1; level < g.levels && !mismatch; ++level) {
            for (uint64_t k = 0; k < g.blocks[level]; ++k) {
                const uint64_t block = g.first[level] + k;
                const uint8_t* mine = computed.data() + block * hbs;
                const uint8_t* theirs = on_disk.data() + (block - 1) * hbs;
                if (std::memcmp(mine, theirs, hbs) == 0) continue;
                size_t slot = first_differing_slot(mine, theirs, g.per_block);
                uint64_t child = k * g.per_block + slot;
                std::string detail = slot < g.per_block && child < g.blocks[level - 1]
                                         ? "the digest of hash block " + std::to_string(g.first[level - 1] + child) +
                                               " (level " + std::to_string(level - 1) + ") does not match"
                                         : "bytes after the last digest are not zero";
                mismatch = Mismatch{level, block, detail};
                break;
            }
        }
    }
    result.ok = !mismatch;
    if (mismatch) result.problem = describe(*mismatch);
    return result;
}

std::string kernel_table(const Params& p, const Digest& root_hash, const std::string& data_dev,
                         const std::string& hash_dev, uint64_t hash_offset) {
    validate(p, "dm-verity table for " + data_dev);
    check_hash_offset(hash_offset, p, "dm-verity table for " + hash_dev);
    for (const std::string* dev : {&data_dev, &hash_dev})
        if (dev->empty() || dev->find_first_of(" \t\n,;") != std::string::npos)
            fail("dm-verity table: device name '" + *dev + "' is empty or holds a space or separator");
    const uint64_t sectors = p.data_blocks * (p.data_block_size / 512);
    return "0 " + std::to_string(sectors) + " verity 1 " + data_dev + " " + hash_dev + " " +
           std::to_string(p.data_block_size) + " " + std::to_string(p.hash_block_size) + " " +
           std::to_string(p.data_blocks) + " " + std::to_string(hash_offset / p.hash_block_size + 1) + " " +
           algorithm_name + " " + to_hex(root_hash) + " " + (p.salt.empty() ? std::string("-") : to_hex(p.salt));
}

}  // namespace cairn::verity
