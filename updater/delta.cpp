#include "updater/delta.hpp"

#include <sys/mman.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/sha256_blocks.hpp"
#include "common/units.hpp"
#include "imager/verity.hpp"
#include "updater/json_fields.hpp"

namespace cairn::updater {

using json = nlohmann::json;

namespace {

struct CctxFree {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DctxFree {
    void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
using ZstdCompressor = std::unique_ptr<ZSTD_CCtx, CctxFree>;
using ZstdDecompressor = std::unique_ptr<ZSTD_DCtx, DctxFree>;

void zstd_check(size_t result, const std::string& what) {
    if (ZSTD_isError(result)) fail(what + ": " + ZSTD_getErrorName(result));
}

constexpr std::pair<DeltaBase, std::string_view> base_names[] = {{DeltaBase::running, "running"}, {DeltaBase::tree, "tree"}};

}  // namespace

std::string_view delta_base_name(DeltaBase base) {
    for (const auto& [b, name] : base_names)
        if (b == base) return name;
    return "unknown";
}

std::string encode_delta_header(uint64_t table_size) {
    std::string out(delta_header_size, '\0');
    std::memcpy(out.data(), delta_magic, sizeof delta_magic);
    out[8] = static_cast<char>(delta_format);  // u32 little endian
    out[12] = static_cast<char>(delta_header_size);
    put_le64(out, 16, table_size);
    return out;
}

uint64_t decode_delta_header(std::string_view b, const std::string& what) {
    if (b.size() < delta_header_size || std::memcmp(b.data(), delta_magic, sizeof delta_magic) != 0)
        fail(what + ": not a Cairn delta (no CAIRNDLT header)");
    const uint64_t word = get_le64(b, 8);
    const auto format = static_cast<uint32_t>(word & 0xffffffff), header_size = static_cast<uint32_t>(word >> 32);
    if (format < 1 || format > delta_format)
        fail(what + ": delta format " + std::to_string(format) + " is not supported (this updater reads formats 1 to " +
             std::to_string(delta_format) + ")");
    if (header_size != delta_header_size) fail(what + ": bad header size " + std::to_string(header_size));
    if (b.substr(24, delta_header_size - 24).find_first_not_of('\0') != std::string_view::npos)
        fail(what + ": reserved header bytes are not zero");
    const uint64_t table = get_le64(b, 16);
    if (table == 0 || table > max_delta_table_size) fail(what + ": table size " + std::to_string(table) + " out of bounds");
    return table;
}

std::string DeltaTable::to_json() const {
    json sections_json = json::array();
    for (const DeltaSection& s : sections) {
        json sec = {{"payload", s.payload}, {"offset", s.offset}, {"size", s.size}, {"base", delta_base_name(s.base)},
                    {"base_size", s.base_size}, {"at", s.at}, {"bytes", s.bytes}};
        if (format >= 2) sec["base_offset"] = s.base_offset;  // format 1: the same range as the segment
        sections_json.push_back(std::move(sec));
    }
    json j = {{"format", format},
              {"from", {{"build_id", from_build_id}, {"version", from_version}, {"root_blocks", from_root_blocks}}},
              {"to", {{"build_id", to_build_id}, {"version", to_version}, {"manifest_sha256", to_manifest_sha256}}},
              {"segment_size", segment_size},
              {"sections", sections_json}};
    return j.dump(1) + "\n";
}

DeltaTable DeltaTable::parse(std::string_view text, const std::string& what) {
    const json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail(what + ": the delta table is not a JSON object");
    JsonFields top{j, what + ": delta table"};
    top.only({"format", "from", "to", "segment_size", "sections"});
    DeltaTable t;
    const uint64_t format = top.u64("format");
    if (format < 1 || format > delta_format) fail(top.where + ": format " + top.get("format").dump() + " is not supported");
    t.format = static_cast<int>(format);
    const json& from = top.get("from");
    const json& to = top.get("to");
    if (!from.is_object() || !to.is_object()) fail(top.where + ": \"from\" and \"to\" must be objects");
    JsonFields f{from, top.where + ": from"}, g{to, top.where + ": to"};
    f.only({"build_id", "version", "root_blocks"});
    g.only({"build_id", "version", "manifest_sha256"});
    t.from_build_id = f.str("build_id");
    t.from_version = f.str("version");
    t.from_root_blocks = f.u64("root_blocks");
    t.to_build_id = g.str("build_id");
    t.to_version = g.str("version");
    t.to_manifest_sha256 = g.str("manifest_sha256");
    if (t.from_build_id.empty() || t.to_build_id.empty()) fail(top.where + ": empty build id");
    if (!is_lower_hex(t.to_manifest_sha256, 64)) fail(g.where + ": \"manifest_sha256\" must be 64 lower-case hex digits");
    t.segment_size = top.u64("segment_size");
    if (t.segment_size < 4096 || t.segment_size > max_delta_segment_size || t.segment_size % 4096)
        fail(top.where + ": \"segment_size\" " + std::to_string(t.segment_size) + " is not a multiple of 4096 up to " +
             std::to_string(max_delta_segment_size));
    const json& ss = top.get("sections");
    if (!ss.is_array()) fail(top.where + ": \"sections\" must be an array");
    uint64_t next_at = 0;
    for (size_t i = 0; i < ss.size(); ++i) {
        if (!ss[i].is_object()) fail(top.where + ": sections[" + std::to_string(i) + "] must be an object");
        JsonFields s{ss[i], top.where + ": sections[" + std::to_string(i) + "]"};
        if (format == 1) s.only({"payload", "offset", "size", "base", "base_size", "at", "bytes"});
        else s.only({"payload", "offset", "size", "base", "base_offset", "base_size", "at", "bytes"});
        DeltaSection d;
        d.payload = s.str("payload");
        d.offset = s.u64("offset");
        d.size = s.u64("size");
        const std::string base = s.str("base");
        bool known = false;
        for (const auto& [b, name] : base_names)
            if (name == base) {
                d.base = b;
                known = true;
            }
        if (!known) fail(s.where + ": unknown base \"" + base + "\"");
        d.base_offset = format == 1 ? s.u64("offset") : s.u64("base_offset");  // format 1: the same range
        d.base_size = s.u64("base_size");
        d.at = s.u64("at");
        d.bytes = s.u64("bytes");
        if (d.payload.empty()) fail(s.where + ": empty payload name");
        if (d.offset % t.segment_size) fail(s.where + ": offset " + std::to_string(d.offset) + " is not at a segment");
        if (d.size == 0 || d.size > t.segment_size) fail(s.where + ": size " + std::to_string(d.size) + " is not one segment");
        if (d.base_size > max_delta_base_size || d.base_size + d.size > (uint64_t{1} << delta_window_log_max))
            fail(s.where + ": base_size " + std::to_string(d.base_size) + " does not fit in the decoder's window with the segment");
        checked_add(d.base_offset, d.base_size, s.where);
        if (d.bytes == 0 || d.bytes > ZSTD_compressBound(d.size) + 4096) fail(s.where + ": a frame of " + std::to_string(d.bytes) + " bytes");
        checked_add(d.offset, d.size, s.where);
        if (d.at < next_at || d.at < delta_header_size) fail(s.where + ": its frame starts inside the table or the frame before");
        next_at = checked_add(d.at, d.bytes, s.where);
        if (!t.sections.empty() && t.sections.back().payload == d.payload && t.sections.back().offset >= d.offset)
            fail(s.where + ": sections of payload \"" + d.payload + "\" are not in order");
        t.sections.push_back(std::move(d));
    }
    return t;
}

std::vector<const DeltaSection*> DeltaTable::of(const std::string& payload) const {
    std::vector<const DeltaSection*> out;
    for (const DeltaSection& s : sections)
        if (s.payload == payload) out.push_back(&s);
    return out;
}

std::string delta_url(const std::string& bundle, const std::string& from_build_id) {
    const size_t query = bundle.find_first_of("?#");
    if (query == std::string::npos) return bundle + ".from-" + from_build_id;
    return bundle.substr(0, query) + ".from-" + from_build_id + bundle.substr(query);
}

std::string decode_section(const DeltaSection& s, std::string_view base, std::string_view frame, const std::string& what) {
    if (base.size() != s.base_size) fail(what + ": the base holds " + std::to_string(base.size()) + " bytes, not " + std::to_string(s.base_size));
    const unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
    if (declared == ZSTD_CONTENTSIZE_ERROR) fail(what + ": not a zstd frame");
    if (declared != s.size) fail(what + ": the frame gives " + (declared == ZSTD_CONTENTSIZE_UNKNOWN ? std::string("an unknown number of") : std::to_string(declared)) +
                                 " bytes, the table says " + std::to_string(s.size));
    ZstdDecompressor d(ZSTD_createDCtx());
    if (!d) fail(what + ": out of memory");
    zstd_check(ZSTD_DCtx_setParameter(d.get(), ZSTD_d_windowLogMax, delta_window_log_max), what);
    if (!base.empty()) zstd_check(ZSTD_DCtx_refPrefix(d.get(), base.data(), base.size()), what);
    if (ZSTD_findFrameCompressedSize(frame.data(), frame.size()) != frame.size()) fail(what + ": bytes after the frame's end");
    std::string out(s.size, '\0');
    const size_t n = ZSTD_decompressDCtx(d.get(), out.data(), out.size(), frame.data(), frame.size());
    zstd_check(n, what);
    if (n != out.size()) fail(what + ": the frame gives " + std::to_string(n) + " bytes, the table says " + std::to_string(s.size));
    return out;
}

std::string encode_section(std::string_view base, std::string_view target, int level) {
    ZstdCompressor c(ZSTD_createCCtx());
    if (!c) fail("zstd: out of memory");
    // A window that covers the base and the target: every byte of the base can be referred to.
    int window = 10;
    while (window < delta_window_log_max && (uint64_t{1} << window) < base.size() + target.size()) ++window;
    zstd_check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_compressionLevel, level), "zstd");
    zstd_check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_windowLog, window), "zstd");
    zstd_check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_enableLongDistanceMatching, 1), "zstd");
    zstd_check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_contentSizeFlag, 1), "zstd");
    zstd_check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_checksumFlag, 0), "zstd");  // every byte is checked against the manifest
    zstd_check(ZSTD_CCtx_setPledgedSrcSize(c.get(), target.size()), "zstd");
    if (!base.empty()) zstd_check(ZSTD_CCtx_refPrefix(c.get(), base.data(), base.size()), "zstd");
    std::string out(ZSTD_compressBound(target.size()), '\0');
    const size_t n = ZSTD_compress2(c.get(), out.data(), out.size(), target.data(), target.size());
    zstd_check(n, "zstd");
    out.resize(n);
    return out;
}

