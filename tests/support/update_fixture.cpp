#include "tests/support/update_fixture.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "imager/verity.hpp"
#include "common/subprocess.hpp"
#include "partitions/gpt.hpp"
#include "partitions/layout.hpp"
#include "tests/support/test_support.hpp"
#include "updater/signature.hpp"

namespace cairn::test {

namespace fs = std::filesystem;

namespace {
constexpr uint64_t MiB = 1 << 20;
partitions::GptEntry entry(partitions::Role role, char slot, uint64_t offset, uint64_t size, int n) {
    partitions::GptEntry e;
    const std::string label = partitions::label_for(role, slot);
    e.label = label;
    e.type = partitions::type_for(role);
    e.uuid = Uuid::derive("cairn-test", "uuid:" + label + std::to_string(n));
    e.offset = offset;
    e.size = size;
    return e;
}
uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
}  // namespace

UpdateFixture::UpdateFixture(const fs::path& d, uint64_t root_partition) : dir(d) {
    const uint64_t tree_partition = std::max<uint64_t>(MiB, round_up(root_partition / 64, MiB));
    disk = dir / "disk.img";
    trust_anchor = source_dir() / "recipes/keys/update-ca.pem";
    key = source_dir() / "recipes/keys/update-signer.key";
    cert = source_dir() / "recipes/keys/update-signer.pem";
    partitions::GptTable t;
    t.disk_guid = Uuid::derive("cairn-test", "disk");
    t.disk_size = 2 * (2 * MiB + root_partition + tree_partition) + 6 * MiB;
    uint64_t at = MiB;
    int n = 0;
    using partitions::Role;
    for (char slot : {'a', 'b'}) {
        for (auto [role, size] : {std::pair{Role::Esp, 2 * MiB}, {Role::Root, root_partition}, {Role::RootVerity, tree_partition}}) {
            t.entries.push_back(entry(role, slot, at, size, n++));
            at += size;
        }
    }
    t.entries.push_back(entry(Role::Data, 0, at, 4 * MiB, n++));
    {
        UniqueFd fd = open_file(disk, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (::ftruncate(fd.get(), static_cast<off_t>(t.disk_size)) != 0) fail_errno("sizing " + disk.string());
    }
    partitions::write_gpt(disk, t);
}

fs::path UpdateFixture::bundle(const std::string& version, const std::string& compatible,
                               const std::function<void(updater::BundleManifest&)>& edit, uint64_t root_size) {
    const fs::path work = dir / ("payloads-" + version);
    fs::create_directories(work);
    uint32_t seed = static_cast<uint32_t>(sha256(version)[0]) + 1;
    if (root_bytes) {
        const std::string bytes = root_bytes(version, root_size);
        UniqueFd fd = open_file(work / "root", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        pwrite_exact(fd.get(), bytes.data(), bytes.size(), 0, (work / "root").string());
    } else {
        write_random(work / "root", root_size, seed);
    }
    // Not a multiple of 4096: the ESP's last bytes take the installer's buffered path.
    for (const char slot : {'a', 'b'}) {
        const fs::path file = work / (std::string("esp-") + slot);
        if (esp_bytes) write_file_atomic(file, esp_bytes(version, slot));
        else write_random(file, 64 * 1024 + 1000, seed + (slot == 'a' ? 1 : 2));
    }
    updater::BundleManifest m;
    m.compatible = compatible;
    m.version = version;
    m.build_id = "test-" + version;
    m.created = 1700000000;
    m.etc["/etc/hostname"] = to_hex(sha256("cairn\n"));
    m.etc["/etc/app.conf"] = to_hex(sha256("setting=" + version + "\n"));
    std::vector<std::pair<updater::Payload, fs::path>> files;
    auto add = [&](const std::string& name, const std::string& role, const std::string& slot, const fs::path& file) {
        updater::Payload p;
        p.name = name;
        p.role = role;
        p.slot = slot;
        p.size = fs::file_size(file);
        p.sha256 = sha256_file_hex(file);
        files.push_back({p, file});
        return &files.back().first;
    };
    add("root", "root", "", work / "root");
    for (const char* slot : {"a", "b"}) {
        verity::Params params;
        params.data_blocks = root_size / 4096;
        params.salt = std::vector<uint8_t>(32, static_cast<uint8_t>(slot[0]));
        params.uuid = Uuid::derive("cairn-test", std::string("verity-") + slot);
        const fs::path tree = work / (std::string("verity-") + slot);
        UniqueFd data = open_file(work / "root", O_RDONLY);
        UniqueFd hash = open_file(tree, O_RDWR | O_CREAT | O_TRUNC, 0644);
        verity::Result r = verity::format(data.get(), 0, hash.get(), 0, params, 1);
        updater::Payload* p = add(std::string("root-verity-") + slot, "root-verity", slot, tree);
        p->root_hash = to_hex(r.root_hash);
        p->salt = to_hex(params.salt);
        p->data_block_size = 4096;
        p->hash_block_size = 4096;
        p->data_blocks = params.data_blocks;
    }
    for (const char* slot : {"a", "b"}) {  // indexed as `cairn bundle` does, in 4 KiB chunks (the ESPs are small here)
        const fs::path esp = work / (std::string("esp-") + slot);
        updater::index_chunks(*add(std::string("esp-") + slot, "esp", slot, esp), read_file(esp), 4096);
    }
    uint64_t offset = round_up(updater::bundle_header_size + 8 * 1024 + updater::max_signature_size, 4096);
    for (auto& [p, f] : files) {
        p.offset = offset;
        m.payloads.push_back(p);
        offset = round_up(offset + p.size, 4096);
    }
    if (edit) edit(m);
    const std::string manifest = m.to_json();
    const std::string signature = updater::cms_sign(manifest, key, cert);
    updater::BundleHeader h{manifest.size(), signature.size(), round_up(updater::bundle_header_size + manifest.size() + signature.size(), 4096)};
    if (!m.payloads.empty()) h.payload_offset = std::min(h.payload_offset, m.payloads.front().offset);
    const fs::path out = dir / ("bundle-" + version + ".cairn");
    UniqueFd fd = open_file(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
    std::string head = updater::encode_header(h) + manifest + signature;
    pwrite_exact(fd.get(), head.data(), head.size(), 0, out.string());
    for (auto& [p, f] : files) {
        std::string bytes = read_file(f);
        pwrite_exact(fd.get(), bytes.data(), bytes.size(), p.offset, out.string());
    }
    return out;
}

void UpdateFixture::put(const std::string& version, char slot) {
    const fs::path work = dir / ("payloads-" + version);
    const std::string s(1, slot);
    for (const auto& e : partitions::read_gpt(disk).entries) {
        fs::path from;
        if (e.label == "root_" + s) from = work / "root";
        else if (e.label == "root_" + s + "_verity") from = work / ("verity-" + s);
        else if (e.label == "esp_" + s) from = work / ("esp-" + s);
        else continue;
        const std::string bytes = read_file(from);
        UniqueFd fd = open_file(disk, O_RDWR);
        pwrite_exact(fd.get(), bytes.data(), bytes.size(), e.offset, disk.string());
    }
}

std::string UpdateFixture::region(const std::string& label, uint64_t length) const {
    for (const auto& e : partitions::read_gpt(disk).entries)
        if (e.label == label) {
            std::string out(length ? length : e.size, '\0');
            UniqueFd fd = open_file(disk, O_RDONLY);
            pread_exact(fd.get(), out.data(), out.size(), e.offset, disk.string());
            return out;
        }
    fail(disk.string() + ": no partition " + label);
}

void make_signer(const fs::path& dir, const std::string& name, const fs::path& ca, const fs::path& ca_key,
                 const std::string& extensions) {
    const fs::path base = dir / name;
    write_text(base.string() + ".ext", extensions);
    run_checked({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", base.string() + ".key",
                 "-out", base.string() + ".csr", "-subj", "/CN=" + name});
    run_checked({"openssl", "x509", "-req", "-in", base.string() + ".csr", "-CA", ca.string(), "-CAkey", ca_key.string(), "-set_serial",
                 "7", "-extfile", base.string() + ".ext", "-out", base.string() + ".pem", "-days", "3650"});
}

std::string bundle_signer_extensions() {
    return std::string("basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = ") +
           updater::bundle_signing_eku + "\n";
}

}  // namespace cairn::test
