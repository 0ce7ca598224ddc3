// Update bundles: the one file `cairn bundle` makes on the build host and cairn-updated installs.
// The format is described in docs/bundle.md; in short:
//
//   [0, 64)                 header: magic "CAIRNBND", format, sizes (little endian)
//   [64, 64 + m)            manifest: JSON (compatible, version, build id, payloads, /etc digests)
//   [64 + m, 64 + m + s)    CMS signature (DER, detached) over the manifest bytes
//   zeros up to payload_offset (a multiple of 4096)
//   payloads, in manifest order, each at its 4096-aligned offset
//
// Everything the device must trust before writing a byte is at the head of the file, so a reader
// checks header, signature and manifest first and then consumes the payloads in order while
// hashing them: the same code can install from a file, a block device or a stream.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/versions.hpp"
#include "attestation/reference.hpp"
#include "common/fd.hpp"
#include "common/hash.hpp"
#include "updater/error_code.hpp"

namespace cairn::updater {

inline constexpr char bundle_magic[8] = {'C', 'A', 'I', 'R', 'N', 'B', 'N', 'D'};
inline constexpr uint32_t bundle_format = 1;
inline constexpr uint64_t bundle_header_size = 64;
inline constexpr uint64_t payload_alignment = 4096;
inline constexpr uint64_t max_manifest_size = 4 << 20;   // a reader refuses more before allocating
inline constexpr uint64_t max_signature_size = 64 << 10;

struct BundleHeader {
    uint64_t manifest_size = 0;
    uint64_t signature_size = 0;
    uint64_t payload_offset = 0;  // multiple of payload_alignment, after manifest and signature
};
std::string encode_header(const BundleHeader& header);
// Throws Error naming `what` on a wrong magic, unknown format or sizes out of bounds.
BundleHeader decode_header(std::string_view bytes, const std::string& what);

// One payload: bytes for one partition role, for both slots (slot empty) or for one.
struct Payload {
    std::string name;   // "root", "root-verity-a", "esp-b", ...
    std::string role;   // "root", "root-verity" or "esp"
    std::string slot;   // "" (either slot), "a" or "b"
    uint64_t offset = 0, size = 0;
    std::string sha256;  // hex, of the payload's bytes
    // root-verity only: what the tree must give over the root payload.
    std::string root_hash, salt;  // hex
    uint32_t data_block_size = 0, hash_block_size = 0;
    uint64_t data_blocks = 0;
    // esp only, optional: the sha256 of each chunk_size bytes (the last chunk shorter), hex, one
    // after another. An install from a server takes the chunks the device already has from its
    // ESPs and fetches the rest (engine.cpp). 0 and empty in bundles made before it was carried.
    uint32_t chunk_size = 0;
    std::string chunks;
};

// The chunk size `cairn bundle` indexes ESPs with. A new build changes a few 4 KiB blocks of the
// ESP (the UKI's os-release and command line); 64 KiB chunks find them with an index of 32 bytes
// per 64 KiB (a 25 MiB ESP: 400 digests, 26 KB of manifest), at the price of 60 KiB more fetched
// per changed block.
inline constexpr uint32_t esp_chunk_size = 64 << 10;
// Fills p.chunk_size and p.chunks from the payload's bytes.
void index_chunks(Payload& p, std::string_view bytes, uint32_t chunk_size = esp_chunk_size);

struct BundleManifest {
    int format = static_cast<int>(bundle_format);
    std::string compatible, version, build_id;
    // The GPT disk GUID its UKIs' signed command lines name (cairn.disk=): a device whose disk has
    // another GUID could not boot them. Empty in bundles made before it was recorded.
    std::string disk_guid;
    int64_t created = 0;  // seconds since the epoch (SOURCE_DATE_EPOCH of the build)
    std::vector<Payload> payloads;
    std::map<std::string, std::string> etc;  // "/etc/x" -> sha256 hex of the new root's default
    // The image's reference document (attestation/reference.hpp): what a good boot of each of its
    // slots measures, signed by the same signature as the rest of the manifest. Unset in bundles
    // made before it was carried (or from a build without UKIs); the updater installs those all the same.
    std::optional<attestation::ReferenceDocument> reference;

