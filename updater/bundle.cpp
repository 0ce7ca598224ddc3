#include "updater/bundle.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "common/error.hpp"
#include "common/uuid.hpp"
#include "common/file.hpp"
#include "common/units.hpp"
#include "updater/json_fields.hpp"
#include "updater/signature.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;
using json = nlohmann::json;


std::string fetch_range(RangeSource& source, uint64_t start, uint64_t end) {
    std::string out;
    StringSink sink(start, out);
    source.fetch(end, sink);
    return out;
}

void BundleHead::require_payloads(const std::string& what) const {
    if (const uint64_t end = manifest.payloads.back().offset + manifest.payloads.back().size; end > size)
        fail(what + ": cut short: its payloads end at byte " + std::to_string(end) + ", the file has " + std::to_string(size));
}

BundleHead read_bundle_head(int fd, const std::string& what) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) fail_errno(what);
    BundleHead b;
    b.size = static_cast<uint64_t>(st.st_size);
    std::string head(bundle_header_size, '\0');
    if (b.size < head.size()) fail(what + ": not a bundle: it ends inside its header");
    pread_exact(fd, head.data(), head.size(), 0, what);
    b.header = decode_header(head, what);
    if (bundle_header_size + b.header.manifest_size + b.header.signature_size > b.size)
        fail(what + ": cut short: the bundle ends inside its manifest or signature (" + std::to_string(b.size) + " bytes)");
    b.manifest_bytes.resize(b.header.manifest_size);
    b.signature.resize(b.header.signature_size);
    pread_exact(fd, b.manifest_bytes.data(), b.manifest_bytes.size(), bundle_header_size, what);
    pread_exact(fd, b.signature.data(), b.signature.size(), bundle_header_size + b.header.manifest_size, what);
    b.manifest = BundleManifest::parse(b.manifest_bytes, what);
    return b;
}

std::string encode_header(const BundleHeader& h) {
    std::string out(bundle_header_size, '\0');
    std::memcpy(out.data(), bundle_magic, sizeof bundle_magic);
    out[8] = static_cast<char>(bundle_format);  // u32 little endian
    out[12] = static_cast<char>(bundle_header_size);
    put_le64(out, 16, h.manifest_size);
    put_le64(out, 24, h.signature_size);
    put_le64(out, 32, h.payload_offset);
    return out;
}

BundleHeader decode_header(std::string_view b, const std::string& what) {
    if (b.size() < bundle_header_size || std::memcmp(b.data(), bundle_magic, sizeof bundle_magic) != 0)
        fail(what + ": not a Cairn bundle (no CAIRNBND header)");
    uint32_t format = static_cast<uint32_t>(get_le64(b, 8) & 0xffffffff);
    uint32_t header_size = static_cast<uint32_t>(get_le64(b, 8) >> 32);
    if (format != bundle_format)
        fail(what + ": bundle format " + std::to_string(format) + " is not supported (this updater reads format " +
             std::to_string(bundle_format) + ")");
    if (header_size != bundle_header_size) fail(what + ": bad header size " + std::to_string(header_size));
    if (b.substr(40, bundle_header_size - 40).find_first_not_of('\0') != std::string_view::npos)
        fail(what + ": reserved header bytes are not zero");
    BundleHeader h{get_le64(b, 16), get_le64(b, 24), get_le64(b, 32)};
    if (h.manifest_size == 0 || h.manifest_size > max_manifest_size)
        fail(what + ": manifest size " + std::to_string(h.manifest_size) + " out of bounds");
    if (h.signature_size == 0 || h.signature_size > max_signature_size)
        fail(what + ": signature size " + std::to_string(h.signature_size) + " out of bounds");
    uint64_t end = checked_add(checked_add(bundle_header_size, h.manifest_size, what), h.signature_size, what);
    if (h.payload_offset < end || h.payload_offset % payload_alignment || h.payload_offset - end > max_signature_size + (64 << 10))
        fail(what + ": payload offset " + std::to_string(h.payload_offset) + " does not follow the signature");
    return h;
}