std::string delta_tree_base(int fd, uint64_t offset, uint64_t blocks, const Payload& tree, const std::string& what) {
    verity::Params p;
    p.data_block_size = tree.data_block_size;
    p.hash_block_size = tree.hash_block_size;
    p.data_blocks = blocks;
    p.salt = from_hex(tree.salt, what + ": salt");
    const uint64_t size = verity::hash_device_size(p);
    UniqueFd out(::memfd_create("cairn-delta-tree", MFD_CLOEXEC));
    if (!out) fail_errno(what + ": memfd_create");
    if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) fail_errno(what + ": sizing the tree base");
    verity::format(fd, offset, out.get(), 0, p);
    std::string bytes(size, '\0');
    pread_exact(out.get(), bytes.data(), bytes.size(), 0, what + ": tree base");
    return bytes;
}


namespace {

// The first request: header and, for most deltas, the whole table.
constexpr uint64_t first_request_size = 16 << 10;

}  // namespace

DeltaSource::DeltaSource(std::unique_ptr<RangeSource> file, std::string name, const BundleSource& bundle,
                         const std::string& running_build_id)
    : file_(std::move(file)), name_(std::move(name)) {
    std::string head = fetch_range(*file_, 0, first_request_size);  // the server may have fewer bytes
    const uint64_t table_size = decode_delta_header(head, name_);
    const uint64_t table_end = delta_header_size + table_size;
    if (head.size() < table_end) head += fetch_range(*file_, head.size(), table_end);
    table_ = DeltaTable::parse(std::string_view(head).substr(delta_header_size, table_size), name_);
    head_ = std::move(head);
    const BundleManifest& m = bundle.manifest();
    if (table_.to_build_id != m.build_id || table_.to_manifest_sha256 != bundle.manifest_sha256())
        fail(name_ + ": it leads to build " + table_.to_build_id + " (" + table_.to_version + "), not to this bundle (build " + m.build_id +
             ", " + m.version + ")");
    if (table_.from_build_id != running_build_id)
        fail(name_ + ": it is for devices running build " + table_.from_build_id + " (" + table_.from_version + "); this one runs " +
             running_build_id);
    for (const DeltaSection& sec : table_.sections) {
        if (sec.at < table_end) fail(name_ + ": a frame starts inside the table");
        const auto p = std::find_if(m.payloads.begin(), m.payloads.end(), [&](const Payload& x) { return x.name == sec.payload; });
        if (p == m.payloads.end()) fail(name_ + ": a section for payload \"" + sec.payload + "\", which the bundle does not have");
        if (sec.offset + sec.size > p->size || (sec.size != table_.segment_size && sec.offset + sec.size != p->size))
            fail(name_ + ": a section of " + sec.payload + " at " + std::to_string(sec.offset) + " is not one of its segments");
        if ((sec.base == DeltaBase::tree) != (p->role == "root-verity"))
            fail(name_ + ": section of " + sec.payload + " has base \"" + std::string(delta_base_name(sec.base)) + "\"");
    }
}

