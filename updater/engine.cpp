#include "updater/engine.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/text.hpp"
#include "common/units.hpp"
#include "imager/verity.hpp"
#include "partitions/disk.hpp"
#include "updater/assemble.hpp"
#include "updater/delta.hpp"
#include "updater/signature.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

int64_t system_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Region {
    uint64_t offset = 0, size = 0;
    std::string label;
};

struct SlotRegions {
    Region esp, root, verity;
};

SlotRegions regions_of(const fs::path& disk, Slot slot) {
    using partitions::Role;
    const partitions::DiskTable table = partitions::read_primary_gpt(disk);
    auto region = [&](Role role) {
        const partitions::FoundPartition p = partitions::get_role(table, role, slot_letter(slot), disk.string());
        return Region{p.entry.offset, p.entry.size, p.entry.label};
    };
    return SlotRegions{region(Role::Esp), region(Role::Root), region(Role::RootVerity)};
}

// The sha256 of [offset, offset + size) in `fd`. Reads whole blocks of `alignment` bytes, so that
// `fd` may be an O_DIRECT descriptor (offset aligned; the last block may then reach past `size`,
// never past the partition, which the layout aligns to 1 MiB); 1 reads exactly the region.
std::string sha256_region(int fd, uint64_t offset, uint64_t size, const std::string& what, uint64_t alignment) {
    Sha256 h;
    AlignedBuffer buffer(1 << 20);
    for (uint64_t done = 0; done < size;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - done));
        pread_exact(fd, buffer.data(), (n + alignment - 1) / alignment * alignment, offset + done, what);
        h.update(buffer.data(), n);
        done += n;
    }
    return to_hex(h.final());
}

// Copies payloads from the bundle into the slot's partitions. Whole aligned chunks go to the device
// with O_DIRECT when it takes it: they reach the disk as they are written, so progress means what
// it says, the verification behind the writer reads the disk and not a cached copy, and no dirty
// pages pile up for the flush to push out afterwards (slow and erratic on a small device). A
// payload's unaligned tail, and everything where the filesystem refuses O_DIRECT (a disk image
// on tmpfs), goes through the ordinary descriptor.
//
// Two chunks are in flight: even chunks are copied by the calling thread, odd ones by a second
// thread, each with its own buffer, so that the device always has the next write queued while one
// completes (a disk with one O_DIRECT write at a time waits on each; two cut 256 MiB on a direct-I/O
// loop device from 0.20 s to 0.16 s). A chunk starts only once every chunk two before it is on the
// disk, and written(n) is called in order, for the prefix that is on the disk, one call at a time.
class SlotWriter {
public:
    static constexpr size_t chunk = 4 << 20;

    SlotWriter(std::string disk_name, int direct_fd, int buffered_fd)
        : name_(std::move(disk_name)), direct_(direct_fd), buffered_(buffered_fd), buffers_{AlignedBuffer(chunk), AlignedBuffer(chunk)} {}

    // Copies size bytes at `from` in src to `to` on the disk; written(n) after each chunk, in order.
    void write(int src, uint64_t from, uint64_t size, uint64_t to, const std::string& label,
               const std::function<void(uint64_t)>& written) {
        Copy copy{src, from, size, to, name_ + " (" + label + ")", written, (size + chunk - 1) / chunk};
        {
            std::jthread second;
            if (copy.chunks > 1) second = std::jthread([&] { lane(copy, 1); });
            lane(copy, 0);
        }
        if (copy.error) std::rethrow_exception(copy.error);
    }

private:
    struct Copy {
        int src;
        uint64_t from, size, to;
        std::string what;
        const std::function<void(uint64_t)>& written;
        uint64_t chunks;
        std::mutex mutex;
        std::condition_variable moved;
        uint64_t reported = 0;     // chunks [0, reported) are on the disk and reported
        bool next_done = false;    // chunk `reported` + 1 is on the disk too
        std::exception_ptr error;  // the first failure; both lanes stop at it
    };

    void lane(Copy& c, unsigned parity) {
        AlignedBuffer& buffer = buffers_[parity];
        constexpr uint64_t alignment = AlignedBuffer::alignment;
        try {
            for (uint64_t k = parity; k < c.chunks; k += 2) {
                {
                    std::unique_lock lock(c.mutex);
                    c.moved.wait(lock, [&] { return c.error || c.reported + 1 >= k; });
                    if (c.error) return;
                }
                const uint64_t at = k * chunk;
                const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, c.size - at));
                // The bundle cut short since it was checked is a bad bundle; an errno is io.
                with_code(ErrorCode::bad_bundle, [&] { pread_exact(c.src, buffer.data(), n, c.from + at, "the bundle"); });
                const size_t aligned = direct_ >= 0 && (c.to + at) % alignment == 0 ? n / alignment * alignment : 0;
                if (aligned > 0) pwrite_exact(direct_, buffer.data(), aligned, c.to + at, c.what);
                if (aligned < n) pwrite_exact(buffered_, buffer.data() + aligned, n - aligned, c.to + at + aligned, c.what);

                std::lock_guard lock(c.mutex);
                if (c.error) return;
                if (k == c.reported + 1) {
                    c.next_done = true;  // reported with the chunk before it
                    continue;
                }
                auto report = [&](uint64_t chunk_index) {
                    ++c.reported;
                    c.written(std::min<uint64_t>(chunk, c.size - chunk_index * chunk));
                };
                report(k);
                if (c.next_done) {
                    c.next_done = false;
                    report(k + 1);
                }
                c.moved.notify_all();
            }
        } catch (...) {
            std::lock_guard lock(c.mutex);
            if (!c.error) c.error = std::current_exception();
            c.moved.notify_all();
        }
    }

    std::string name_;
    int direct_, buffered_;
    AlignedBuffer buffers_[2];
};

// How far the writer has gone into a partition, for the verification that reads behind it.
class Frontier {
public:
    void advance(uint64_t by) {
        std::lock_guard lock(mutex_);
        at_ += by;
        moved_.notify_all();
    }
    // [0, to) is written (never lowers it).
    void reach(uint64_t to) {
        std::lock_guard lock(mutex_);
        at_ = std::max(at_, to);
        moved_.notify_all();
    }
    // Nothing more will be written (the writer finished or gave up): waits beyond fail.
    void close() {
        std::lock_guard lock(mutex_);
        closed_ = true;
        moved_.notify_all();
    }
    // Returns once [0, end) is written; throws if the writer stopped before.
    void wait_for(uint64_t end) {
        std::unique_lock lock(mutex_);
        moved_.wait(lock, [&] { return at_ >= end || closed_; });
        if (at_ < end)
            fail("the verification needs " + std::to_string(end) + " bytes of the root, but only " + std::to_string(at_) +
                 " were written");
    }

private:
    std::mutex mutex_;
    std::condition_variable moved_;
    uint64_t at_ = 0;
    bool closed_ = false;
};