std::string BundleManifest::to_json() const {
    json j;
    j["format"] = format;
    j["compatible"] = compatible;
    j["version"] = version;
    j["build_id"] = build_id;
    j["created"] = created;
    if (!disk_guid.empty()) j["disk_guid"] = disk_guid;
    json ps = json::array();
    for (const Payload& p : payloads) {
        json pj = {{"name", p.name}, {"role", p.role}, {"offset", p.offset}, {"size", p.size}, {"sha256", p.sha256}};
        if (!p.slot.empty()) pj["slot"] = p.slot;
        if (p.chunk_size) pj["chunks"] = {{"size", p.chunk_size}, {"sha256", p.chunks}};
        if (p.role == "root-verity")
            pj["verity"] = {{"root_hash", p.root_hash}, {"salt", p.salt}, {"data_block_size", p.data_block_size},
                            {"hash_block_size", p.hash_block_size}, {"data_blocks", p.data_blocks}};
        ps.push_back(pj);
    }
    j["payloads"] = ps;
    j["etc"] = etc;
    if (reference) j["reference"] = json::parse(attestation::to_json(*reference));
    return j.dump(1) + "\n";
}

BundleManifest BundleManifest::parse(std::string_view text, const std::string& what) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail(what + ": the manifest is not a JSON object");
    JsonFields top{j, what + ": manifest"};
    top.only({"format", "compatible", "version", "build_id", "created", "disk_guid", "payloads", "etc", "reference"});
    BundleManifest m;
    if (top.i64("format") != bundle_format) fail(what + ": manifest format " + top.get("format").dump() + " is not supported");
    m.compatible = top.str("compatible");
    m.version = top.str("version");
    m.build_id = top.str("build_id");
    m.created = top.i64("created");
    m.disk_guid = top.str_or("disk_guid", "");
    if (!m.disk_guid.empty()) m.disk_guid = Uuid::parse(m.disk_guid, what + ": manifest: disk_guid").str();
    if (m.compatible.empty()) fail(what + ": manifest: \"compatible\" is empty");
    if (m.version.empty()) fail(what + ": manifest: \"version\" is empty");
    const json& ps = top.get("payloads");
    if (!ps.is_array() || ps.empty()) fail(what + ": manifest: \"payloads\" must be a non-empty array");
    std::set<std::string> names;
    uint64_t end = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
        if (!ps[i].is_object()) fail(what + ": manifest: payloads[" + std::to_string(i) + "] is not an object");
        JsonFields f{ps[i], what + ": manifest: payloads[" + std::to_string(i) + "]"};
        f.only({"name", "role", "slot", "offset", "size", "sha256", "verity", "chunks"});
        Payload p;
        p.name = f.str("name");
        p.role = f.str("role");
        p.slot = f.str_or("slot", "");
        p.offset = f.u64("offset");
        p.size = f.u64("size");
        p.sha256 = f.str("sha256");
        if (!names.insert(p.name).second) fail(f.where + ": a second payload named \"" + p.name + "\"");
        if (p.role != "root" && p.role != "root-verity" && p.role != "esp")
            fail(f.where + ": unknown role \"" + p.role + "\" (root, root-verity or esp)");
        if (p.slot != "" && p.slot != "a" && p.slot != "b") fail(f.where + ": unknown slot \"" + p.slot + "\" (a or b)");
        if (!is_lower_hex(p.sha256, 64)) fail(f.where + ": \"sha256\" must be 64 lower-case hex digits");
        if (p.size == 0) fail(f.where + ": \"size\" is 0");
        if (p.offset % payload_alignment) fail(f.where + ": \"offset\" is not a multiple of 4096");
        if (p.offset < end) fail(f.where + ": \"offset\" overlaps the payload before it (payloads go in order)");
        end = checked_add(p.offset, p.size, f.where + ": \"offset\" + \"size\"");
        if (p.role == "root-verity") {
            if (!ps[i].contains("verity") || !ps[i]["verity"].is_object()) fail(f.where + ": a root-verity payload needs \"verity\"");
            JsonFields v{ps[i]["verity"], f.where + ".verity"};
            v.only({"root_hash", "salt", "data_block_size", "hash_block_size", "data_blocks"});
            p.root_hash = v.str("root_hash");
            p.salt = v.str("salt");
            uint64_t dbs = v.u64("data_block_size"), hbs = v.u64("hash_block_size");
            p.data_blocks = v.u64("data_blocks");
            if (!is_lower_hex(p.root_hash, 64)) fail(v.where + ": \"root_hash\" must be 64 lower-case hex digits");
            if (!is_lower_hex(p.salt, 0) || p.salt.size() > 512) fail(v.where + ": \"salt\" must be hex, 256 bytes at most");
            for (uint64_t bs : {dbs, hbs})
                if (bs < 512 || bs > 4096 || (bs & (bs - 1))) fail(v.where + ": block sizes must be powers of two from 512 to 4096");
            p.data_block_size = static_cast<uint32_t>(dbs);
            p.hash_block_size = static_cast<uint32_t>(hbs);
            if (p.data_blocks == 0) fail(v.where + ": \"data_blocks\" is 0");
            checked_mul(p.data_blocks, p.data_block_size, v.where + ": \"data_blocks\" × \"data_block_size\"");
        } else if (ps[i].contains("verity")) {
            fail(f.where + ": only root-verity payloads carry \"verity\"");
        }
        if (ps[i].contains("chunks")) {
            if (p.role != "esp") fail(f.where + ": only esp payloads carry \"chunks\"");
            if (!ps[i]["chunks"].is_object()) fail(f.where + ": \"chunks\" must be an object");
            JsonFields c{ps[i]["chunks"], f.where + ".chunks"};
            c.only({"size", "sha256"});
            const uint64_t size = c.u64("size");
            if (size < 4096 || size > (1 << 20) || (size & (size - 1))) fail(c.where + ": \"size\" must be a power of two from 4096 to 1 MiB");
            p.chunk_size = static_cast<uint32_t>(size);
            p.chunks = c.str("sha256");
            const uint64_t count = (p.size + size - 1) / size;
            if (p.chunks.size() != count * 64 || !is_lower_hex(p.chunks, p.chunks.size()))
                fail(c.where + ": \"sha256\" must be " + std::to_string(count) + " digests of 64 lower-case hex digits, one after another");
        }
        m.payloads.push_back(std::move(p));
    }
    for (const char* role : {"root", "root-verity", "esp"})
        for (const char* slot : {"a", "b"})
            if (!m.find(role, slot)) fail(what + ": manifest: no " + std::string(role) + " payload for slot " + slot);
    // Each slot's tree covers exactly that slot's root (a tree for either slot may serve roots for
    // one slot each, and the other way round).
    for (const char* slot : {"a", "b"}) {
        const Payload* tree = m.find("root-verity", slot);
        const Payload* root = m.find("root", slot);
        const uint64_t covered = tree->data_blocks * tree->data_block_size;  // checked above
        if (root->size != covered)
            fail(what + ": manifest: payload " + tree->name + " covers " + std::to_string(covered) + " bytes but the root payload " +
                 root->name + " for slot " + slot + " has " + std::to_string(root->size));
    }
    if (j.contains("etc")) {
        const json& e = j["etc"];
        if (!e.is_object()) fail(what + ": manifest: \"etc\" must be an object");
        for (auto it = e.begin(); it != e.end(); ++it) {
            if (!it.value().is_string() || !is_lower_hex(it.value().get<std::string>(), 64) || it.key().rfind("/etc/", 0) != 0)
                fail(what + ": manifest: etc entry \"" + it.key() + "\" must map a path under /etc/ to a sha256");
            m.etc[it.key()] = it.value().get<std::string>();
        }
    }
    if (j.contains("reference")) {
        const json& r = j["reference"];
        if (!r.is_object()) fail(what + ": manifest: \"reference\" must be an object (a reference document)");
        m.reference = attestation::parse_reference(r.dump(), what + ": manifest: reference");
        if (m.reference->version != m.version)
            fail(what + ": manifest: reference: \"version\" " + m.reference->version + " is not the bundle's version " + m.version);
    }
    return m;
}

