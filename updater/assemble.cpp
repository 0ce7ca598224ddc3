#include "updater/assemble.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/sha256_blocks.hpp"
#include "updater/error_code.hpp"

namespace cairn::updater {

namespace {

constexpr size_t digest_size = 32;
constexpr size_t window = 4 << 20;  // bytes read, hashed or written at a time

uint64_t key_of(const uint8_t* digest) {
    uint64_t k;
    std::memcpy(&k, digest, sizeof k);
    return k;
}

// Hashes `bytes` of the disk from `offset` in windows, block by block with `salt`, calling
// each(block index, digest) for every block.
template <typename Each>
void scan(const AssembleRequest& r, uint64_t offset, uint64_t bytes, const std::string& what, Each&& each) {
    std::vector<uint8_t> data(window), digests(window / r.block_size * digest_size);
    const uint64_t blocks = bytes / r.block_size;
    for (uint64_t first = 0; first < blocks;) {
        const uint64_t n = std::min<uint64_t>(window / r.block_size, blocks - first);
        pread_exact(r.disk_fd, data.data(), n * r.block_size, offset + first * r.block_size, what);
        sha256_blocks(r.salt, data.data(), r.block_size, n, digests.data());
        for (uint64_t i = 0; i < n; ++i) each(first + i, digests.data() + i * digest_size);
        first += n;
        if (r.advance) r.advance(n * r.block_size);
    }
}

// Writes runs of consecutive target blocks, flushing the disk at least once a second.
class RunWriter {
public:
    explicit RunWriter(const AssembleRequest& r) : r_(r), buffer_(window) {}

    // Room for the next block, which is target block `block`; the caller fills it.
    uint8_t* next(uint64_t block) {
        if (count_ > 0 && (block != first_ + count_ || (count_ + 1) * r_.block_size > buffer_.size())) flush();
        if (count_ == 0) first_ = block;
        return buffer_.data() + (count_++) * r_.block_size;
    }
    // Told each run of blocks [first, end) once it is written.
    std::function<void(uint64_t first, uint64_t end)> written;

    void flush() {
        if (count_ == 0) return;
        pwrite_exact(r_.disk_fd, buffer_.data(), count_ * r_.block_size, r_.target_offset + first_ * r_.block_size,
                     r_.disk_name + " (root)");
        if (r_.advance) r_.advance(count_ * r_.block_size);
        if (written) written(first_, first_ + count_);
        count_ = 0;
        const auto now = std::chrono::steady_clock::now();
        if (now - synced_ >= std::chrono::seconds(1)) {
            if (::fdatasync(r_.disk_fd) != 0) fail_errno("flushing " + r_.disk_name);
            synced_ = now;
        }
    }

private:
    const AssembleRequest& r_;
    std::vector<uint8_t> buffer_;
    uint64_t first_ = 0, count_ = 0;
    std::chrono::steady_clock::time_point synced_ = std::chrono::steady_clock::now();
};

// Takes a fetched run [first, end) of blocks: checks each complete block against its digest and
// writes it; a block that does not match ends the request (take() false) and is fetched again,
// `bad_block_strikes` times at most.
class FetchSink final : public RangeSink {
public:
    FetchSink(const AssembleRequest& r, RunWriter& writer, uint64_t first, uint64_t end)
        : r_(r), writer_(writer), next_(first), end_(end) {}