std::vector<std::string> DeltaSource::frames(const std::vector<const DeltaSection*>& sections) {
    std::vector<std::string> out(sections.size());
    std::vector<StringSink> sinks;
    std::vector<RangeSource::Run> runs;
    sinks.reserve(sections.size());
    for (size_t i = 0; i < sections.size(); ++i) {
        if (sections[i]->at + sections[i]->bytes <= head_.size()) {  // the first request brought it
            out[i] = head_.substr(sections[i]->at, sections[i]->bytes);
            continue;
        }
        out[i].reserve(sections[i]->bytes);
        sinks.emplace_back(sections[i]->at, out[i]);
        runs.push_back({sections[i]->at + sections[i]->bytes, &sinks.back()});
    }
    if (!runs.empty()) file_->fetch_many(runs);
    return out;
}

std::string DeltaSource::rebuild(const Payload& p, std::string_view base) {
    const std::vector<const DeltaSection*> sections = table_.of(p.name);
    const std::vector<std::string> got = frames(sections);
    std::string out;
    out.reserve(p.size);
    size_t next = 0;
    for (uint64_t offset = 0; offset < p.size; offset += table_.segment_size) {
        const uint64_t n = std::min(table_.segment_size, p.size - offset);
        if (next < sections.size() && sections[next]->offset == offset) {
            const DeltaSection& sec = *sections[next];
            if (sec.base_offset + sec.base_size > base.size())
                fail(name_ + ": " + p.name + " at " + std::to_string(offset) + ": its base is past the end of what the device has");
            out += decode_section(sec, base.substr(sec.base_offset, sec.base_size), got[next],
                                  name_ + ": " + p.name + " at " + std::to_string(offset));
            ++next;
        } else {
            if (offset + n > base.size())
                fail(name_ + ": " + p.name + " at " + std::to_string(offset) + ": no section, and the device has nothing there");
            out.append(base.substr(offset, n));
        }
    }
    return out;
}