// The bundle's tree is what the signed manifest says: its superblock has the hash type (1) and
// algorithm (sha256) of bundle format 1 and the manifest's block sizes, data blocks and salt; its
// payload holds the whole tree; it covers exactly the root payload. verity::verify() goes by the
// superblock, so without this a tree over part of the root (or with another salt) would pass as
// long as it gave the manifest's root hash.
void check_tree(int fd, uint64_t offset, const Payload& tree, const Payload& root, const std::string& what) {
    const std::string where = what + ": payload " + tree.name;
    if (tree.size < verity::superblock_size) fail(where + " holds " + std::to_string(tree.size) + " bytes, less than a superblock");
    const verity::Superblock sb = verity::read_superblock(fd, offset, where);
    auto differs = [&](const std::string& field, const std::string& tree_says, const std::string& manifest_says) {
        fail(where + ": the tree's superblock says " + field + " " + tree_says + ", the signed manifest " + manifest_says);
    };
    if (sb.hash_type != 1) differs("hash type", std::to_string(sb.hash_type), "1 (bundle format 1)");
    if (sb.algorithm != "sha256") differs("hash algorithm", "\"" + sb.algorithm + "\"", "sha256 (bundle format 1)");
    if (sb.data_block_size != tree.data_block_size)
        differs("data block size", std::to_string(sb.data_block_size), std::to_string(tree.data_block_size));
    if (sb.hash_block_size != tree.hash_block_size)
        differs("hash block size", std::to_string(sb.hash_block_size), std::to_string(tree.hash_block_size));
    if (sb.data_blocks != tree.data_blocks) differs("data blocks", std::to_string(sb.data_blocks), std::to_string(tree.data_blocks));
    if (to_hex(sb.salt) != tree.salt) differs("salt", to_hex(sb.salt), tree.salt);
    const uint64_t covered = checked_mul(sb.data_blocks, sb.data_block_size, where + ": data blocks × data block size");
    if (covered != root.size)
        fail(where + ": the tree covers " + std::to_string(covered) + " bytes, the root payload " + root.name + " has " +
             std::to_string(root.size));
    const verity::Params params{tree.data_block_size, tree.hash_block_size, tree.data_blocks, sb.salt, {}};
    const uint64_t needed = verity::hash_device_size(params);
    if (tree.size < needed)
        fail(where + " holds " + std::to_string(tree.size) + " bytes; a tree over " + std::to_string(tree.data_blocks) +
             " data blocks needs " + std::to_string(needed));
}

// Files the user changed in /etc (present, or deleted, in the overlay's upper directory).
std::vector<std::string> user_changed_etc(const fs::path& upper) {
    std::vector<std::string> out;
    std::error_code ec;
    if (!fs::is_directory(upper, ec)) return out;
    for (auto it = fs::recursive_directory_iterator(upper, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_directory(ec)) continue;
        out.push_back("/etc/" + fs::relative(it->path(), upper).string());
    }
    return out;
}

}  // namespace

Release Release::load(const fs::path& file) {
    Release r;
    try {
        json j = json::parse(read_file(file));
        r.compatible = j.at("compatible");
        r.version = j.at("version");
        r.build_id = j.value("build_id", "");
        r.created = j.value("created", int64_t{0});
        if (j.contains("health_check")) r.health_check = j["health_check"].get<std::vector<std::string>>();
        if (j.contains("etc")) r.etc = j["etc"].get<std::map<std::string, std::string>>();
    } catch (const json::exception& e) {
        fail(file.string() + ": " + e.what());
    }
    return r;
}

Engine::Engine(BootControl& boot, EngineConfig config) : boot_(boot), config_(std::move(config)) {}

int64_t Engine::now() const { return config_.clock ? config_.clock() : system_now(); }

UpdateStatus Engine::status() const {
    std::lock_guard lock(mutex_);
    UpdateStatus st;
    if (unsaved_) {
        st = *unsaved_;
    } else {
        const fs::path& file = config_.state_file;
        try {
            st = load_status(file);
        } catch (const std::exception& e) {
            // Damaged (DamagedStatus), or unreadable (an I/O error, a directory in its place): set it
            // aside so that a fresh record can be written, and work from what the firmware says.
            std::string where;
            try {
                where = "moved to " + set_aside_damaged(file).filename().string();
            } catch (const std::exception& x) {
                where = std::string("left in place: ") + x.what();
            }
            std::fprintf(stderr, "cairn-updated: %s; %s; rebuilding the update state from the boot variables\n", e.what(), where.c_str());
            st = rebuild(std::string(e.what()) + "; " + where);
            try {
                save_status(file, st);
                save_error_.clear();
            } catch (const std::exception& x) {
                save_error_ = std::string("cannot save the update status: ") + x.what();
                std::fprintf(stderr, "cairn-updated: %s; keeping it in memory, retrying at the next change\n", save_error_.c_str());
                unsaved_ = st;
            }
        }
    }
    st.save_error = save_error_;
    return st;
}

// What the boot control knows: the booted slot runs this release; a slot in BootOrder boots (good);
// a slot only in BootNext is an armed install waiting for its trial boot (taken to be from this
// boot, so it is not called a rollback before the reboot); any other slot is out of the boot order (bad).
UpdateStatus Engine::rebuild(const std::string& why) const {
    UpdateStatus st;
    const Slot booted = boot_.booted();
    const std::vector<Slot> order = boot_.order();
    const std::optional<Slot> next = boot_.next();
    for (Slot s : {Slot::a, Slot::b}) {
        const std::string n(1, slot_letter(s));
        const bool in_order = std::find(order.begin(), order.end(), s) != order.end();
        if (s == booted) {
            const bool trial = !order.empty() && order.front() != booted;
            st.slots[n] = SlotRecord{trial ? SlotState::trial : SlotState::good, config_.release.version, config_.release.build_id, now()};
        } else if (in_order) {
            st.slots[n] = SlotRecord{SlotState::good, "", "", now()};
        } else if (next == s) {
            st.slots[n] = SlotRecord{SlotState::trial, "", "", now()};
            st.pending = Pending{n, "", PendingPhase::armed, boot_id()};
        } else {
            st.slots[n] = SlotRecord{SlotState::bad, "", "", now()};
        }
    }
    st.last = Event{EventKind::state_rebuilt, std::string(1, slot_letter(booted)), config_.release.version, why, now(), std::nullopt};
    return st;
}

void Engine::save(const UpdateStatus& changed, Durability durability) {
    UpdateStatus st = changed;
    st.save_error.clear();
    std::lock_guard lock(mutex_);
    try {
        save_status(config_.state_file, st);
        unsaved_.reset();
        save_error_.clear();
    } catch (const std::exception& e) {
        save_error_ = std::string("cannot save the update status: ") + e.what();
        if (durability == Durability::essential) fail_update(ErrorCode::save_failed, save_error_);
        std::fprintf(stderr, "cairn-updated: %s; keeping it in memory, retrying at the next change\n", save_error_.c_str());
        unsaved_ = st;
    }
}

std::string Engine::boot_id() const {
    std::error_code ec;
    if (!fs::exists(config_.boot_id_file, ec)) return "";
    return trim_end(read_file(config_.boot_id_file));
}