    uint64_t position() const override { return r_.payload_offset + next_ * r_.block_size; }
    void restart() override { partial_.clear(); }
    bool take(const uint8_t* data, size_t size) override {
        while (size > 0) {
            const size_t need = r_.block_size - partial_.size();
            if (partial_.empty() && size >= r_.block_size) {
                // Whole blocks straight from the transfer's buffer.
                const size_t n = std::min<uint64_t>(size / r_.block_size, end_ - next_);
                if (n == 0) return true;  // more than asked: ignored (the range ends here)
                if (!place(data, n)) return false;
                data += n * r_.block_size;
                size -= n * r_.block_size;
                continue;
            }
            const size_t n = std::min(need, size);
            partial_.insert(partial_.end(), data, data + n);
            data += n;
            size -= n;
            if (partial_.size() == r_.block_size) {
                if (next_ >= end_) return true;
                const bool ok = place(partial_.data(), 1);
                partial_.clear();
                if (!ok) return false;
            }
        }
        return true;
    }

private:
    bool place(const uint8_t* data, size_t n) {
        digests_.resize(n * digest_size);
        sha256_blocks(r_.salt, data, r_.block_size, n, digests_.data());
        for (size_t i = 0; i < n; ++i, ++next_) {
            if (std::memcmp(digests_.data() + i * digest_size, r_.digests + next_ * digest_size, digest_size) != 0) {
                if (++strikes_[next_] >= r_.bad_block_strikes)
                    fail_update(ErrorCode::bad_payload, "payload " + r_.payload_name + ": block " + std::to_string(next_) +
                                                            " came " + std::to_string(r_.bad_block_strikes) +
                                                            " times different from its signed hash (corrupted or altered bundle)");
                return false;
            }
            std::memcpy(writer_.next(next_), data + i * r_.block_size, r_.block_size);
        }
        return true;
    }

