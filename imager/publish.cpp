#include "imager/publish.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <ctime>

#include "common/error.hpp"
#include "common/file.hpp"
#include "updater/bundle.hpp"
#include "updater/signature.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

void check_channel_name(const std::string& name) {
    if (name.empty() || name.size() > 64 || name[0] == '.' || name[0] == '-')
        fail("channel name \"" + name + "\": 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'");
    for (char c : name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
            fail("channel name \"" + name + "\": only letters, digits, '.', '_' and '-'");
}

// The `published` of the index about to be replaced, or 0 (none, or not one of ours).
int64_t previous_published(const fs::path& index_file) {
    std::error_code ec;
    if (!fs::exists(index_file, ec)) return 0;
    try {
        const json j = json::parse(read_file(index_file));
        return j.at("signed").at("published").get<int64_t>();
    } catch (const std::exception&) {
        return 0;
    }
}

}  // namespace

PublishResult publish(const PublishOptions& o) {
    check_channel_name(o.channel);
    const std::string what = o.bundle.string();
    std::error_code ec;
    if (!fs::exists(o.bundle, ec)) fail(what + ": no such file");
    if (!fs::is_regular_file(o.bundle, ec)) fail(what + ": not a bundle file");
    updater::check_bundle_signer(o.cert);

    // The bundle's head: its signature must be intact (and trusted, with an anchor).
    UniqueFd fd = open_file(o.bundle, O_RDONLY | O_CLOEXEC);
    const updater::BundleHead head = updater::read_bundle_head(fd.get(), what);
    const uint64_t size = head.size;
    updater::cms_signers(head.manifest_bytes, head.signature, what);
    const int64_t now = o.now ? o.now : static_cast<int64_t>(std::time(nullptr));
    if (!o.trust_anchor.empty()) updater::cms_verify(head.manifest_bytes, head.signature, o.trust_anchor, what, now);
    const updater::BundleManifest& m = head.manifest;
    head.require_payloads(what);

    fs::create_directories(o.out_dir);
    PublishResult r;
    r.index_file = o.out_dir / (o.channel + ".json");
    updater::ChannelIndex& i = r.index;
    i.channel = o.channel;
    i.compatible = m.compatible;
    i.version = m.version;
    i.build_id = m.build_id;
    i.bundle = o.url.empty() ? o.bundle.filename().string() : o.url;
    if (!o.url.empty()) updater::resolve_bundle_url("https://server/" + o.channel + ".json", o.url);  // refuses what devices would
    i.size = size;
    i.published = std::max(now, previous_published(r.index_file) + 1);
    if (o.expires_days) i.expires = i.published + int64_t{*o.expires_days} * 86400;
    const std::string text = updater::make_channel_file(i, o.key, o.cert, o.key_passphrase, now);
    if (!o.trust_anchor.empty()) updater::open_channel_file(text, o.trust_anchor, now, r.index_file.string());

    if (!o.url.empty() && !o.delta_from.empty()) fail("--delta-from writes deltas beside the bundle, which --url puts elsewhere");
    if (o.url.empty()) {
        r.bundle_file = o.out_dir / o.bundle.filename();
        if (!fs::equivalent(o.bundle, r.bundle_file, ec)) {
            const fs::path partial = r.bundle_file.string() + ".partial";
            UniqueFd out = open_file(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
            // Its full length first: a hole at the end is not copied, and must still be there.
            if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) fail_errno("ftruncate " + partial.string());
            copy_sparse(fd.get(), 0, out.get(), 0, size, partial.string());
            if (::fsync(out.get()) != 0) fail_errno("fsync " + partial.string());
            out.reset();
            fs::rename(partial, r.bundle_file);
        }
    }
    for (const fs::path& old : o.delta_from) {
        DeltaOptions d;
        d.from = old;
        d.to = r.bundle_file;
        d.level = o.delta_level;
        r.deltas.push_back(make_delta(d));
    }
    write_file_atomic(r.index_file, text);
    return r;
}

}  // namespace cairn::imager