namespace {

constexpr std::pair<InstallStep, std::string_view> step_names[] = {
    {InstallStep::check, "check"}, {InstallStep::verify, "verify"}, {InstallStep::mark_bad, "mark-bad"},
    {InstallStep::write, "write"}, {InstallStep::arm, "arm"},
};
constexpr std::pair<MarkState, std::string_view> mark_names[] = {{MarkState::good, "good"}, {MarkState::bad, "bad"}, {MarkState::active, "active"}};

// An install's progress: each step has a weight (the work it does, in bytes read or written), and
// the percentage is the weighted sum of the steps done and the part of the current one. It never
// goes back, stays below 100 until finish(), and a repeat of the same percentage and message is
// not reported again. Writer and read-back threads advance it at once: one caller at a time.
class Progress {
public:
    explicit Progress(const ProgressFn& report) : report_(report) {}

    // The weights, once the bundle is known; until then everything is 0 %.
    void plan(const std::map<InstallStep, uint64_t>& weights) {
        std::lock_guard lock(mutex_);
        weights_ = weights;
        total_ = 0;
        for (const auto& [step, w] : weights_) total_ += w;
        base_ = before(step_);
    }
    void begin(InstallStep step, const std::string& detail) {
        std::lock_guard lock(mutex_);
        step_ = step;
        base_ = before(step);
        in_step_ = 0;
        detail_ = detail;
        report();
    }
    // `units` more of the current step's work done; a new detail when given.
    void advance(uint64_t units, const std::string& detail = {}) {
        std::lock_guard lock(mutex_);
        in_step_ += units;
        if (!detail.empty()) detail_ = detail;
        report();
    }
    void say(const std::string& detail) { advance(0, detail); }
    void finish(const std::string& detail) {
        std::lock_guard lock(mutex_);
        detail_ = detail;
        percent_ = 100;
        if (report_) report_(100, message());
    }

private:
    uint64_t before(InstallStep step) const {
        uint64_t sum = 0;
        for (const auto& [s, w] : weights_)
            if (s < step) sum += w;
        return sum;
    }
    uint64_t weight(InstallStep step) const {
        auto it = weights_.find(step);
        return it == weights_.end() ? 0 : it->second;
    }
    std::string message() const { return std::string(install_step_name(step_)) + ": " + detail_; }
    void report() {
        int p = percent_;
        if (total_ > 0) {
            const uint64_t done = base_ + std::min(in_step_, weight(step_));
            p = std::max(p, static_cast<int>(std::min<uint64_t>(99, static_cast<uint64_t>(100.0 * static_cast<double>(done) / static_cast<double>(total_)))));
        }
        const std::string m = message();
        if (p == percent_ && m == reported_) return;
        percent_ = p;
        reported_ = m;
        if (report_) report_(p, m);
    }

    const ProgressFn& report_;
    std::mutex mutex_;
    std::map<InstallStep, uint64_t> weights_;
    uint64_t total_ = 0, base_ = 0, in_step_ = 0;
    InstallStep step_ = InstallStep::check;
    std::string detail_, reported_;
    int percent_ = 0;
};

// The last word on a written slot, from what was read back off the disk: the ESP's sha256 and the
// root verified against its tree, whose root hash must be the signed one.
void check_read_back(const std::string& disk_name, const std::string& t, const Region& esp_region, const std::string& esp_read_back,
                     const Payload& esp, const verity::VerifyResult& vr, const Payload& verity) {
    if (esp_read_back != esp.sha256) fail_update(ErrorCode::verify_failed, disk_name + ": " + esp_region.label + " read back wrong");
    if (!vr.ok) fail_update(ErrorCode::verify_failed, disk_name + ": slot " + t + " read back wrong: " + vr.problem);
    if (to_hex(vr.root_hash) != verity.root_hash)
        fail_update(ErrorCode::verify_failed,
                    disk_name + ": slot " + t + " read back with root hash " + to_hex(vr.root_hash) + ", expected " + verity.root_hash);
}

// How far a reader has come through a region, from the ends it asks for (verity::verify's
// wait_for_data, from several threads, not in order): the progress it adds.
class ReadBack {
public:
    uint64_t reached(uint64_t end) {
        std::lock_guard lock(mutex_);
        if (end <= at_) return 0;
        const uint64_t more = end - at_;
        at_ = end;
        return more;
    }

private:
    std::mutex mutex_;
    uint64_t at_ = 0;
};

// Reads a slot back behind its writer, on a thread of its own: the ESP by its sha256, then the
// root against the tree already written (verity::verify), as far as frontier() says the root is
// written; through `read_fd` (O_DIRECT where the disk takes it: the disk, not a cached copy).
class SlotReader {
public:
    SlotReader(int read_fd, int disk_fd, const SlotRegions& regions, const Payload& esp, const std::string& disk_name, Progress& progress)
        : thread_([this, read_fd, disk_fd, &regions, &esp, disk_name, &progress] {
              try {
                  esp_sha256_ = sha256_region(read_fd, regions.esp.offset, esp.size, disk_name, AlignedBuffer::alignment);
                  progress.advance(esp.size);
                  root_ = verity::verify(read_fd, regions.root.offset, disk_fd, regions.verity.offset, 0, [&](uint64_t end) {
                      frontier_.wait_for(end);
                      progress.advance(read_.reached(end));
                  });
              } catch (...) {
                  error_ = std::current_exception();
              }
          }) {}
    ~SlotReader() { frontier_.close(); }  // a reader still waiting stops (the thread is joined after)
    Frontier& frontier() { return frontier_; }
    // Waits for the reader (the writer closed the frontier); rethrows what it failed with.
    void finish() {
        frontier_.close();
        if (thread_.joinable()) thread_.join();
        if (error_) std::rethrow_exception(error_);
    }
    const std::string& esp_sha256() const { return esp_sha256_; }
    const verity::VerifyResult& root() const { return root_; }

private:
    Frontier frontier_;
    ReadBack read_;
    std::string esp_sha256_;
    verity::VerifyResult root_;
    std::exception_ptr error_;
    std::jthread thread_;  // last: started once the rest exists, joined before it goes
};

}  // namespace

std::string_view install_step_name(InstallStep step) {
    for (const auto& [s, name] : step_names)
        if (s == step) return name;
    return "install";
}

std::string_view mark_state_name(MarkState state) {
    for (const auto& [s, name] : mark_names)
        if (s == state) return name;
    return "unknown";
}

std::optional<MarkState> parse_mark_state(std::string_view name) {
    for (const auto& [s, n] : mark_names)
        if (n == name) return s;
    return std::nullopt;
}

// The install: one context the steps share, and the steps in order.
struct Engine::InstallContext {
    InstallContext(const InstallOptions& o, const ProgressFn& fn) : options(o), progress(fn) {}
    const InstallOptions& options;
    Progress progress;
    std::unique_ptr<BundleSource> source;  // after check
    Slot running{}, target{};
    std::string t;                         // the target's letter
    const Payload *root = nullptr, *verity = nullptr, *esp = nullptr;
    SlotRegions regions;
    uint64_t total = 0;                    // the target's payload bytes
    UpdateStatus st;                       // the record, from mark-bad on
    bool marked = false;                   // the target is marked bad: a failure is recorded
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    uint64_t reused = 0;                   // payload bytes the device had (a ranged source)
    // A delta from the running build (a ranged source whose server has one), while it is usable;
    // `delta_bytes` counts what was downloaded of it, usable or not.
    std::unique_ptr<DeltaSource> delta;
    uint64_t delta_bytes = 0;
    // What moved, for a ranged source (the last event's transfer).
    std::optional<Transfer> transfer() const {
        RangeSource* remote = source ? source->ranges() : nullptr;
        if (!remote) return std::nullopt;
        const uint64_t from_delta = delta_bytes + (delta ? delta->stats().downloaded : 0);
        return Transfer{total, remote->stats().downloaded + from_delta, reused,
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), from_delta};
    }
};

