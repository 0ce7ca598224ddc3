// Assembling a root in the target slot from a bundle on a server (an adaptive install): every
// block is checked against its signed hash before it is written, and only the blocks the device
// does not already have are downloaded.
//
// The index of the new root's blocks is its dm-verity tree's lowest level: the digest of every
// data block (4 KiB), sha256(salt || block), signed through the root hash in the manifest. The
// install fetches the tree first anyway (nothing of the root may land unchecked), so the index
// costs the bundle nothing: no second index to build, carry, sign or keep in step. The salt is
// public (it is in the manifest); the device hashes what it holds with the new root's salt. 4 KiB
// is the filesystem's block: a file that did not change, wherever the new image puts it, is made
// of blocks the device has, and nothing smaller could be checked on its own.
//
// Each block of the new root comes from the first of:
//   in place  the target's root partition already holds it at its offset (an install cut short,
//             by a lost link or a power cut, resumes this way: what is on the disk is re-checked,
//             never trusted; or the target still holds an older release with that block);
//   zeros     its digest is that of a block of zeros;
//   copy      the running slot's root holds a block with that digest (read, checked, written);
//   fetch     the rest, by range requests covering runs of missing blocks (one request per run;
//             with `merge_gap`, a short gap between two runs is fetched along).
// Blocks are written in runs, and the disk is flushed every second while fetching (a power cut
// loses at most that much), so that the next attempt finds them in place.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "updater/bundle.hpp"

namespace cairn::updater {

struct AssembleRequest {
    int disk_fd = -1;                       // read and write
    std::string disk_name;                  // for messages
    uint64_t target_offset = 0;             // the target's root partition on the disk
    std::optional<std::pair<uint64_t, uint64_t>> running;  // the running slot's root: offset, bytes (none: no copies)
    const uint8_t* digests = nullptr;       // 32 bytes per block of the new root, in order (the tree's level 0)
    std::vector<uint8_t> salt;
    uint32_t block_size = 4096;
    uint64_t blocks = 0;
    uint64_t payload_offset = 0;            // the root payload's offset in the bundle
    std::string payload_name;               // "root", for messages
    RangeSource* remote = nullptr;
    // When set: the target is checked in place only in the groups of `group_blocks` blocks (one
    // level-0 hash block's worth) marked true, those whose hash block the target's tree already
    // held (assemble_tree's level0_in_place). A fresh target is then not read at all.
    const std::vector<bool>* scan_groups = nullptr;
    uint64_t group_blocks = 128;
    // Blocks between two missing runs fetched along to save a request: each costs 4 KiB, a request
    // a round trip. 0 (the default) fetches exactly what is missing; the requests are sequential
    // on one kept-alive connection.
    uint64_t merge_gap = 0;
    int bad_block_strikes = 3;              // the same block arriving wrong this often: the bundle is bad
    // Progress: bytes of the root dealt with in the current phase (scan-target, scan-running, place);
    // `say` names the phase.
    std::function<void(uint64_t)> advance;
    std::function<void(const std::string&)> say;
    // Once the blocks the device has are placed, before the first fetch: what is left to fetch
    // (fetched: blocks to fetch, fetched_extra among them, ranges).
    std::function<void(const struct AssembleStats&)> planned;
    // Blocks [0, n) hold their final, checked content on the disk (written through the disk's
    // descriptor, or found there): a reader may verify them behind the writer. Rises while runs
    // are fetched; n = blocks once everything is.
    std::function<void(uint64_t n)> final_blocks;
};

struct AssembleStats {
    uint64_t in_place = 0, zeros = 0, copied = 0, fetched = 0;  // blocks of the new root by source
    uint64_t fetched_extra = 0;  // blocks fetched (to save requests) though the device had them
    uint64_t ranges = 0;         // runs fetched
};

// Throws UpdateError: bad-payload when a block keeps arriving wrong, transfer / source-changed
// from the remote, io for the disk.
AssembleStats assemble_root(const AssembleRequest& request);

// A payload with a chunk index (an ESP: Payload::chunks), assembled in memory: each chunk from
// the target partition where it already sits, else from the target's or the running slot's
// partition (any chunk-aligned place), else fetched; every chunk checked against its signed sha256 before it is
// taken, and the whole against the payload's sha256 at the end. Nothing is written: the caller
// writes the bytes it returns.
struct ChunkedRequest {
    int disk_fd = -1;
    std::string disk_name;
    const Payload* payload = nullptr;
    std::string what;                                       // "<bundle>: payload esp-b", for messages
    std::pair<uint64_t, uint64_t> target;                   // the target partition: offset, size
    std::optional<std::pair<uint64_t, uint64_t>> running;   // the running slot's partition
    RangeSource* remote = nullptr;
    int bad_chunk_strikes = 3;
    std::function<void(uint64_t)> advance;                  // payload bytes dealt with
};
// stats counts chunks: in_place, copied, fetched (and ranges).
std::string assemble_chunked(const ChunkedRequest& request, AssembleStats& stats);

// A root's dm-verity tree (a root-verity payload), assembled in memory. The tree indexes itself:
// level by level from the top, each hash block the target's tree partition holds at its place is
// kept when it hashes to its entry in the level above (the top block to the signed root hash);
// the others are fetched and checked the same way before they are taken. The superblock, outside
// that chain, is kept when the whole then is the signed payload, else fetched. A new release of
// the same recipe changes the hash blocks over the root blocks it changed and the few above them.
struct TreeRequest {
    int disk_fd = -1;
    std::string disk_name;
    const Payload* tree = nullptr;
    std::string what;                 // "<bundle>: payload root-verity-b"
    uint64_t target_offset = 0, target_size = 0;  // the target's tree partition
    RangeSource* remote = nullptr;
    int bad_block_strikes = 3;
    std::function<void(uint64_t)> advance;
    std::vector<bool>* level0_in_place = nullptr;  // when set: which level-0 hash blocks were in place
};
// stats counts hash blocks: in_place and fetched.
std::string assemble_tree(const TreeRequest& request, AssembleStats& stats);

}  // namespace cairn::updater
