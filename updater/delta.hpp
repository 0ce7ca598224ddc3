// Delta files: what a device running a known build downloads instead of the blocks it lacks.
// The format is described in docs/bundle.md ("Deltas"); in short:
//
//   [0, 64)           header: magic "CAIRNDLT", format, table size (little endian)
//   [64, 64 + t)      table: JSON naming the source build, the bundle it leads to (build id and the
//                     sha256 of its signed manifest) and the sections
//   sections          zstd frames, each at the offset the table gives
//
// A section gives `size` bytes of one payload of the new bundle from `offset` (a multiple of the
// segment size): a zstd frame decompressed with, as its prefix (zstd's --patch-from), a range of a
// base the device already has (`base_offset`, `base_size`: the builder picks the range the segment's
// bytes came from, e.g. a little before the same range when a package added earlier in the image
// moved everything after it):
//   running   the running slot's partition of the payload's role (its root, its ESP), as the
//             source build wrote it;
//   tree      the dm-verity tree the device computes over the running slot's root with the new
//             tree's salt and block sizes: it differs from the new tree only over changed blocks.
// A segment that has no section is, for the ESP and the tree, the base's same bytes; for the root,
// made of blocks the running root holds somewhere (the install copies them, assemble.hpp).
//
// A delta is not signed, and needs not be: nothing it gives is written before it is checked against
// the bundle's signed manifest. The tree and the ESP are rebuilt whole in memory and must have
// their payload's signed sha256; each root block must have its digest in that verified tree. A
// delta that gives anything else (damaged, made from another build, a running slot changed since)
// is dropped, and the install fetches what is missing from the bundle as it would without one.
//
// `cairn delta OLD.cairn NEW.cairn` makes one (imager/delta.cpp); cairn-updated looks for it beside
// the bundle it installs from a server, named for the build it runs (delta_url).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "updater/bundle.hpp"

namespace cairn::updater {

inline constexpr char delta_magic[8] = {'C', 'A', 'I', 'R', 'N', 'D', 'L', 'T'};
// Format 2 added a section's base_offset; a format 1 table (base_offset = offset) still reads.
inline constexpr uint32_t delta_format = 2;
inline constexpr uint64_t delta_header_size = 64;
inline constexpr uint64_t max_delta_table_size = 1 << 20;  // a reader refuses more before allocating
// What `cairn delta` cuts payloads into. A segment is patched against the range of its base its
// bytes came from (at most 24 MiB, imager/delta.cpp): small enough that the device holds a segment,
// its base and its frame at a time. Smaller segments make more, smaller sections (each with its
// frame's own overhead); measured on the minimal recipe with one package added, each against its
// same range: 1 MiB 118 KB, 4 MiB 75 KB, 8 MiB 65 KB, 16 MiB 64 KB.
inline constexpr uint64_t delta_segment_size = 8 << 20;
inline constexpr uint64_t max_delta_segment_size = 64 << 20;  // what a device accepts in a table
// Decompression window: the largest a frame may ask for (128 MiB). A section's base and size
// together must fit in it, and a base is at most 64 MiB.
inline constexpr int delta_window_log_max = 27;
inline constexpr uint64_t max_delta_base_size = 64 << 20;

enum class DeltaBase { running, tree };
std::string_view delta_base_name(DeltaBase base);  // "running", "tree"

struct DeltaSection {
    std::string payload;         // the new bundle's payload it gives ("root", "root-verity-b", "esp-b")
    uint64_t offset = 0, size = 0;  // of that payload's bytes
    DeltaBase base = DeltaBase::running;
    uint64_t base_offset = 0, base_size = 0;  // the range of the base that is the zstd prefix; size 0: none
    uint64_t at = 0, bytes = 0;  // the zstd frame in the delta file
};

struct DeltaTable {
    int format = static_cast<int>(delta_format);
    std::string from_build_id, from_version;     // the build a device must run
    uint64_t from_root_blocks = 0;               // its root's data blocks (the tree base covers them)
    std::string to_build_id, to_version;         // the bundle it leads to
    std::string to_manifest_sha256;              // hex, of that bundle's signed manifest bytes
    uint64_t segment_size = delta_segment_size;
    std::vector<DeltaSection> sections;          // in file order