void index_chunks(Payload& p, std::string_view bytes, uint32_t chunk_size) {
    p.chunk_size = chunk_size;
    p.chunks.clear();
    for (size_t at = 0; at < bytes.size(); at += chunk_size) p.chunks += to_hex(sha256(bytes.substr(at, chunk_size)));
}

const Payload* BundleManifest::find(const std::string& role, const std::string& slot) const {
    const Payload* any = nullptr;
    for (const Payload& p : payloads) {
        if (p.role != role) continue;
        if (p.slot == slot) return &p;
        if (p.slot.empty()) any = &p;
    }
    return any;
}

BundleReader::BundleReader(const fs::path& source, const fs::path& trust_anchor, std::optional<int64_t> certificate_time)
    : BundleReader(open_file(source, O_RDONLY | O_CLOEXEC), source.string(), trust_anchor, certificate_time) {}

BundleReader::BundleReader(UniqueFd source, const std::string& name, const fs::path& trust_anchor,
                           std::optional<int64_t> certificate_time, std::chrono::milliseconds stall_timeout)
    : source_(name), name_(name), fd_(std::move(source)), stall_timeout_(stall_timeout) {
    const std::string what = name;
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) fail_errno(what);
    seekable_ = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode);
    if (seekable_ && ::lseek(fd_.get(), 0, SEEK_SET) != 0) fail_errno("seeking in " + what);  // a handed-over file is read whole
    std::string head;
    auto take = [&](uint64_t size, std::string& out) {
        out.resize(size);
        size_t done = 0;
        while (done < size) {
            ssize_t r = read_some(out.data() + done, size - done, what);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) fail_errno("reading " + what);
            if (r == 0) ended(what + ": the bundle ends inside its header, manifest or signature");
            done += static_cast<size_t>(r);
        }
        position_ += size;
    };
    take(bundle_header_size, head);
    BundleHeader h = decode_header(head, what);
    std::string signature;
    take(h.manifest_size, manifest_bytes_);
    take(h.signature_size, signature);
    with_code(ErrorCode::bad_signature, [&] { cms_verify(manifest_bytes_, signature, trust_anchor, what, certificate_time); });
    manifest_ = BundleManifest::parse(manifest_bytes_, what);
    manifest_sha256_ = to_hex(sha256(manifest_bytes_));
    if (!manifest_.payloads.empty() && manifest_.payloads.front().offset < h.payload_offset)
        fail(what + ": manifest: the first payload starts inside the signature");
    if (S_ISREG(st.st_mode)) {
        const Payload& last = manifest_.payloads.back();
        const uint64_t needed = checked_add(last.offset, last.size, what);
        if (static_cast<uint64_t>(st.st_size) < needed)
            fail(what + ": the bundle is truncated (" + std::to_string(st.st_size) + " bytes; the manifest needs " +
                 std::to_string(needed) + ")");
    }
}