    std::string to_json() const;
    // Strict: unknown format, missing or mistyped fields, bad hex, payloads that overlap, are not
    // aligned or not in order, unknown roles or slots: Error naming `what` and the field.
    static BundleManifest parse(std::string_view json, const std::string& what);
    // The payload for a role and slot: the slot's own, else the one for either slot; nullptr if none.
    const Payload* find(const std::string& role, const std::string& slot) const;
};

// A bundle file's head as it is on the build host, not yet trusted: header, manifest bytes and
// signature, the manifest parsed, and the file's size. Throws Error naming `what` when the file is
// no bundle or ends inside its head. The caller checks the signature if it must.
struct BundleHead {
    BundleHeader header;
    std::string manifest_bytes, signature;
    BundleManifest manifest;
    uint64_t size = 0;
    void require_payloads(const std::string& what) const;  // Error when the file ends inside a payload
};
BundleHead read_bundle_head(int fd, const std::string& what);

// Versions are compared as common/versions.hpp says (compare_versions, version_problem).

// Where a ranged source's bytes go (RangeSource::fetch): take() gets them in bundle order, from
// position() on. It returns false when what it got is bad (a block that does not match its signed
// hash): the request is dropped and the next one starts at position() again. restart() comes
// before every request: bytes it held back (part of a block) are dropped, as the request sends
// them again.
class RangeSink {
public:
    virtual ~RangeSink() = default;
    virtual uint64_t position() const = 0;
    virtual void restart() = 0;
    virtual bool take(const uint8_t* data, size_t size) = 0;
};

// What a ranged source moved, for the install's report.
struct TransferStats {
    uint64_t downloaded = 0;  // body bytes received (head, payloads, and bytes fetched again)
    uint64_t requests = 0;
    uint64_t retries = 0;     // requests that repeated or continued a failed one
    uint64_t multi_range_requests = 0;  // requests that asked for several ranges at once
};

// A bundle read by byte ranges (an HTTP(S) server): any range, in any order, each fetched with as
// many requests as it takes (a cut connection continues where the sink stopped).
class RangeSource {
public:
    virtual ~RangeSource() = default;
    // Fetches until sink.position() reaches `end`; throws UpdateError (transfer when the server
    // cannot be had after the retries, source-changed when the bundle changed on the server).
    virtual void fetch(uint64_t end, RangeSink& sink) = 0;
    // Several ranges: each run's bytes from its sink's position() up to `end`. Runs are in bundle
    // order and do not overlap. A source that can fetches many in one request (HTTP multi-range);
    // the same guarantees as fetch() for each. By default, one fetch() after the other.
    struct Run {
        uint64_t end;
        RangeSink* sink;
    };
    virtual void fetch_many(const std::vector<Run>& runs) {
        for (const Run& r : runs) fetch(r.end, *r.sink);
    }
    virtual TransferStats stats() const = 0;
};

// Gathers a range from `start` into a string.
class StringSink final : public RangeSink {
public:
    StringSink(uint64_t start, std::string& out) : start_(start), out_(out) {}
    uint64_t position() const override { return start_ + out_.size(); }
    void restart() override {}
    bool take(const uint8_t* data, size_t size) override {
        out_.append(reinterpret_cast<const char*>(data), size);
        return true;
    }

private:
    uint64_t start_;
    std::string& out_;
};

// Bytes [start, end) of a ranged source, whole (a head, a table, a frame).
std::string fetch_range(RangeSource& source, uint64_t start, uint64_t end);

// What the install steps (updater/engine.hpp) read a bundle through: its manifest, checked against
// its signature when the source was opened, and its payloads. A local file or block device is one
// (BundleReader); a later source (HTTP range requests for streaming) implements the same.
class BundleSource {
public:
    virtual ~BundleSource() = default;
    virtual const std::string& name() const = 0;  // names the bundle in messages
    virtual const BundleManifest& manifest() const = 0;
    // Hex sha256 of the signed manifest's bytes: what names this exact bundle (a delta names the
    // bundle it leads to by it).
    virtual const std::string& manifest_sha256() const = 0;
    // Payloads can be read at any offset and more than once (a file, a block device): the install
    // then checks them all before it writes, and reads them again to write. Otherwise they are read
    // once, in manifest order, by read(), and checked as they arrive.
    virtual bool random_access() const = 0;
    // random_access() only: a descriptor pread(2) reads the bundle's bytes from (at their offsets in
    // the bundle), from several threads at once. A remote source serves one through a block device
    // (NBD, as RAUC does) or a local cache.
    virtual int fd() const = 0;
    // Consumes the payload (payloads must be taken in manifest order; those in between are
    // skipped), giving its bytes to `sink` in chunks, and checks its size and sha256 at the end:
    // a mismatch throws UpdateError (bad-payload). `sink` sees every byte before the check: a
    // caller that writes them somewhere must treat that place as untrusted until read() returns.
    virtual void read(const Payload& payload, const std::function<void(const uint8_t*, size_t)>& sink) = 0;
    // A source that fetches byte ranges (HTTP): the install takes tree, ESP and root by ranges,
    // each checked before it is written, and fetches only the root blocks the device lacks
    // (engine.cpp, "write"). nullptr for a file or pipe.
    virtual RangeSource* ranges() { return nullptr; }
    // A source on a server: where a delta from build `from_build_id` to this bundle would be
    // (updater/delta.hpp), read by ranges as the bundle is; nothing is fetched yet. nullptr for a
    // file or pipe, or when deltas are turned off.
    virtual std::unique_ptr<RangeSource> delta(const std::string& /*from_build_id*/) { return nullptr; }
};

// Reads a bundle from a file, a block device or a pipe, in one pass. Failures are Errors naming
// the source; with a code (UpdateError) where the reader knows it: bad-signature, bad-payload,
// transfer (a pipe that stalls or ends early); the rest is the caller's to classify (a malformed
// header or manifest, a bundle cut short: bad-bundle).
class BundleReader final : public BundleSource {
public:
    // Opens `source`, reads header, manifest and signature, checks the signature against the
    // PEM certificates in `trust_anchor` (certificates valid at `certificate_time`, unset: the
    // clock; see cms_verify) and parses the manifest. Throws Error naming the source.
    BundleReader(const std::filesystem::path& source, const std::filesystem::path& trust_anchor,
                 std::optional<int64_t> certificate_time = {});
    // The same from an open descriptor (a pipe from `cairnctl update install -`, a file handed over
    // D-Bus), read from its current position; `name` names it in errors.
    // A source that is not seekable and sends nothing for `stall_timeout` fails with an Error.
    BundleReader(UniqueFd source, const std::string& name, const std::filesystem::path& trust_anchor,
                 std::optional<int64_t> certificate_time = {},
                 std::chrono::milliseconds stall_timeout = std::chrono::minutes(5));
    const std::string& name() const override { return name_; }
    const BundleManifest& manifest() const override { return manifest_; }
    const std::string& manifest_bytes() const { return manifest_bytes_; }
    const std::string& manifest_sha256() const override { return manifest_sha256_; }
    // The reference document the signed manifest carries (what the verifier expects of a slot
    // booted from this bundle); unset for bundles without one.
    const std::optional<attestation::ReferenceDocument>& reference() const { return manifest_.reference; }
    bool random_access() const override { return seekable_; }
    int fd() const override { return fd_.get(); }
    void read(const Payload& payload, const std::function<void(const uint8_t*, size_t)>& sink) override;
    const std::filesystem::path& source() const { return source_; }
    bool seekable() const { return seekable_; }

private:
    void skip_to(uint64_t offset);
    [[noreturn]] void ended(const std::string& message) const;  // the source ended too early
    // read(2) that waits at most stall_timeout_ for a pipe to have data.
    ssize_t read_some(void* buffer, size_t size, const std::string& what);
    std::filesystem::path source_;
    std::string name_;
    UniqueFd fd_;
    uint64_t position_ = 0;
    bool seekable_ = false;
    BundleManifest manifest_;
    std::string manifest_bytes_, manifest_sha256_;
    std::chrono::milliseconds stall_timeout_;
};

}  // namespace cairn::updater
