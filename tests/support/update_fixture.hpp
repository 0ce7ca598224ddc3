// A small, real update setup for the updater's tests: a GPT disk image file with the A/B
// partitions, a root "filesystem" of random bytes with its verity trees, ESP images, and signed
// bundles made of them with the test CA in recipes/keys.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "updater/bundle.hpp"

namespace cairn::test {

struct UpdateFixture {
    std::filesystem::path dir;
    std::filesystem::path disk;          // GPT: esp_a root_a root_a_verity esp_b root_b root_b_verity data
    std::filesystem::path trust_anchor;  // recipes/keys/update-ca.pem
    std::filesystem::path key, cert;     // recipes/keys/update-signer.*

    // root_partition: the size of root_a and root_b (their trees get 1/64 of it, at least 1 MiB).
    explicit UpdateFixture(const std::filesystem::path& dir, uint64_t root_partition = 8 << 20);
    // Payload files for a version (different versions get different bytes) and a signed bundle
    // of them. `edit` may change the manifest before signing (and so sign something wrong).
    std::filesystem::path bundle(const std::string& version, const std::string& compatible = "cairn-test",
                                 const std::function<void(updater::BundleManifest&)>& edit = {},
                                 uint64_t root_size = 1 << 20);
    // The bytes of a disk region (by partition label), for before/after comparisons.
    std::string region(const std::string& label, uint64_t length = 0) const;
    // The root payload's bytes for a version (unset: random bytes seeded by the version); the
    // adaptive install's tests make versions that share blocks.
    std::function<std::string(const std::string& version, uint64_t size)> root_bytes;
    // The same for a slot's ESP (unset: 65 KiB of random bytes seeded by version and slot).
    std::function<std::string(const std::string& version, char slot)> esp_bytes;
    // Writes a version's root, the slot's tree and the slot's ESP (from an earlier bundle() of it)
    // into the slot's partitions, as if that version ran there.
    void put(const std::string& version, char slot);
};

// A signer certificate made with the openssl tool: key and certificate at dir/<name>.key and
// dir/<name>.pem, subject CN=<name>, issued by `ca` (with its key `ca_key`) with the X.509v3
// extensions given (lines of an openssl extension file).
void make_signer(const std::filesystem::path& dir, const std::string& name, const std::filesystem::path& ca,
                 const std::filesystem::path& ca_key, const std::string& extensions);
// The extensions of a bundle signer: digitalSignature and the Cairn bundle-signing extended key usage.
std::string bundle_signer_extensions();

}  // namespace cairn::test