    const AssembleRequest& r_;
    RunWriter& writer_;
    uint64_t next_, end_;
    std::vector<uint8_t> partial_, digests_;
    std::map<uint64_t, int> strikes_;
};

// Takes fetched pieces [first, end) of a payload cut in `size`-byte pieces (the last shorter):
// each piece, once complete, goes to take(i, bytes), which checks it; one it refuses ends the
// request and is fetched again, `strikes` times at most (then bad-payload: `what` N came ...).
class CheckedSink final : public RangeSink {
public:
    CheckedSink(uint64_t base, uint64_t size, uint64_t total, uint64_t first, uint64_t end,
                const std::function<bool(uint64_t, std::string_view)>& take, int strikes, std::string what)
        : base_(base), size_(size), total_(total), next_(first), end_(end), take_(take), strikes_allowed_(strikes), what_(std::move(what)) {}
    uint64_t position() const override { return base_ + next_ * size_; }
    void restart() override { partial_.clear(); }
    bool take(const uint8_t* data, size_t n) override {
        while (n > 0 && next_ < end_) {
            const size_t want = static_cast<size_t>(std::min<uint64_t>(size_, total_ - next_ * size_));
            const size_t k = std::min(n, want - partial_.size());
            partial_.append(reinterpret_cast<const char*>(data), k);
            data += k;
            n -= k;
            if (partial_.size() < want) break;
            const bool ok = take_(next_, partial_);
            partial_.clear();
            if (!ok) {
                if (++strikes_[next_] >= strikes_allowed_)
                    fail_update(ErrorCode::bad_payload, what_ + " " + std::to_string(next_) + " came " + std::to_string(strikes_allowed_) +
                                                            " times different from its signed hash (corrupted or altered bundle); "
                                                            "none of it was written");
                return false;
            }
            ++next_;
        }
        return true;
    }

private:
    uint64_t base_, size_, total_, next_, end_;
    const std::function<bool(uint64_t, std::string_view)>& take_;
    int strikes_allowed_;
    std::string what_;
    std::string partial_;
    std::map<uint64_t, int> strikes_;
};

}  // namespace

AssembleStats assemble_root(const AssembleRequest& r) {
    AssembleStats stats;
    const std::string target_name = r.disk_name + " (root)";
    std::vector<bool> done(r.blocks, false);
    auto expected = [&](uint64_t i) { return r.digests + i * digest_size; };

    // In place: what the target already holds where it belongs; with `scan_groups`, only in the
    // groups whose hash block the target's tree already held (no other group can have been
    // written by an earlier try of this bundle: the tree goes first).
    if (r.say) r.say("checking what the slot already holds");
    for (uint64_t first = 0; first < r.blocks;) {
        uint64_t end = r.blocks;
        if (r.scan_groups) {
            const uint64_t g = first / r.group_blocks;
            if (g >= r.scan_groups->size() || !(*r.scan_groups)[g]) {
                first = (g + 1) * r.group_blocks;
                if (r.advance) r.advance(std::min(first, r.blocks) * r.block_size - std::min(g * r.group_blocks, r.blocks) * r.block_size);
                continue;
            }
            uint64_t h = g + 1;
            while (h < r.scan_groups->size() && (*r.scan_groups)[h]) ++h;
            end = std::min(r.blocks, h * r.group_blocks);
        }
        scan(r, r.target_offset + first * r.block_size, (end - first) * r.block_size, target_name, [&](uint64_t i, const uint8_t* d) {
            if (std::memcmp(d, expected(first + i), digest_size) == 0) {
                done[first + i] = true;
                ++stats.in_place;
            }
        });
        first = end;
    }

    std::vector<uint8_t> zero_block(r.block_size, 0);
    uint8_t zero_digest[digest_size];
    sha256_blocks(r.salt, zero_block.data(), r.block_size, 1, zero_digest);

    // The running slot's blocks the new root wants (by the first 8 bytes of their digest; a copy
    // is checked in full before it is written).
    std::vector<uint64_t> wanted;
    for (uint64_t i = 0; i < r.blocks; ++i)
        if (!done[i] && std::memcmp(expected(i), zero_digest, digest_size) != 0) wanted.push_back(key_of(expected(i)));
    std::sort(wanted.begin(), wanted.end());
    wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
    std::vector<std::pair<uint64_t, uint64_t>> found;  // key, running block
    if (r.running && !wanted.empty()) {
        if (r.say) r.say("indexing the running slot");
        scan(r, r.running->first, r.running->second, r.disk_name + " (running root)", [&](uint64_t j, const uint8_t* d) {
            const uint64_t k = key_of(d);
            if (std::binary_search(wanted.begin(), wanted.end(), k)) found.emplace_back(k, j);
        });
        std::sort(found.begin(), found.end());
        found.erase(std::unique(found.begin(), found.end(), [](const auto& x, const auto& y) { return x.first == y.first; }), found.end());
    }

    // Zeros and copies, in target order; what is left is fetched.
    if (r.say) r.say("placing blocks");
    RunWriter writer(r);
    std::vector<std::pair<uint64_t, uint64_t>> missing;  // runs [first, end)
    std::vector<uint8_t> block(r.block_size);
    uint8_t digest[digest_size];
    for (uint64_t i = 0; i < r.blocks; ++i) {
        if (done[i]) continue;
        bool placed = false;
        if (std::memcmp(expected(i), zero_digest, digest_size) == 0) {
            std::memset(writer.next(i), 0, r.block_size);
            ++stats.zeros;
            placed = true;
        } else {
            auto it = std::lower_bound(found.begin(), found.end(), std::pair<uint64_t, uint64_t>{key_of(expected(i)), 0});
            if (it != found.end() && it->first == key_of(expected(i))) {
                pread_exact(r.disk_fd, block.data(), r.block_size, r.running->first + it->second * r.block_size,
                            r.disk_name + " (running root)");
                sha256_blocks(r.salt, block.data(), r.block_size, 1, digest);
                if (std::memcmp(digest, expected(i), digest_size) == 0) {
                    std::memcpy(writer.next(i), block.data(), r.block_size);
                    ++stats.copied;
                    placed = true;
                }
            }
        }
        if (placed) {
            done[i] = true;
            continue;
        }
        if (!missing.empty() && missing.back().second + r.merge_gap >= i) {
            stats.fetched_extra += i - missing.back().second;
            missing.back().second = i + 1;
        } else {
            missing.emplace_back(i, i + 1);
        }
    }
    writer.flush();

    // While blocks arrive, the disk is flushed once a second from a thread of its own, so that a
    // power cut during a stalled or slow transfer loses at most a second of checked blocks.
    std::mutex sync_mutex;
    std::condition_variable sync_wake;
    bool fetching_done = false;
    std::jthread syncer([&] {
        std::unique_lock lock(sync_mutex);
        while (!sync_wake.wait_for(lock, std::chrono::seconds(1), [&] { return fetching_done; })) ::fdatasync(r.disk_fd);
    });
    struct StopSyncer {
        std::mutex& m;
        std::condition_variable& cv;
        bool& done;
        ~StopSyncer() {
            {
                std::lock_guard lock(m);
                done = true;
            }
            cv.notify_all();
        }
    } stop_syncer{sync_mutex, sync_wake, fetching_done};

    if (r.planned) {
        AssembleStats plan = stats;
        for (const auto& [first, end] : missing) plan.fetched += end - first;
        plan.ranges = missing.size();
        r.planned(plan);
    }
    if (!missing.empty() && !r.remote) fail("payload " + r.payload_name + ": blocks are missing and there is no source to fetch them from");
    // How far the root is final, for a reader verifying behind (final_blocks): everything before
    // the first run still being fetched, and of that run what was written in order.
    size_t first_open = 0;
    std::vector<uint64_t> written_to(missing.size());
    for (size_t k = 0; k < missing.size(); ++k) written_to[k] = missing[k].first;
    auto announce = [&] {
        while (first_open < missing.size() && written_to[first_open] >= missing[first_open].second) ++first_open;
        if (r.final_blocks) r.final_blocks(first_open < missing.size() ? written_to[first_open] : r.blocks);
    };
    writer.written = [&](uint64_t first, uint64_t end) {
        auto it = std::upper_bound(missing.begin(), missing.end(), first, [](uint64_t f, const auto& run) { return f < run.first; });
        if (it == missing.begin()) return;
        const size_t k = static_cast<size_t>(it - missing.begin()) - 1;
        if (first != written_to[k] || first >= missing[k].second) return;
        written_to[k] = std::min(end, missing[k].second);
        if (k == first_open) announce();
    };
    announce();

    // In batches, several runs to a request where the source can (HTTP multi-range): on a link
    // with a long round trip, a thousand scattered runs are then a few dozen round trips.
    constexpr size_t batch = 256;
    for (size_t m = 0; m < missing.size(); m += batch) {
        const size_t e = std::min(missing.size(), m + batch);
        if (r.say) r.say("fetching blocks " + std::to_string(missing[m].first) + "-" + std::to_string(missing[e - 1].second - 1));
        std::vector<FetchSink> sinks;
        sinks.reserve(e - m);
        std::vector<RangeSource::Run> runs;
        for (size_t k = m; k < e; ++k) {
            sinks.emplace_back(r, writer, missing[k].first, missing[k].second);
            runs.push_back({r.payload_offset + missing[k].second * r.block_size, &sinks.back()});
        }
        try {
            r.remote->fetch_many(runs);
        } catch (...) {
            // What was checked is kept: the next attempt (after a reboot, say) finds it in place.
            try {
                writer.flush();
            } catch (const std::exception&) {  // the failure that matters is the first
            }
            throw;
        }
        writer.flush();
        for (size_t k = m; k < e; ++k) stats.fetched += missing[k].second - missing[k].first;
        stats.ranges += e - m;
    }
    stats.fetched -= stats.fetched_extra;
    writer.written = nullptr;
    if (r.final_blocks) r.final_blocks(r.blocks);
    return stats;
}

std::string assemble_chunked(const ChunkedRequest& r, AssembleStats& stats) {
    const Payload& p = *r.payload;
    const uint64_t size = p.chunk_size;
    const uint64_t count = (p.size + size - 1) / size;
    auto length = [&](uint64_t i) { return static_cast<size_t>(std::min<uint64_t>(size, p.size - i * size)); };
    auto digest = [&](uint64_t i) { return std::string_view(p.chunks).substr(i * 64, 64); };
    std::string out(p.size, '\0');
    std::vector<bool> have(count, false);
    auto take = [&](uint64_t i, std::string_view bytes) {
        if (bytes.size() != length(i) || to_hex(sha256(bytes)) != digest(i)) return false;
        std::memcpy(out.data() + i * size, bytes.data(), bytes.size());
        have[i] = true;
        if (r.advance) r.advance(bytes.size());
        return true;
    };

    // In place.
    if (r.target.second >= p.size) {
        std::string held(p.size, '\0');
        pread_exact(r.disk_fd, held.data(), held.size(), r.target.first, r.disk_name);
        for (uint64_t i = 0; i < count; ++i)
            if (take(i, std::string_view(held).substr(i * size, length(i)))) ++stats.in_place;
    }
    // Elsewhere: the target partition and the running slot's, chunk-aligned, as far as the new
    // payload reaches (a new build moves the UKI's unchanged parts by whole clusters; both ESPs
    // hold the last release's, one of them with the other slot's command line).
    std::map<std::string, uint64_t, std::less<>> wanted;  // digest -> disk offset (UINT64_MAX: not found)
    for (uint64_t i = 0; i < count; ++i)
        if (!have[i]) wanted.emplace(std::string(digest(i)), UINT64_MAX);
    std::vector<std::pair<uint64_t, uint64_t>> places = {r.target};
    if (r.running) places.push_back(*r.running);
    std::string chunk(size, '\0');
    for (const auto& [offset, bytes] : places) {
        for (uint64_t at = 0; !wanted.empty() && at + size <= std::min<uint64_t>(bytes, p.size); at += size) {
            pread_exact(r.disk_fd, chunk.data(), size, offset + at, r.disk_name);
            auto it = wanted.find(to_hex(sha256(chunk)));
            if (it != wanted.end() && it->second == UINT64_MAX) it->second = offset + at;
        }
    }
    for (uint64_t i = 0; i < count; ++i) {
        if (have[i]) continue;
        auto it = wanted.find(digest(i));
        if (it == wanted.end() || it->second == UINT64_MAX) continue;
        chunk.resize(length(i));
        pread_exact(r.disk_fd, chunk.data(), chunk.size(), it->second, r.disk_name);
        if (take(i, chunk)) ++stats.copied;
        chunk.resize(size);
    }
    // The rest, by ranges of missing chunks, each chunk checked as it completes.
    const std::function<bool(uint64_t, std::string_view)> take_fetched = take;
    std::vector<CheckedSink> sinks;
    std::vector<RangeSource::Run> runs;
    sinks.reserve(count);
    for (uint64_t i = 0; i < count;) {
        if (have[i]) {
            ++i;
            continue;
        }
        uint64_t end = i + 1;
        while (end < count && !have[end]) ++end;
        if (!r.remote) fail(r.what + ": chunks are missing and there is no source to fetch them from");
        sinks.emplace_back(p.offset, size, p.size, i, end, take_fetched, r.bad_chunk_strikes, r.what + ": chunk");
        runs.push_back({std::min(p.offset + end * size, p.offset + p.size), &sinks.back()});
        stats.fetched += end - i;
        ++stats.ranges;
        i = end;
    }
    if (!runs.empty()) r.remote->fetch_many(runs);
    if (to_hex(sha256(out)) != p.sha256)
        fail_update(ErrorCode::bad_payload, r.what + ": its chunks are as signed but the whole is not (a manifest whose chunk index "
                                                     "does not describe the payload); none of it was written");
    return out;
}

std::string assemble_tree(const TreeRequest& r, AssembleStats& stats) {
    const Payload& t = *r.tree;
    const uint64_t hbs = t.hash_block_size, per = hbs / digest_size;
    std::vector<uint64_t> counts;  // hash blocks per level, level 0 first
    for (uint64_t n = t.data_blocks; n > 1 || counts.empty();) {
        n = (n + per - 1) / per;
        counts.push_back(n);
        if (n == 1) break;
    }
    uint64_t needed = hbs;
    for (uint64_t c : counts) needed += c * hbs;
    auto fetch_whole = [&]() {
        std::string out;
        CheckedSink sink(t.offset, t.size, t.size, 0, 1, [&](uint64_t, std::string_view bytes) {
            if (to_hex(sha256(bytes)) != t.sha256) return false;
            out = bytes;
            return true;
        }, r.bad_block_strikes, r.what);
        r.remote->fetch(t.offset + t.size, sink);
        if (r.advance) r.advance(t.size);
        return out;
    };
    if (t.data_blocks < 2 || t.size != needed || r.target_size < t.size) return fetch_whole();

    // Levels top first after the superblock: level k starts at hbs * (1 + the blocks above it).
    std::vector<uint64_t> start(counts.size());
    uint64_t at = hbs;
    for (size_t k = counts.size(); k-- > 0;) {
        start[k] = at;
        at += counts[k] * hbs;
    }
    std::string out(t.size, '\0');
    pread_exact(r.disk_fd, out.data(), out.size(), r.target_offset, r.disk_name);
    const std::vector<uint8_t> salt = from_hex(t.salt, r.what + ": salt");
    const std::vector<uint8_t> root = from_hex(t.root_hash, r.what + ": root hash");
    uint8_t digest[digest_size];
    for (size_t k = counts.size(); k-- > 0;) {
        // What block j of level k must hash to: the level above's entry j, or the signed root hash.
        auto expected = [&](uint64_t j) -> const uint8_t* {
            return k + 1 == counts.size() ? root.data() : reinterpret_cast<const uint8_t*>(out.data()) + start[k + 1] + j * digest_size;
        };
        auto check = [&](uint64_t j, std::string_view bytes) {
            sha256_blocks(salt, reinterpret_cast<const uint8_t*>(bytes.data()), hbs, 1, digest);
            if (std::memcmp(digest, expected(j), digest_size) != 0) return false;
            std::memcpy(out.data() + start[k] + j * hbs, bytes.data(), hbs);
            if (r.advance) r.advance(hbs);
            return true;
        };
        std::vector<uint64_t> missing;
        if (k == 0 && r.level0_in_place) r.level0_in_place->assign(counts[0], false);
        for (uint64_t j = 0; j < counts[k]; ++j) {
            if (check(j, std::string_view(out).substr(start[k] + j * hbs, hbs))) {
                ++stats.in_place;
                if (k == 0 && r.level0_in_place) (*r.level0_in_place)[j] = true;
            } else {
                missing.push_back(j);
            }
        }
        const std::function<bool(uint64_t, std::string_view)> take = check;
        std::vector<CheckedSink> sinks;
        std::vector<RangeSource::Run> runs;
        sinks.reserve(missing.size());
        for (size_t m = 0; m < missing.size();) {
            size_t e = m + 1;
            while (e < missing.size() && missing[e] == missing[e - 1] + 1) ++e;
            sinks.emplace_back(t.offset + start[k], hbs, counts[k] * hbs, missing[m], missing[e - 1] + 1, take, r.bad_block_strikes,
                               r.what + ": hash block");
            runs.push_back({t.offset + start[k] + (missing[e - 1] + 1) * hbs, &sinks.back()});
            stats.fetched += e - m;
            ++stats.ranges;
            m = e;
        }
        if (!runs.empty()) r.remote->fetch_many(runs);  // a level at a time: each is checked against the one above
    }
    // The superblock is outside the hash chain: the one in place is kept if the whole then is the
    // signed payload (it is when the release's tree parameters did not change), else fetched.
    if (to_hex(sha256(out)) != t.sha256) {
        std::string block;
        CheckedSink sink(t.offset, hbs, hbs, 0, 1, [&](uint64_t, std::string_view bytes) {
            block = bytes;
            return true;
        }, r.bad_block_strikes, r.what);
        r.remote->fetch(t.offset + hbs, sink);
        ++stats.fetched;
        out.replace(0, hbs, block);
        if (to_hex(sha256(out)) != t.sha256)
            fail_update(ErrorCode::bad_payload, r.what + ": its hash blocks give the signed root hash but the whole is not the signed "
                                                         "payload (a tree with other parameters or padding); none of it was written");
    }
    return out;
}

}  // namespace cairn::updater