void Engine::install(const fs::path& bundle, const InstallOptions& options, const ProgressFn& progress) {
    install(with_code(ErrorCode::io, [&] { return open_file(bundle, O_RDONLY | O_CLOEXEC); }), bundle.string(), options, progress);
}

void Engine::install(UniqueFd bundle, const std::string& name, const InstallOptions& options, const ProgressFn& progress) {
    auto fd = std::make_shared<UniqueFd>(std::move(bundle));
    install(
        [&](const fs::path& anchor, int64_t at) {
            return std::make_unique<BundleReader>(std::move(*fd), name, anchor, at, config_.stall_timeout);
        },
        options, progress);
}

void Engine::install_url(const std::string& url, const HttpSettings& http, const InstallOptions& options, const ProgressFn& progress) {
    install(
        [&](const fs::path& anchor, int64_t at) -> std::unique_ptr<BundleSource> {
            return with_code(ErrorCode::transfer, [&] { return std::make_unique<HttpBundle>(url, http, anchor, at); });
        },
        options, progress);
}

void Engine::install(const SourceOpener& open, const InstallOptions& options, const ProgressFn& progress) {
    InstallContext in(options, progress);
    // Each step runs under the code its unclassified failures get (an Error without a code from
    // below: a malformed manifest while checking, a mismatch while verifying, a variable the
    // firmware refused while marking or arming); errno failures are io (ENOSPC: no-space) wherever
    // they happen.
    try {
        with_code(ErrorCode::bad_bundle, [&] { check(in, open); });
        if (in.source->random_access()) with_code(ErrorCode::bad_payload, [&] { verify(in); });
        with_code(ErrorCode::boot_control, [&] { mark_bad(in); });
        with_code(ErrorCode::verify_failed, [&] { write(in); });
        with_code(ErrorCode::boot_control, [&] { arm(in); });
    } catch (const UpdateError& e) {
        if (in.marked) record_failure(in, e);
        throw;
    }
    in.progress.finish("slot " + in.t + " installed; it boots once on the next reboot");
}

// check: everything that can refuse the bundle without its payloads, before any write.
void Engine::check(InstallContext& in, const SourceOpener& open) {
    in.progress.begin(InstallStep::check, "the bundle's signature");
    in.running = boot_.booted();
    in.target = other(in.running);
    in.t = std::string(1, slot_letter(in.target));
    in.source = open(config_.trust_anchor, certificate_time(now(), config_.release.created));
    const BundleManifest& m = in.source->manifest();
    const std::string& what = in.source->name();
    in.progress.say("compatible, version and sizes");
    if (m.compatible != config_.release.compatible)
        fail_update(ErrorCode::incompatible,
                    what + ": bundle is for \"" + m.compatible + "\", this system is \"" + config_.release.compatible + "\"");
    if (!in.options.expect_build_id.empty() && m.build_id != in.options.expect_build_id)
        fail_update(ErrorCode::source_changed, what + ": the bundle is build " + m.build_id + " (" + m.version +
                                                   "), the channel index names build " + in.options.expect_build_id);
    if (compare_versions(m.version, config_.release.version) < 0 && !in.options.force)
        fail_update(ErrorCode::downgrade, what + ": bundle version " + m.version + " is older than the running " +
                                              config_.release.version + " (a downgrade needs --force)");
    if (!m.disk_guid.empty()) {
        const std::string disk_guid = with_code(ErrorCode::io, [&] { return partitions::read_primary_gpt(config_.disk).disk_guid.str(); });
        if (m.disk_guid != disk_guid)
            fail_update(ErrorCode::incompatible, what + ": the bundle's kernel command line names disk " + m.disk_guid +
                                                     ", this device's disk is " + disk_guid +
                                                     " (was it built from a recipe with another seed?)");
    }
    in.regions = with_code(ErrorCode::io, [&] { return regions_of(config_.disk, in.target); });
    in.root = m.find("root", in.t);
    in.verity = m.find("root-verity", in.t);
    in.esp = m.find("esp", in.t);
    for (auto [p, r] : {std::pair{in.root, in.regions.root}, {in.verity, in.regions.verity}, {in.esp, in.regions.esp}})
        if (p->size > r.size)
            fail_update(ErrorCode::no_space, what + ": payload " + p->name + " (" + std::to_string(p->size) +
                                                 " bytes) does not fit partition " + r.label + " (" + std::to_string(r.size) + " bytes)");
    for (const Payload* p : {in.root, in.verity, in.esp}) in.total = checked_add(in.total, p->size, what + ": payload sizes");
    // The weights: bytes read (verify: every payload once), written and read back (write); the
    // small steps (a signature, a few variables and fsyncs) a hundredth of the payloads each.
    const uint64_t small = std::max<uint64_t>(in.total / 100, 1);
    in.progress.plan({{InstallStep::check, small},
                      {InstallStep::verify, in.source->random_access() ? in.total : 0},
                      {InstallStep::mark_bad, small},
                      // a ranged source: tree and ESP, both roots scanned, the root placed, the slot read back
                      {InstallStep::write, (in.source->ranges() ? 4 : 2) * in.total},
                      {InstallStep::arm, small}});
}

// verify: every payload checked before anything is written. The root through its dm-verity tree
// (the tree recomputed from the bundle's root must be the bundle's tree and give the manifest's
// root hash) and, in parallel, by its sha256; the (small) tree and ESP by their sha256.
void Engine::verify(InstallContext& in) {
    BundleSource& source = *in.source;
    const std::string& what = source.name();
    const Payload& root = *in.root;
    const Payload& tree = *in.verity;
    in.progress.begin(InstallStep::verify, "payload " + root.name);
    check_tree(source.fd(), tree.offset, tree, root, what);
    std::string root_sha256;
    std::exception_ptr hash_error;
    verity::VerifyResult check;
    ReadBack read;
    {
        std::jthread hasher([&] {  // the root's sha256 too, beside the tree, in parallel with it
            try {
                root_sha256 = sha256_region(source.fd(), root.offset, root.size, what, 1);
            } catch (...) {
                hash_error = std::current_exception();
            }
        });
        check = verity::verify(source.fd(), root.offset, source.fd(), tree.offset, 0,
                               [&](uint64_t end) { in.progress.advance(read.reached(end)); });
    }
    if (hash_error) std::rethrow_exception(hash_error);
    if (!check.ok)
        fail_update(ErrorCode::bad_payload,
                    what + ": payload " + root.name + " does not match its verity tree (corrupted or altered bundle): " + check.problem);
    if (to_hex(check.root_hash) != tree.root_hash)
        fail_update(ErrorCode::bad_payload,
                    what + ": payload " + root.name + " gives root hash " + to_hex(check.root_hash) + ", the manifest says " + tree.root_hash);
    if (root_sha256 != root.sha256)
        fail_update(ErrorCode::bad_payload, what + ": payload " + root.name + ": sha256 does not match the manifest (corrupted or altered bundle)");
    for (const Payload* p : {in.verity, in.esp}) {
        in.progress.say("payload " + p->name);
        source.read(*p, [&](const uint8_t*, size_t n) { in.progress.advance(n); });
    }
}