void BundleReader::ended(const std::string& message) const {
    // A file cut short is a bad bundle; a pipe that ends early lost its sender.
    fail_update(seekable_ ? ErrorCode::bad_bundle : ErrorCode::transfer, message);
}

ssize_t BundleReader::read_some(void* buffer, size_t size, const std::string& what) {
    if (!seekable_) {
        pollfd p{fd_.get(), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(stall_timeout_.count()));
        if (ready < 0) return -1;  // errno set; EINTR retries
        if (ready == 0) {
            char seconds[32];
            std::snprintf(seconds, sizeof seconds, "%g", static_cast<double>(stall_timeout_.count()) / 1000);
            fail_update(ErrorCode::transfer, what + ": no data for " + seconds + " s: the sender stalled");
        }
    }
    return ::read(fd_.get(), buffer, size);
}

void BundleReader::skip_to(uint64_t offset) {
    if (offset < position_) fail(source_.string() + ": payloads must be read in order");
    if (seekable_) {
        if (::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_SET) < 0) fail_errno("seeking in " + source_.string());
        position_ = offset;
        return;
    }
    std::vector<char> buffer(1 << 16);
    while (position_ < offset) {
        ssize_t r = read_some(buffer.data(), std::min<uint64_t>(buffer.size(), offset - position_), source_.string());
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) fail_errno("reading " + source_.string());
        if (r == 0) ended(source_.string() + ": the bundle ends before its payloads");
        position_ += static_cast<uint64_t>(r);
    }
}

void BundleReader::read(const Payload& p, const std::function<void(const uint8_t*, size_t)>& sink) {
    const std::string what = source_.string() + ": payload " + p.name;
    skip_to(p.offset);
    Sha256 hash;
    constexpr size_t chunk = 4 << 20;
    std::vector<uint8_t> buffer(chunk);
    uint64_t left = p.size;
    while (left > 0) {
        ssize_t r = read_some(buffer.data(), std::min<uint64_t>(chunk, left), what);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) fail_errno("reading " + what);
        if (r == 0) ended(what + ": the bundle ends inside it");
        hash.update(buffer.data(), static_cast<size_t>(r));
        sink(buffer.data(), static_cast<size_t>(r));
        left -= static_cast<uint64_t>(r);
        position_ += static_cast<uint64_t>(r);
    }
    if (to_hex(hash.final()) != p.sha256) fail_update(ErrorCode::bad_payload, what + ": sha256 does not match the manifest (corrupted or altered bundle)");
}

}  // namespace cairn::updater
