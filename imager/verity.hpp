// dm-verity hash trees (format type 1, SHA-256), byte-identical to `veritysetup format`, built in parallel.
//
// Hash device layout from hash_offset: a 512-byte superblock padded to one hash block, then the tree,
// top level first. Each data block's digest is sha256(salt || block); a hash block holds
// hash_block_size / 32 digests, zero-padded; the root is sha256(salt || top block). With a single data
// block there is no tree: the root is that block's digest.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/hash.hpp"
#include "common/uuid.hpp"

namespace cairn::verity {

inline constexpr uint32_t superblock_size = 512;
inline constexpr size_t max_salt_size = 256;
// Block sizes this code builds and verifies: powers of two in [min_block_size, max_block_size], both for
// data and hash blocks (the kernel cannot activate data blocks larger than a page).
inline constexpr uint32_t min_block_size = 512;
inline constexpr uint32_t max_block_size = 4096;

struct Params {
    uint32_t data_block_size = 4096;
    uint32_t hash_block_size = 4096;
    uint64_t data_blocks = 0;   // number of data blocks covered
    std::vector<uint8_t> salt;  // up to 256 bytes
    Uuid uuid;                  // written in the superblock
};

// Bytes the hash device needs: 512-byte superblock padded to one hash block, then the tree.
// Throws Error when the parameters are invalid.
uint64_t hash_device_size(const Params& p);

// Number of tree levels (0 for a single data block, whose digest is the root).
unsigned tree_levels(const Params& p);

struct Result {
    Digest root_hash;
    uint64_t hash_size;  // bytes written at hash_offset, = hash_device_size(p)
};

// Computes the tree over data_fd[data_offset, data_offset + data_blocks * data_block_size) and writes
// superblock + tree to hash_fd at hash_offset (a multiple of hash_block_size), byte-identical to
// `veritysetup format --salt=.. --uuid=..` (sha256, format type 1). The superblock is written last.
// Parallel across `threads` threads (0 = hardware concurrency). progress (optional) is called on the
// calling thread with done/total data blocks from time to time, the last call being total/total
// (made before the superblock is written).
Result format(int data_fd, uint64_t data_offset, int hash_fd, uint64_t hash_offset, const Params& p,
              unsigned threads = 0, const std::function<void(uint64_t, uint64_t)>& progress = {});

struct Superblock {
    uint32_t version = 0, hash_type = 0;
    Uuid uuid;
    std::string algorithm;
    uint32_t data_block_size = 0, hash_block_size = 0;
    uint64_t data_blocks = 0;
    std::vector<uint8_t> salt;
};

// Reads and validates the superblock at hash_offset; throws Error naming `what` if it is not one.
// Accepts any hash type (0 or 1) and algorithm name; verify() is the one that insists on 1 and sha256.
Superblock read_superblock(int hash_fd, uint64_t hash_offset, const std::string& what);

// Recomputes the whole tree in memory from the data and compares it with every hash block on disk.
// The caller compares root_hash with the root it trusts. Throws Error when the superblock is missing or
// unsupported or a device cannot be read; a tree that does not match is reported in `problem`.
struct VerifyResult {
    bool ok = false;
    Digest root_hash{};
    std::string problem;  // empty when ok, else e.g. "hash block 17 (level 0) differs: ..."
};
// data_fd may be opened with O_DIRECT (data_offset and the data block size a multiple of the device's
// logical block size). wait_for_data(end), when given, is called before data bytes [.., end) (counted from
// data_offset) are read and returns once they may be: the updater verifies a slot while writing it.
VerifyResult verify(int data_fd, uint64_t data_offset, int hash_fd, uint64_t hash_offset, unsigned threads = 0,
                    const std::function<void(uint64_t)>& wait_for_data = {});

// The device-mapper table line:
// "0 <sectors> verity 1 <data_dev> <hash_dev> <data_block_size> <hash_block_size> <blocks> <hash_start> sha256
//  <root> <salt>", salt "-" when empty. hash_start counts hash blocks up to the top-level block, so it is 1
// when the superblock sits at hash_offset 0 of hash_dev.
std::string kernel_table(const Params& p, const Digest& root_hash, const std::string& data_dev,
                         const std::string& hash_dev, uint64_t hash_offset = 0);

}  // namespace cairn::verity