// mark-bad: a slot being written must never be recorded as good, nor boot.
void Engine::mark_bad(InstallContext& in) {
    in.progress.begin(InstallStep::mark_bad, "slot " + in.t);
    const BundleManifest& m = in.source->manifest();
    in.st = status();
    in.st.slots[in.t] = SlotRecord{SlotState::installing, m.version, m.build_id, now()};
    in.st.pending.reset();
    save(in.st, Durability::essential);
    in.marked = true;
    boot_.ensure_entries();
    std::vector<Slot> order = boot_.order();
    if (order.empty() || order.front() != in.running) boot_.set_primary(in.running);  // the fallback, whatever happens next
    boot_.mark_unbootable(in.target);
}

// write: the payloads into the target's partitions, and read back what is on the disk.
void Engine::write(InstallContext& in) {
    in.progress.begin(InstallStep::write, "slot " + in.t);
    if (RangeSource* remote = in.source->ranges()) return write_ranged(in, *remote);
    BundleSource& source = *in.source;
    const Payload& root = *in.root;
    const Payload& tree = *in.verity;
    const Payload& esp = *in.esp;
    const SlotRegions& regions = in.regions;
    const std::string disk_name = config_.disk.string();
    UniqueFd disk = open_file(config_.disk, O_RDWR | O_CLOEXEC);
    ReadBack read;
    auto read_back = [&](uint64_t end) { in.progress.advance(read.reached(end)); };

    if (!source.random_access()) {
        // Read once: each payload goes to its partition as it arrives (in bundle order), checked
        // by its size and signed sha256 at its end. Then one flush, and the slot is read back: the
        // tree against the manifest, the root against the tree and the signed root hash, the ESP
        // by its sha256.
        std::vector<std::pair<const Payload*, Region>> order = {{&root, regions.root}, {&tree, regions.verity}, {&esp, regions.esp}};
        std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) { return x.first->offset < y.first->offset; });
        for (const auto& payload_region : order) {  // no structured binding: clang 14 cannot capture one
            const Payload* p = payload_region.first;
            const Region& r = payload_region.second;
            uint64_t at = r.offset;
            const std::string where = disk_name + " (" + r.label + ")";
            in.progress.say("receiving " + r.label);
            source.read(*p, [&](const uint8_t* data, size_t n) {
                pwrite_exact(disk.get(), data, n, at, where);
                at += n;
                in.progress.advance(n);
            });
        }
        in.progress.say("flushing " + disk_name);
        if (::fsync(disk.get()) != 0) fail_errno("flushing " + disk_name);
        in.progress.say("reading back slot " + in.t);
        UniqueFd direct = open_direct(config_.disk, O_RDONLY);
        const int read_fd = direct ? direct.get() : disk.get();
        check_tree(disk.get(), regions.verity.offset, tree, root, disk_name + " (" + regions.verity.label + ")");
        const std::string esp_read_back = sha256_region(read_fd, regions.esp.offset, esp.size, disk_name, AlignedBuffer::alignment);
        in.progress.advance(esp.size);
        const verity::VerifyResult vr = verity::verify(read_fd, regions.root.offset, disk.get(), regions.verity.offset, 0, read_back);
        check_read_back(disk_name, in.t, regions.esp, esp_read_back, esp, vr, tree);
        return;
    }

    // Random access: the bundle is read again, through the descriptor that was checked (a file
    // renamed over it changes nothing), without hashing: if it was changed in place since the
    // check, the read-back fails and the slot stays marked bad. The verity tree and the ESP go
    // first; a thread reads the ESP back, then verifies the root against the tree and the
    // manifest's root hash, following the writer, reading each part once it is on the disk
    // (through O_DIRECT: the disk, not a cached copy). Then one flush.
    UniqueFd direct = open_direct(config_.disk, O_RDWR);
    const int read_fd = direct ? direct.get() : disk.get();
    SlotWriter writer(disk_name, direct ? direct.get() : -1, disk.get());
    auto copy = [&](const Payload& p, const Region& r, const std::function<void(uint64_t)>& written) {
        in.progress.say(r.label);
        writer.write(source.fd(), p.offset, p.size, r.offset, r.label, [&](uint64_t n) {
            if (written) written(n);
            in.progress.advance(n);
        });
    };
    copy(tree, regions.verity, {});
    check_tree(disk.get(), regions.verity.offset, tree, root, disk_name + " (" + regions.verity.label + ")");
    copy(esp, regions.esp, {});

    SlotReader reader(read_fd, disk.get(), regions, esp, disk_name, in.progress);
    copy(root, regions.root, [&](uint64_t n) { reader.frontier().advance(n); });
    in.progress.say("reading back slot " + in.t);
    reader.finish();  // closes the frontier: a tree that claims more data than the root payload holds must not wait for ever
    check_read_back(disk_name, in.t, regions.esp, reader.esp_sha256(), esp, reader.root(), tree);
    in.progress.say("flushing " + disk_name);
    if (::fsync(disk.get()) != 0) fail_errno("flushing " + disk_name);
}

// The delta from the running build to the bundle, if its server has one and it fits (delta.hpp).
void Engine::open_delta(InstallContext& in) {
    const std::string& from = config_.release.build_id;
    if (from.empty()) return;
    std::unique_ptr<RangeSource> file = in.source->delta(from);
    if (!file) return;
    in.progress.say("looking for a delta from build " + from);
    try {
        in.delta = std::make_unique<DeltaSource>(std::move(file), in.source->name() + " (delta from " + from + ")", *in.source, from);
        std::fprintf(stderr, "cairn-updated: using the delta from build %s: %zu sections\n", from.c_str(), in.delta->table().sections.size());
    } catch (const std::exception& e) {
        // No delta on the server (404) is the common case: the install goes on without one.
        std::fprintf(stderr, "cairn-updated: no delta used: %s\n", e.what());
    }
}

