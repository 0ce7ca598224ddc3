// The stages of `cairn build` and the one context they share. The pipeline itself, in order, is
// the table in imager/build.cpp (build_pipeline()); each stage reads what earlier stages left in
// the BuildContext and adds its own part. A new stage is a function here and a row in the table.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <future>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/progress.hpp"
#include "common/uuid.hpp"
#include "attestation/reference.hpp"
#include "imager/build.hpp"
#include "imager/recipe.hpp"
#include "imager/tree.hpp"
#include "imager/verity.hpp"
#include "partitions/layout.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

// One slot's root: the same filesystem image, its own verity salt, hash tree and root hash.
struct SlotRoot {
    char slot = 0;  // 0: an image without slots
    std::string root_label, verity_label;
    verity::Params params;
    verity::Result result;
    fs::path hash_file;
};

// The kernel package, unpacked into a tree of its own beside the staging tree (kernel-ahead).
struct KernelAhead {
    std::string package, version, architecture, release, sha256;
    fs::path deb;
    Tree tree;
};

struct BuildContext {
    // What the build was asked for, read once at the start.
    const BuildOptions& options;
    fs::path work;      // the build's temporary folder inside the output folder
    int64_t epoch = 0;  // every timestamp in the image
    Recipe recipe;
    partitions::Layout layout;
    fs::path cache;  // downloaded packages
    Progress* progress = nullptr;

    // What the stages make, in the order they make it.
    Tree tree;                                // packages, root-tree, kernel, device-files
    std::future<KernelAhead> kernel_ahead;    // kernel-ahead: running while the packages install; kernel waits for it
    nlohmann::json packages = nullptr;        // packages: how many, from which lock
    bool systemd = false;                     // packages: the tree's init is systemd (imager/systemd.hpp)
    std::map<std::pair<std::string, std::string>, std::string> deb_sha256;  // packages: (name, architecture) -> its .deb's sha256
    nlohmann::json inputs = nlohmann::json::array();  // every input, for the manifest and the build id
    nlohmann::json kernel = nullptr;          // kernel: package, version, release, vmlinuz
    nlohmann::json initrd = nullptr;          // initrd
    std::string os_release;                   // device-files: /etc/os-release, also the UKIs' .osrel
    std::string build_id;                     // device-files: from every input, the version and the epoch
    nlohmann::json update = nullptr;          // device-files: what updates need to know (manifest "update")
    nlohmann::json sbom = nullptr;            // sbom: sbom.cdx.json
    fs::path rootfs_image;                    // root-filesystem
    uint64_t rootfs_size = 0;
    Uuid rootfs_uuid;
    std::vector<SlotRoot> roots;              // one per root partition; verity fills in the trees
    std::map<char, fs::path> ukis;            // ukis: slot -> signed UKI
    nlohmann::json uki = nlohmann::json::object();
    attestation::ReferenceDocument reference;  // reference: what a good boot of each slot measures
    std::vector<std::pair<std::string, fs::path>> reference_files;  // reference: ESP path -> the signed document's files ([attestation])
    std::map<std::string, fs::path> esp_images;  // esps: partition label -> FAT image
    fs::path disk;                            // disk-roots, disk
    std::future<void> disk_writeback;         // disk-roots: the roots being written out; disk waits for it
    nlohmann::json disk_formats = nlohmann::json::array();  // disk-formats: disk.qcow2 etc.
    std::vector<fs::path> artifacts;          // files in `work` that end up in the output folder
    nlohmann::json manifest;                  // manifest

    BuildContext(const BuildOptions& options, const fs::path& work);
};

struct Stage {
    std::string_view name;                         // a short name: "verity", "root-filesystem"
    bool (*applies)(const BuildContext&);          // nullptr: always
    std::string (*title)(const BuildContext&);     // its numbered progress line; nullptr: no line of its own
    void (*run)(BuildContext&);
};

// The pipeline, in order (imager/build.cpp).
const std::vector<Stage>& build_pipeline();

// The names of the stages a build of this context runs, in order.
std::vector<std::string> planned_stages(const BuildContext& context);

// Runs every stage that applies, with numbered progress lines for those that have a title.
void run_pipeline(BuildContext& context);

// The stages (imager/build_stages.cpp).
namespace stages {
void staging(BuildContext& c);          // as root, with room: the staging tree in memory (imager/tree.hpp)
void kernel_ahead(BuildContext& c);     // starts fetching and unpacking the kernel package beside the tree
void packages(BuildContext& c);         // Debian packages, resolved by apt (or the lock), installed by dpkg
void root_tree(BuildContext& c);        // the recipe's rootfs steps into the staging tree
void kernel(BuildContext& c);           // the kernel package (kernel-ahead's): modules into the tree, depmod; vmlinuz aside
void initrd(BuildContext& c);           // cairn-init and the kernel modules it needs
void device_files(BuildContext& c);     // os-release, firewall, provisioning, sshd, updater
void check_libraries(BuildContext& c);  // every program in the tree can be loaded
void sbom(BuildContext& c);             // sbom.cdx.json: packages, Cairn's programs, the recipe's files
void image_var(BuildContext& c);        // packages' /var into the root's factory; the dpkg database into /usr
void early_boot(BuildContext& c);       // systemd images: the modules and mounts cairn-init does for systemd
void read_ahead(BuildContext& c);       // systemd images: the files the boot reads, for cairn-init to read ahead
void root_filesystem(BuildContext& c);  // the tree becomes rootfs.img (erofs or ext4)
void disk_roots(BuildContext& c);       // disk.raw begun: the root in each slot, written out in the background
void verity(BuildContext& c);           // a dm-verity hash tree per slot; names the root partitions
void ukis(BuildContext& c);             // a signed unified kernel image per slot
void reference(BuildContext& c);        // the reference values predicted from the UKIs; signed with [attestation]
void esps(BuildContext& c);             // the EFI System Partitions (and the ESP images bundles carry)
void disk(BuildContext& c);             // disk.raw finished: verity trees, ESPs, markers, synced, then the GPT
void disk_formats(BuildContext& c);     // --format: disk.raw converted to qcow2, vhdx, vmdk
void manifest(BuildContext& c);         // manifest.json's content
void publish(BuildContext& c);          // the artifacts into the output folder, manifest.json last
}  // namespace stages

}  // namespace cairn::imager
