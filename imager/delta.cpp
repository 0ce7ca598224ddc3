#include "imager/delta.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <tuple>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/sha256_blocks.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using updater::DeltaBase;
using updater::DeltaSection;
using updater::Payload;

namespace {

std::string read_range(int fd, uint64_t offset, uint64_t size, const std::string& what) {
    std::string out(size, '\0');
    pread_exact(fd, out.data(), out.size(), offset, what);
    return out;
}

// The slot a device runs while it installs into `slot` ("" for a payload of either slot: "a").
std::string running_of(const std::string& slot) { return slot == "a" ? "b" : "a"; }

// A root's blocks by their unsalted digests, sorted: what a device running it can copy, and from where.
struct OldBlock {
    Digest digest;
    uint64_t index;
    bool operator<(const OldBlock& o) const { return std::tie(digest, index) < std::tie(o.digest, o.index); }
};
std::vector<OldBlock> block_digests(int fd, uint64_t offset, uint64_t size, const std::string& what) {
    constexpr uint64_t block = 4096, window = 4 << 20;
    std::vector<OldBlock> out(size / block);
    std::vector<uint8_t> digests(window / block * 32);
    std::string data;
    for (uint64_t at = 0; at < out.size() * block; at += window) {
        const uint64_t n = std::min(window, out.size() * block - at);
        data = read_range(fd, offset + at, n, what);
        sha256_blocks({}, reinterpret_cast<const uint8_t*>(data.data()), block, n / block, digests.data());
        for (uint64_t i = 0; i < n / block; ++i) {
            std::memcpy(out[at / block + i].digest.data(), digests.data() + i * 32, 32);
            out[at / block + i].index = at / block + i;
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

// Bytes of the base either side of where a segment's bytes were, so that what moved a little
// (a file before it grew, a directory's entries shifted) is still within the frame's prefix.
constexpr uint64_t base_margin = 1 << 20;
// How far a segment's base may stretch when its blocks came from several places: beyond it, only
// where most of them came from (zstd's time and memory grow with the base).
constexpr uint64_t max_base_span = 3 * updater::delta_segment_size;

// The range of a base (of `base_size` bytes) a segment [offset, offset + n) is patched against:
// [offset + lo - margin, offset + n + hi + margin), where its bytes were lo..hi bytes away.
std::pair<uint64_t, uint64_t> base_range(uint64_t offset, uint64_t n, int64_t lo, int64_t hi, uint64_t base_size) {
    const int64_t begin = std::max<int64_t>(0, static_cast<int64_t>(offset) + lo - static_cast<int64_t>(base_margin));
    const int64_t end = std::min<int64_t>(static_cast<int64_t>(base_size), static_cast<int64_t>(offset + n) + hi + static_cast<int64_t>(base_margin));
    if (end <= begin) return {0, 0};
    return {static_cast<uint64_t>(begin), static_cast<uint64_t>(end - begin)};
}

}  // namespace

DeltaResult make_delta(const DeltaOptions& o) {
    const std::string from_what = o.from.string(), to_what = o.to.string();
    UniqueFd from_fd = open_file(o.from, O_RDONLY | O_CLOEXEC), to_fd = open_file(o.to, O_RDONLY | O_CLOEXEC);
    const updater::BundleHead from = updater::read_bundle_head(from_fd.get(), from_what);
    const updater::BundleHead to = updater::read_bundle_head(to_fd.get(), to_what);
    from.require_payloads(from_what);
    to.require_payloads(to_what);
    const updater::BundleManifest &fm = from.manifest, &tm = to.manifest;
    if (fm.compatible != tm.compatible)
        fail(to_what + ": a bundle for " + tm.compatible + ", " + from_what + " is for " + fm.compatible + ": no device runs one and installs the other");
    if (fm.build_id == tm.build_id) fail(to_what + ": the same build as " + from_what + " (" + tm.build_id + "): there is nothing to patch");

    DeltaResult r;
    r.file = o.out.empty() ? fs::path(updater::delta_url(o.to.string(), fm.build_id)) : o.out;
    updater::DeltaTable& t = r.table;
    t.from_build_id = fm.build_id;
    t.from_version = fm.version;
    t.to_build_id = tm.build_id;
    t.to_version = tm.version;
    t.to_manifest_sha256 = to_hex(sha256(to.manifest_bytes));
    const uint64_t seg = t.segment_size;

    const Payload* old_root = fm.find("root", "a");
    if (!old_root) fail(from_what + ": it has no root payload");
    constexpr uint64_t block = 4096;
    t.from_root_blocks = old_root->size / block;
    std::vector<OldBlock> old_blocks;  // filled for the first root payload

    // Encoders at once: each holds a segment, its base and zstd's tables (some 100 MiB at level 19).
    const size_t threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);

    // Frames go to a nameless file in the output's folder first; the table, which names where
    // each sits, is then written with the frames right after it.
    const fs::path dir = r.file.parent_path().empty() ? fs::path(".") : r.file.parent_path();
    UniqueFd frames_fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!frames_fd) fail_errno("a temporary file in " + dir.string());
    uint64_t at = 0;  // in `frames`, until the table's size is known
    // A section for `target` patched against `base`; none when its frame would be no smaller than
    // `fetch_instead`, the bytes a device would otherwise fetch for it (new data compresses little).
    auto add = [&](const Payload& p, uint64_t offset, DeltaBase base_kind, uint64_t base_offset, std::string_view base,
                   std::string_view target, uint64_t fetch_instead, const std::string& frame) {
        if (frame.size() >= fetch_instead) return;
        pwrite_exact(frames_fd.get(), frame.data(), frame.size(), at, "a temporary file in " + dir.string());
        t.sections.push_back(DeltaSection{p.name, offset, target.size(), base_kind, base_offset, base.size(), at, frame.size()});
        at += frame.size();
    };

    for (const Payload& p : tm.payloads) {
        const std::string running = running_of(p.slot);
        if (p.role == "root" || p.role == "esp") r.payloads += p.slot.empty() || p.slot == "b" ? p.size : 0;
        else if (p.role == "root-verity" && p.slot != "a") r.payloads += p.size;
        const uint64_t before = at;
        const size_t sections_before = t.sections.size();
        if (p.role == "root") {
            // A segment whose blocks are all zeros or somewhere in the old root needs nothing: the
            // device copies them. The rest is patched against the old root's same range.
            const Payload* base_payload = fm.find("root", running);
            if (!base_payload) continue;
            if (old_blocks.empty()) old_blocks = block_digests(from_fd.get(), base_payload->offset, base_payload->size, from_what);
            std::vector<uint8_t> digests;
            const Digest zero = [] {
                const std::string z(block, '\0');
                return sha256(z);
            }();
            // Segments to patch, encoded a few at a time side by side (zstd's level 19 takes seconds a
            // segment), each wave's sections added in order.
            struct Job {
                uint64_t offset, missing, base_offset;
                std::string base, target, frame;
            };
            std::vector<Job> wave;
            auto flush = [&] {
                std::vector<std::thread> workers;
                for (Job& j : wave) workers.emplace_back([&j, &o] { j.frame = updater::encode_section(j.base, j.target, o.level); });
                for (std::thread& w : workers) w.join();
                for (const Job& j : wave) add(p, j.offset, DeltaBase::running, j.base_offset, j.base, j.target, j.missing * block, j.frame);
                wave.clear();
            };
            for (uint64_t offset = 0; offset < p.size; offset += seg) {
                const uint64_t n = std::min(seg, p.size - offset);
                std::string target = read_range(to_fd.get(), p.offset + offset, n, to_what);
                digests.resize(n / block * 32);
                sha256_blocks({}, reinterpret_cast<const uint8_t*>(target.data()), block, n / block, digests.data());
                // Blocks a device running `from` does not have, and how far the others moved (in
                // blocks, from the nearest copy).
                uint64_t missing = n % block != 0 ? 1 : 0, copied = 0;
                std::map<int64_t, uint64_t> moved;
                for (uint64_t i = 0; i < n / block; ++i) {
                    // The copies of a block sit together, by index: the nearest is at or just before
                    // where this index would be (a block repeated all over the root costs no more).
                    const int64_t here = static_cast<int64_t>(offset / block + i);
                    OldBlock d{{}, static_cast<uint64_t>(here)};
                    std::memcpy(d.digest.data(), digests.data() + i * 32, 32);
                    if (d.digest == zero) continue;
                    const auto after = std::lower_bound(old_blocks.begin(), old_blocks.end(), d);
                    const bool has_after = after != old_blocks.end() && after->digest == d.digest;
                    const bool has_before = after != old_blocks.begin() && std::prev(after)->digest == d.digest;
                    if (!has_after && !has_before) {
                        ++missing;
                        continue;
                    }
                    int64_t nearest = has_after ? static_cast<int64_t>(after->index) - here : INT64_MIN;
                    if (has_before && (!has_after || here - static_cast<int64_t>(std::prev(after)->index) <= nearest))
                        nearest = static_cast<int64_t>(std::prev(after)->index) - here;
                    ++moved[nearest];
                    ++copied;
                }
                if (missing == 0) continue;
                // The base: where the segment's blocks came from, each shift that a sixteenth of them
                // share; only the commonest when those lie too far apart.
                int64_t lo = 0, hi = 0, commonest = 0;
                uint64_t most = 0;
                bool any = false;
                for (const auto& [shift, count] : moved) {
                    if (count > most) most = count, commonest = shift;
                    if (count * 16 < copied) continue;
                    lo = any ? std::min(lo, shift) : shift;
                    hi = any ? std::max(hi, shift) : shift;
                    any = true;
                }
                if (static_cast<uint64_t>(hi - lo) * block + n + 2 * base_margin > max_base_span) lo = hi = commonest;
                const auto [base_offset, base_size] =
                    base_range(offset, n, lo * static_cast<int64_t>(block), hi * static_cast<int64_t>(block), base_payload->size);
                wave.push_back({offset, missing, base_offset, read_range(from_fd.get(), base_payload->offset + base_offset, base_size, from_what),
                                std::move(target), {}});
                if (wave.size() == threads) flush();
            }
            flush();
        } else if (p.role == "root-verity" || p.role == "esp") {
            // Whole in memory (a tree, an ESP): segments that differ from the base's same bytes.
            std::string base;
            if (p.role == "root-verity") {
                base = updater::delta_tree_base(from_fd.get(), old_root->offset, t.from_root_blocks, p, from_what);
            } else {
                const Payload* base_payload = fm.find("esp", running);
                if (!base_payload) continue;
                base = read_range(from_fd.get(), base_payload->offset, base_payload->size, from_what);
            }
            const std::string target = read_range(to_fd.get(), p.offset, p.size, to_what);
            const DeltaBase kind = p.role == "root-verity" ? DeltaBase::tree : DeltaBase::running;
            // What a device fetches without the delta: the ESP's chunks and the tree's hash blocks
            // that differ from the base's. All of the payload's sections or none: a device rebuilds
            // it whole, so a segment left out would be the base's bytes, and wrong.
            const uint64_t unit = p.role == "esp" ? (p.chunk_size ? p.chunk_size : updater::esp_chunk_size) : p.hash_block_size;
            uint64_t fetch_instead = 0;
            for (uint64_t u = 0; u < p.size; u += unit) {
                const uint64_t n = std::min(unit, p.size - u);
                if (u + n > base.size() || std::string_view(base).substr(u, n) != std::string_view(target).substr(u, n)) fetch_instead += n;
            }
            struct Changed {
                uint64_t offset, base_offset;
                std::string_view base;
            };
            std::vector<Changed> changed;  // each patched against the base's same range, with a margin
            for (uint64_t offset = 0; offset < p.size; offset += seg) {
                const uint64_t n = std::min(seg, p.size - offset);
                const std::string_view have = offset < base.size() ? std::string_view(base).substr(offset, n) : std::string_view();
                if (have == std::string_view(target).substr(offset, n)) continue;
                const auto [base_offset, base_size] = base_range(offset, n, 0, 0, base.size());
                changed.push_back({offset, base_offset, std::string_view(base).substr(base_offset, base_size)});
            }
            std::vector<std::string> encoded(changed.size());
            for (size_t first = 0; first < changed.size(); first += threads) {
                std::vector<std::thread> workers;
                for (size_t k = first; k < std::min(changed.size(), first + threads); ++k)
                    workers.emplace_back([&, k] {
                        const uint64_t offset = changed[k].offset;
                        encoded[k] = updater::encode_section(changed[k].base, std::string_view(target).substr(offset, std::min(seg, p.size - offset)), o.level);
                    });
                for (std::thread& w : workers) w.join();
            }
            uint64_t frames = 0;
            for (const std::string& e : encoded) frames += e.size();
            if (frames < fetch_instead)
                for (size_t k = 0; k < changed.size(); ++k) {
                    const auto& [offset, base_offset, have] = changed[k];
                    const uint64_t n = std::min(seg, p.size - offset);
                    pwrite_exact(frames_fd.get(), encoded[k].data(), encoded[k].size(), at, "a temporary file in " + dir.string());
                    t.sections.push_back(DeltaSection{p.name, offset, n, kind, base_offset, have.size(), at, encoded[k].size()});
                    at += encoded[k].size();
                }
        }
        if (o.progress)
            o.progress(p.name + ": " + std::to_string(t.sections.size() - sections_before) + " of " + std::to_string((p.size + seg - 1) / seg) +
                       " segments patched, " + std::to_string(at - before) + " bytes");
    }

    // The table's size depends on the offsets it names: shift them until it fits exactly.
    uint64_t frames_at = updater::delta_header_size, shift = 0;
    std::string table;
    for (int round = 0;; ++round) {
        for (DeltaSection& sec : t.sections) sec.at += frames_at - shift;
        shift = frames_at;
        table = t.to_json();
        if (updater::delta_header_size + table.size() == frames_at) break;
        if (round == 8) fail(r.file.string() + ": the table's size does not settle");  // cannot happen: sizes only grow, a digit at a time
        frames_at = updater::delta_header_size + table.size();
    }
    const fs::path partial = r.file.string() + ".partial";
    UniqueFd out = open_file(partial, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC);
    struct RemovePartial {
        const fs::path& path;
        bool keep = false;
        ~RemovePartial() {
            std::error_code ec;
            if (!keep) fs::remove(path, ec);
        }
    } cleanup{partial};
    const std::string head = updater::encode_delta_header(table.size()) + table;
    pwrite_exact(out.get(), head.data(), head.size(), 0, partial.string());
    copy_sparse(frames_fd.get(), 0, out.get(), frames_at, at, partial.string());
    if (::fsync(out.get()) != 0) fail_errno("fsync " + partial.string());
    out.reset();
    fs::rename(partial, r.file);
    cleanup.keep = true;
    r.size = frames_at + at;
    return r;
}

}  // namespace cairn::imager