// write, from a source read by ranges (a server). The tree and the ESP are fetched whole into
// memory (1/128 of the root, and the ESP) and checked by their signed sha256 before a byte of them
// is written (a copy that arrives wrong is fetched again, twice at most). The root is then
// assembled block by block against the tree's lowest level (updater/assemble.hpp): blocks the
// device has are reused, the rest fetched, each checked before it is written, while a thread
// reads the slot back behind the assembly as after a file; then one flush. With a delta from the
// running build beside the bundle (open_delta), tree, ESP and the root's changed segments are
// first rebuilt from it, each checked before it is written; the steps then find them in place.
void Engine::write_ranged(InstallContext& in, RangeSource& remote) {
    const Payload& root = *in.root;
    const Payload& tree = *in.verity;
    const Payload& esp = *in.esp;
    const SlotRegions& regions = in.regions;
    const std::string disk_name = config_.disk.string();
    const std::string& what = in.source->name();
    UniqueFd disk = open_file(config_.disk, O_RDWR | O_CLOEXEC);

    // A payload the partition already holds (an earlier try got that far) is read from there.
    auto in_place = [&](const Payload& p, const Region& r) -> std::optional<std::string> {
        std::string bytes(p.size, '\0');
        pread_exact(disk.get(), bytes.data(), bytes.size(), r.offset, disk_name + " (" + r.label + ")");
        if (to_hex(sha256(bytes)) != p.sha256) return std::nullopt;
        in.progress.advance(p.size);
        return bytes;
    };
    auto fetch_checked = [&](const Payload& p) {
        class Whole final : public RangeSink {
        public:
            Whole(uint64_t start, std::string& out, Progress& progress) : start_(start), out_(out), progress_(progress) {}
            uint64_t position() const override { return start_ + out_.size(); }
            void restart() override {}
            bool take(const uint8_t* data, size_t size) override {
                out_.append(reinterpret_cast<const char*>(data), size);
                progress_.advance(size);
                return true;
            }

        private:
            uint64_t start_;
            std::string& out_;
            Progress& progress_;
        };
        std::string bytes;
        for (int attempt = 1;; ++attempt) {
            in.progress.say("fetching " + p.name);
            bytes.clear();
            bytes.reserve(p.size);
            Whole sink(p.offset, bytes, in.progress);
            remote.fetch(p.offset + p.size, sink);
            if (to_hex(sha256(bytes)) == p.sha256) return bytes;
            if (attempt == 3)
                fail_update(ErrorCode::bad_payload, what + ": payload " + p.name + " came 3 times with a sha256 other than the signed one " +
                                                        "(corrupted or altered bundle); none of it was written");
        }
    };
    // A delta from the build this device runs, where the server has one (updater/delta.hpp): the
    // tree, the ESP and the root's changed segments are rebuilt from it and checked before anything
    // is written; the assembly below then finds them in place, and fetches from the bundle whatever
    // the delta could not give. No failure of the delta fails the install.
    std::optional<SlotRegions> running;
    try {
        running = regions_of(config_.disk, in.running);
    } catch (const Error& e) {
        std::fprintf(stderr, "cairn-updated: not reusing the running slot (its partitions: %s)\n", e.what());
    }
    if (running) open_delta(in);
    // One part of the delta: one that does not give the signed bytes is left to the bundle; a delta
    // that cannot be had any more (the server, the link) is dropped.
    auto with_delta = [&](const std::string& part, const std::function<void()>& body) {
        if (!in.delta) return;
        try {
            body();
        } catch (const UpdateError& e) {
            if (e.code() != ErrorCode::transfer && e.code() != ErrorCode::source_changed) throw;
            std::fprintf(stderr, "cairn-updated: not using the delta any further (%s): %s\n", part.c_str(), e.what());
            in.progress.say("the delta cannot be had; fetching from the bundle instead");
            in.delta_bytes += in.delta->stats().downloaded;
            in.delta.reset();
        } catch (const Error& e) {
            std::fprintf(stderr, "cairn-updated: %s of slot %s comes from the bundle: %s\n", part.c_str(), in.t.c_str(), e.what());
        }
    };
    // The target's partition holds payload `p` already (an earlier try got that far).
    auto holds = [&](const Payload& p, const Region& r) {
        return p.size <= r.size && sha256_region(disk.get(), r.offset, p.size, disk_name + " (" + r.label + ")", 1) == p.sha256;
    };
    // A tree or ESP from the delta: rebuilt whole against `base`, written when it is the signed payload.
    auto rebuild = [&](const Payload& p, const Region& r, const std::string& base) {
        in.progress.say("rebuilding " + p.name + " from the delta");
        const std::string bytes = in.delta->rebuild(p, base);
        if (to_hex(sha256(bytes)) != p.sha256) fail(in.delta->name() + ": the " + p.name + " it gives is not the signed one");
        pwrite_exact(disk.get(), bytes.data(), bytes.size(), r.offset, disk_name + " (" + r.label + ")");
        std::fprintf(stderr, "cairn-updated: %s of slot %s rebuilt from the delta\n", p.name.c_str(), in.t.c_str());
    };
    with_delta(tree.name, [&] {
        if (holds(tree, regions.verity)) return;
        const uint64_t blocks = in.delta->table().from_root_blocks;
        if (blocks > running->root.size / tree.data_block_size)
            fail(in.delta->name() + ": its source root has more blocks than the running slot's root partition");
        rebuild(tree, regions.verity, delta_tree_base(disk.get(), running->root.offset, blocks, tree, in.delta->name()));
    });
    with_delta(esp.name, [&] {
        if (holds(esp, regions.esp)) return;
        // The base: the running ESP as far as the new one (a segment without a section is the base's
        // same bytes) or any section's base range reaches.
        uint64_t reach = esp.size;
        for (const DeltaSection* sec : in.delta->table().of(esp.name)) reach = std::max(reach, sec->base_offset + sec->base_size);
        std::string base(std::min(running->esp.size, reach), '\0');
        pread_exact(disk.get(), base.data(), base.size(), running->esp.offset, disk_name + " (" + running->esp.label + ")");
        rebuild(esp, regions.esp, base);
    });

    std::string tree_bytes;
    std::vector<bool> tree_held;  // level-0 hash blocks the target's tree already held
    bool tree_whole = false;
    {
        TreeRequest t;
        t.disk_fd = disk.get();
        t.disk_name = disk_name;
        t.tree = &tree;
        t.what = what + ": payload " + tree.name;
        t.target_offset = regions.verity.offset;
        t.target_size = regions.verity.size;
        t.remote = &remote;
        t.advance = [&](uint64_t n) { in.progress.advance(n); };
        t.level0_in_place = &tree_held;
        AssembleStats got;
        tree_bytes = assemble_tree(t, got);
        tree_whole = got.fetched == 0 && tree.data_blocks > 1;
        in.reused += std::min<uint64_t>(got.in_place * tree.hash_block_size, tree.size);
        std::fprintf(stderr, "cairn-updated: %s of slot %s: %llu hash blocks in place, %llu fetched\n", tree.name.c_str(), in.t.c_str(),
                     static_cast<unsigned long long>(got.in_place), static_cast<unsigned long long>(got.fetched));
        if (got.fetched > 0)
            pwrite_exact(disk.get(), tree_bytes.data(), tree_bytes.size(), regions.verity.offset, disk_name + " (" + regions.verity.label + ")");
    }
    check_tree(disk.get(), regions.verity.offset, tree, root, disk_name + " (" + regions.verity.label + ")");
    // An indexed ESP is checked in place chunk by chunk by assemble_chunked; one without an index whole.
    if (esp.chunk_size || !in_place(esp, regions.esp)) {
        std::string esp_bytes;
        if (esp.chunk_size) {
            // Chunk by chunk: most of a new ESP is on the disk already (the UKI's kernel and initrd).
            ChunkedRequest c;
            c.disk_fd = disk.get();
            c.disk_name = disk_name;
            c.payload = &esp;
            c.what = what + ": payload " + esp.name;
            c.target = {regions.esp.offset, regions.esp.size};
            if (running) c.running = std::pair{running->esp.offset, running->esp.size};
            c.remote = &remote;
            c.advance = [&](uint64_t n) { in.progress.advance(n); };
            AssembleStats got;
            esp_bytes = assemble_chunked(c, got);
            in.reused += std::min<uint64_t>((got.in_place + got.copied) * esp.chunk_size, esp.size);
            if (got.copied == 0 && got.fetched == 0) esp_bytes.clear();  // all of it in place: nothing to write
            std::fprintf(stderr, "cairn-updated: %s of slot %s: %llu chunks in place, %llu copied, %llu fetched\n", esp.name.c_str(),
                         in.t.c_str(), static_cast<unsigned long long>(got.in_place), static_cast<unsigned long long>(got.copied),
                         static_cast<unsigned long long>(got.fetched));
        } else {
            esp_bytes = fetch_checked(esp);
        }
        pwrite_exact(disk.get(), esp_bytes.data(), esp_bytes.size(), regions.esp.offset, disk_name + " (" + regions.esp.label + ")");
    } else {
        in.reused += esp.size;
    }

    // The digest of every root block: the tree's lowest level, its last hash blocks (the levels
    // follow the superblock top first); with one data block, the root hash itself.
    const std::vector<uint8_t> salt = from_hex(tree.salt, what + ": salt");
    const verity::Params params{tree.data_block_size, tree.hash_block_size, tree.data_blocks, salt, {}};
    std::vector<uint8_t> single;
    const uint8_t* digests = nullptr;
    if (verity::tree_levels(params) == 0) {
        single = from_hex(tree.root_hash, what + ": root hash");
        digests = single.data();
    } else {
        const uint64_t per_block = tree.hash_block_size / 32;
        const uint64_t level0 = (tree.data_blocks + per_block - 1) / per_block * tree.hash_block_size;
        digests = reinterpret_cast<const uint8_t*>(tree_bytes.data()) + verity::hash_device_size(params) - level0;
    }

    with_delta(root.name, [&] {
        DeltaRootRequest d;
        d.disk_fd = disk.get();
        d.disk_name = disk_name;
        d.target_offset = regions.root.offset;
        d.running = {running->root.offset, running->root.size};
        d.digests = digests;
        d.salt = salt;
        d.block_size = tree.data_block_size;
        d.blocks = tree.data_blocks;
        d.say = [&](const std::string& line) { in.progress.say(line); };
        const DeltaRootStats got = place_root_sections(*in.delta, root, d);
        std::fprintf(stderr,
                     "cairn-updated: root of slot %s from the delta: %llu segments (%llu already in place), %llu blocks written, "
                     "%llu refused (left to fetch); %llu bytes of the delta downloaded\n",
                     in.t.c_str(), static_cast<unsigned long long>(got.sections), static_cast<unsigned long long>(got.in_place),
                     static_cast<unsigned long long>(got.written), static_cast<unsigned long long>(got.refused),
                     static_cast<unsigned long long>(in.delta->stats().downloaded));
    });

    AssembleRequest request;
    request.disk_fd = disk.get();
    request.disk_name = disk_name;
    request.target_offset = regions.root.offset;
    try {  // the running slot's root as a source of blocks: how much of it its own superblock covers
        if (running) {
            const verity::Superblock sb = verity::read_superblock(disk.get(), running->verity.offset, disk_name + " (" + running->verity.label + ")");
            if (sb.data_block_size == tree.data_block_size)
                request.running = std::pair{running->root.offset, std::min(running->root.size, sb.data_blocks * sb.data_block_size)};
        }
    } catch (const Error& e) {
        std::fprintf(stderr, "cairn-updated: not reusing the running slot's blocks: %s\n", e.what());
    }
    // Root blocks can be in place only where an earlier try wrote them, after the tree: the groups
    // whose hash block was in place (the whole tree in place: every group, to be sure).
    if (!tree_whole && tree_held.size() == (tree.data_blocks + tree.hash_block_size / 32 - 1) / (tree.hash_block_size / 32)) {
        request.scan_groups = &tree_held;
        request.group_blocks = tree.hash_block_size / 32;
    }
    request.digests = digests;
    request.salt = salt;
    request.block_size = tree.data_block_size;
    request.blocks = tree.data_blocks;
    request.payload_offset = root.offset;
    request.payload_name = what + ": payload " + root.name;
    request.remote = &remote;
    request.advance = [&](uint64_t n) { in.progress.advance(n); };
    request.say = [&](const std::string& line) { in.progress.say(line); };
    request.planned = [&](const AssembleStats& plan) {
        std::fprintf(stderr, "cairn-updated: root of slot %s: %llu blocks in place, %llu zeros, %llu copied; fetching %llu in %llu ranges\n",
                     in.t.c_str(), static_cast<unsigned long long>(plan.in_place), static_cast<unsigned long long>(plan.zeros),
                     static_cast<unsigned long long>(plan.copied), static_cast<unsigned long long>(plan.fetched),
                     static_cast<unsigned long long>(plan.ranges));
    };
    // The read-back follows the assembly: a thread reads the ESP back, then verifies the root
    // against the tree and the signed root hash as far as the assembly says the blocks are final
    // (through O_DIRECT: the disk, not a cached copy), as the install from a file does.
    UniqueFd direct = open_direct(config_.disk, O_RDONLY);
    const int read_fd = direct ? direct.get() : disk.get();
    SlotReader reader(read_fd, disk.get(), regions, esp, disk_name, in.progress);
    request.final_blocks = [&](uint64_t n) { reader.frontier().reach(n * tree.data_block_size); };
    const AssembleStats got = assemble_root(request);
    in.reused += (got.in_place + got.zeros + got.copied) * tree.data_block_size;
    std::fprintf(stderr,
                 "cairn-updated: root of slot %s done: %llu blocks in place, %llu zeros, %llu copied, %llu fetched (%llu more to "
                 "save requests, in %llu ranges); %llu bytes downloaded in all\n",
                 in.t.c_str(), static_cast<unsigned long long>(got.in_place), static_cast<unsigned long long>(got.zeros),
                 static_cast<unsigned long long>(got.copied), static_cast<unsigned long long>(got.fetched),
                 static_cast<unsigned long long>(got.fetched_extra), static_cast<unsigned long long>(got.ranges),
                 static_cast<unsigned long long>(in.transfer()->downloaded));

    in.progress.say("reading back slot " + in.t);
    reader.finish();
    check_read_back(disk_name, in.t, regions.esp, reader.esp_sha256(), esp, reader.root(), tree);
    in.progress.say("flushing " + disk_name);
    if (::fsync(disk.get()) != 0) fail_errno("flushing " + disk_name);
}