DeltaRootStats place_root_sections(DeltaSource& delta, const Payload& root, const DeltaRootRequest& r) {
    constexpr size_t digest_size = 32;
    constexpr size_t batch = 8;                 // sections fetched in one request, then decoded one at a time
    constexpr uint64_t batch_bytes = 16 << 20;  // a hostile table's frames (64 MiB each) must not add up
    DeltaRootStats stats;
    const std::vector<const DeltaSection*> all = delta.table().of(root.name);
    stats.sections = all.size();
    std::vector<uint8_t> digests;
    std::string held;
    // Which sections the target does not hold yet.
    std::vector<const DeltaSection*> wanted;
    for (const DeltaSection* sec : all) {
        const uint64_t first = sec->offset / r.block_size, n = sec->size / r.block_size;
        if (sec->offset % r.block_size || sec->size % r.block_size || first + n > r.blocks)
            fail(delta.name() + ": a section of " + root.name + " at " + std::to_string(sec->offset) + " is not whole blocks of the root");
        held.resize(sec->size);
        pread_exact(r.disk_fd, held.data(), held.size(), r.target_offset + sec->offset, r.disk_name + " (root)");
        digests.resize(n * digest_size);
        sha256_blocks(r.salt, reinterpret_cast<const uint8_t*>(held.data()), r.block_size, n, digests.data());
        if (std::memcmp(digests.data(), r.digests + first * digest_size, n * digest_size) == 0) ++stats.in_place;
        else wanted.push_back(sec);
    }
    for (size_t m = 0; m < wanted.size();) {
        // Up to `batch` frames a request, and no more than `batch_bytes` of them in memory.
        size_t e = m + 1;
        uint64_t bytes = wanted[m]->bytes;
        while (e < wanted.size() && e - m < batch && bytes + wanted[e]->bytes <= batch_bytes) bytes += wanted[e++]->bytes;
        const std::vector<const DeltaSection*> some(wanted.begin() + static_cast<std::ptrdiff_t>(m), wanted.begin() + static_cast<std::ptrdiff_t>(e));
        if (r.say) r.say("rebuilding root segments " + std::to_string(m + 1) + "-" + std::to_string(e) + " of " +
                         std::to_string(wanted.size()) + " from the delta");
        const std::vector<std::string> got = delta.frames(some);
        for (size_t k = 0; k < some.size(); ++k) {
            const DeltaSection& sec = *some[k];
            if (sec.base_offset + sec.base_size > r.running.second)
                fail(delta.name() + ": root at " + std::to_string(sec.offset) + ": its base is past the end of the running root");
            std::string base(sec.base_size, '\0');
            pread_exact(r.disk_fd, base.data(), base.size(), r.running.first + sec.base_offset, r.disk_name + " (running root)");
            const uint64_t first = sec.offset / r.block_size, n = sec.size / r.block_size;
            std::string segment;
            try {
                segment = decode_section(sec, base, got[k], delta.name() + ": root at " + std::to_string(sec.offset));
            } catch (const Error& bad) {  // a damaged frame: its blocks are left to fetch, the other sections still serve
                if (r.say) r.say(bad.what());
                stats.refused += n;
                continue;
            }
            digests.resize(n * digest_size);
            sha256_blocks(r.salt, reinterpret_cast<const uint8_t*>(segment.data()), r.block_size, n, digests.data());
            // Runs of matching blocks, each written at once.
            for (uint64_t i = 0; i < n;) {
                if (std::memcmp(digests.data() + i * digest_size, r.digests + (first + i) * digest_size, digest_size) != 0) {
                    ++stats.refused;
                    ++i;
                    continue;
                }
                uint64_t end = i + 1;
                while (end < n && std::memcmp(digests.data() + end * digest_size, r.digests + (first + end) * digest_size, digest_size) == 0) ++end;
                pwrite_exact(r.disk_fd, segment.data() + i * r.block_size, (end - i) * r.block_size,
                             r.target_offset + sec.offset + i * r.block_size, r.disk_name + " (root)");
                stats.written += end - i;
                i = end;
            }
        }
        m = e;
    }
    return stats;
}

}  // namespace cairn::updater