    std::string to_json() const;
    // Strict, as BundleManifest::parse: unknown fields, bad hex, segments not aligned or larger than
    // the segment size, bases too long for the window, frames that overlap, are out of order, start
    // inside the table or cannot hold their bytes: Error naming `what` and the field.
    static DeltaTable parse(std::string_view json, const std::string& what);
    // The sections of one payload, in order.
    std::vector<const DeltaSection*> of(const std::string& payload) const;
};

std::string encode_delta_header(uint64_t table_size);
// The table's size; Error naming `what` on a wrong magic, unknown format or a size out of bounds.
uint64_t decode_delta_header(std::string_view bytes, const std::string& what);

// Where the delta from build `from_build_id` to the bundle at `bundle` sits: beside it, named
// "<bundle>.from-<build id>" (a URL's query, if any, stays at the end).
std::string delta_url(const std::string& bundle, const std::string& from_build_id);

// One section's bytes: its frame decompressed with `base` as the prefix. Exactly section.size bytes,
// else Error naming `what` (a frame that is not zstd, asks for a larger window, is cut short or
// gives another size).
std::string decode_section(const DeltaSection& section, std::string_view base, std::string_view frame, const std::string& what);
// The frame that gives `target` from `base` (level: zstd's, 19 by default).
std::string encode_section(std::string_view base, std::string_view target, int level = 19);

// The tree base: superblock and dm-verity tree (tree_payload's salt and block sizes, a zero UUID)
// over `blocks` data blocks at `fd` from `offset`, as bytes. Builder and device compute the same.
std::string delta_tree_base(int fd, uint64_t offset, uint64_t blocks, const Payload& tree_payload, const std::string& what);

}  // namespace cairn::updater

namespace cairn::updater {

// A delta on a server, opened for an install: its table fetched and checked against the bundle
// being installed and the build the device runs.
class DeltaSource {
public:
    // Fetches header and table from `file` (named `name` in messages). Throws Error when it cannot be
    // had (UpdateError transfer: no delta on the server is a 404) or is malformed, or when it leads to
    // another bundle or from another build than `running_build_id`.
    DeltaSource(std::unique_ptr<RangeSource> file, std::string name, const BundleSource& bundle, const std::string& running_build_id);
    const DeltaTable& table() const { return table_; }
    const std::string& name() const { return name_; }
    // The frames of `sections` (in file order), in as few requests as the server allows.
    std::vector<std::string> frames(const std::vector<const DeltaSection*>& sections);
    // A whole payload (a tree, an ESP) in memory: each segment from its section decoded against its
    // range of `base`, the others `base`'s same bytes. Error when a section cannot be had or
    // decoded, or a segment lies outside `base`. The caller checks the result against the signed sha256.
    std::string rebuild(const Payload& payload, std::string_view base);
    TransferStats stats() const { return file_->stats(); }

private:
    std::unique_ptr<RangeSource> file_;
    std::string name_;
    DeltaTable table_;
    std::string head_;  // the file's first bytes, as the first request brought them (frames too, in a small delta)
};

// The root's sections placed in the target slot (before assemble_root, which then finds them in place):
// each segment decoded against its range of the running root, and each of its blocks written only if
// it has its digest in the verified tree. A segment the target already holds is not fetched (an
// install cut short resumes); blocks that do not match, and the segments of frames that do not
// decode, are left for assemble_root to fetch. Error for a table that does not fit the root or the
// running slot; UpdateError (transfer) when the frames cannot be had.
struct DeltaRootRequest {
    int disk_fd = -1;
    std::string disk_name;
    uint64_t target_offset = 0;                  // the target's root partition
    std::pair<uint64_t, uint64_t> running;       // the running slot's root partition: offset, size
    const uint8_t* digests = nullptr;            // 32 bytes per block of the new root (the tree's level 0)
    std::vector<uint8_t> salt;
    uint32_t block_size = 4096;
    uint64_t blocks = 0;
    std::function<void(const std::string&)> say;
};
struct DeltaRootStats {
    uint64_t sections = 0, in_place = 0;     // sections of the root; of them, already in the target
    uint64_t written = 0, refused = 0;       // blocks checked and written; blocks that did not match
};
DeltaRootStats place_root_sections(DeltaSource& delta, const Payload& root, const DeltaRootRequest& request);

}  // namespace cairn::updater