// arm: record, then arm the trial boot.
void Engine::arm(InstallContext& in) {
    in.progress.begin(InstallStep::arm, "slot " + in.t);
    const BundleManifest& m = in.source->manifest();
    UpdateStatus& st = in.st;
    st.slots[in.t] = SlotRecord{SlotState::trial, m.version, m.build_id, now()};
    st.pending = Pending{in.t, m.version, PendingPhase::written, boot_id()};
    st.etc_conflicts.clear();
    for (const std::string& path : user_changed_etc(config_.etc_upper)) {
        auto was = config_.release.etc.find(path);
        auto will = m.etc.find(path);
        std::string old_default = was == config_.release.etc.end() ? "" : was->second;
        std::string new_default = will == m.etc.end() ? "" : will->second;
        if (old_default != new_default)
            st.etc_conflicts.push_back({path, "kept your version; the new default " +
                                                  std::string(new_default.empty() ? "removes the file" : "differs")});
    }
    save(st, Durability::essential);  // no BootNext without the record of what it boots
    boot_.set_next(in.target);
    st.pending->phase = PendingPhase::armed;
    st.last = Event{EventKind::installed, in.t, m.version, "", now(), std::nullopt, in.transfer()};
    save(st);
}

// A failure once the target was marked bad: the record says why, beside the slot left
// "installing" (best effort: the failure itself may be a full /var).
void Engine::record_failure(InstallContext& in, const UpdateError& e) {
    try {
        UpdateStatus st = status();
        st.last = Event{EventKind::failed, in.t, in.source->manifest().version, e.what(), now(), e.code(), in.transfer()};
        save(st);
    } catch (const std::exception& x) {
        std::fprintf(stderr, "cairn-updated: recording the failed install: %s\n", x.what());
    }
}

BootDecision Engine::on_boot(const std::string& failure_reason) {
    UpdateStatus st = status();
    const Slot booted = boot_.booted();
    const std::string b(1, slot_letter(booted));
    std::vector<Slot> order = boot_.order();
    BootDecision d;
    d.slot = b;
    if (order.empty()) {
        // A fresh NVRAM: the firmware booted the first ESP's removable path. Adopt the booted slot.
        boot_.ensure_entries();
        boot_.set_primary(booted);
        order = boot_.order();
        // With no record either, this is the disk's first boot: `cairn build` wrote both slots from
        // the same root filesystem (each with its own verity tree), so the other slot holds this
        // release too. Later boots keep what the record says (after an update it holds another).
        if (st.slots.empty() && !st.pending && !st.last) {
            const std::string o(1, slot_letter(other(booted)));
            st.slots[o] = SlotRecord{SlotState::good, config_.release.version, config_.release.build_id, now()};
        }
    }
    if (order.front() != booted) {
        // Booted through BootNext: a trial. The caller runs the health check, then commit() or fail_trial().
        d.kind = BootDecision::Kind::trial;
        return d;
    }
    if (st.pending && st.pending->slot != b) {
        const Pending p = *st.pending;
        bool same_boot = p.boot_id == boot_id();
        if (same_boot) return d;  // installed during this boot; waiting for the reboot (the daemon restarted)
        if (p.phase == PendingPhase::written && boot_.next() != parse_slot(p.slot)) {
            d.kind = BootDecision::Kind::interrupted;
            d.reason = "the install of slot " + p.slot + " was interrupted before its trial boot was armed";
            st.slots[p.slot].state = SlotState::bad;
            st.last = Event{EventKind::interrupted, p.slot, p.version, d.reason, now(), ErrorCode::interrupted};
        } else {
            d.kind = BootDecision::Kind::rolled_back;
            d.reason = !failure_reason.empty()
                           ? failure_reason
                           : "slot " + p.slot + " did not come up healthy (it failed to boot, crashed, or lost power before committing)";
            st.slots[p.slot].state = SlotState::bad;
            st.last = Event{EventKind::rolled_back, p.slot, p.version, d.reason, now(), ErrorCode::boot_failed};
        }
        st.pending.reset();
    } else if (st.pending && st.pending->slot == b) {
        // Committed, but the record was not written (power cut right after the commit).
        st.pending.reset();
        st.last = Event{EventKind::committed, b, config_.release.version, "", now(), std::nullopt};
    } else if (!failure_reason.empty()) {
        // No install was pending, yet a slot left a failure: the other (committed) slot failed in
        // cairn-init and fell back to this one.
        const std::string o(1, slot_letter(other(booted)));
        d.kind = BootDecision::Kind::fell_back;
        d.reason = failure_reason;
        st.slots[o].state = SlotState::bad;
        st.slots[o].changed = now();
        st.last = Event{EventKind::fell_back, o, st.slots[o].version, failure_reason, now(), ErrorCode::boot_failed};
    }
    for (auto& [name, r] : st.slots)
        if (r.state == SlotState::installing && !(st.pending && st.pending->slot == name)) r.state = SlotState::bad;
    SlotRecord& self = st.slots[b];
    self = SlotRecord{SlotState::good, config_.release.version, config_.release.build_id, self.changed ? self.changed : now()};
    save(st);
    return d;
}

void Engine::commit() {
    const Slot booted = boot_.booted();
    const std::string b(1, slot_letter(booted));
    boot_.set_primary(booted);
    UpdateStatus st = status();
    st.slots[b] = SlotRecord{SlotState::good, config_.release.version, config_.release.build_id, now()};
    st.pending.reset();
    st.last = Event{EventKind::committed, b, config_.release.version, "", now(), std::nullopt};
    save(st);
}

void Engine::fail_trial(const std::string& reason, ErrorCode code) {
    const Slot booted = boot_.booted();
    const std::string b(1, slot_letter(booted));
    UpdateStatus st = status();
    st.slots[b].state = SlotState::bad;
    st.pending.reset();
    st.last = Event{EventKind::rolled_back, b, config_.release.version, reason, now(), code};
    save(st);
    boot_.mark_unbootable(booted);
}

Slot Engine::mark(const std::string& state, const std::string& which) {
    const std::optional<MarkState> parsed = parse_mark_state(state);
    if (!parsed) fail("unknown state \"" + state + "\" (good, bad or active)");
    return mark(*parsed, which);
}

Slot Engine::mark(MarkState state, const std::string& which) {
    Slot slot;
    if (which == "booted" || which.empty()) slot = boot_.booted();
    else if (which == "other") slot = other(boot_.booted());
    else if (auto s = parse_slot(which)) slot = *s;
    else fail("unknown slot \"" + which + "\" (booted, other, a or b)");
    const std::string s(1, slot_letter(slot));
    UpdateStatus st = status();
    boot_.ensure_entries();
    SlotRecord& record = st.slots[s];
    const std::string is(slot_state_name(record.state));
    switch (state) {
        case MarkState::good:
            if (slot != boot_.booted() && record.state != SlotState::good && record.state != SlotState::trial)
                fail("slot " + s + " is " + is + "; only a written slot can be marked good");
            boot_.set_primary(slot);
            record.state = SlotState::good;
            if (st.pending && st.pending->slot == s && slot == boot_.booted()) st.pending.reset();
            break;
        case MarkState::bad:
            if (slot == boot_.booted()) fail("the booted slot " + s + " cannot be marked bad while it runs");
            boot_.mark_unbootable(slot);
            record.state = SlotState::bad;
            if (st.pending && st.pending->slot == s) st.pending.reset();
            break;
        case MarkState::active:
            if (record.state == SlotState::bad || record.state == SlotState::installing)
                fail("slot " + s + " is " + is + " and cannot be made active");
            boot_.set_next(slot);
            break;
    }
    record.changed = now();
    save(st);
    return slot;
}

}  // namespace cairn::updater
