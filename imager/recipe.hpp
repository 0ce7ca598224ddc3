// Recipes: the TOML file a user writes to describe an image. See README.md, "Recipe reference".
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "partitions/layout.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

// An owner or group: a number, or a name looked up in the root tree's /etc/passwd or /etc/group.
struct Id {
    std::optional<uint32_t> number;
    std::string name;
};

// One step that adds to the root tree; steps apply in the order the recipe lists them.
struct Step {
    enum class Kind { Tree, Tar, Deb, HostFile, HostExec, File, Directory, Symlink };
    Kind kind = Kind::File;
    fs::path source;                 // host input (tree, tar, deb file, host-file, host-exec, file source)
    std::string package;             // deb by Debian package name
    std::string path;                // where in the image ("/usr/bin/x"); tree, tar, deb: the directory to unpack into
    std::string target;              // symlink target
    std::optional<std::string> content;  // file content given inline
    std::optional<uint32_t> mode;    // permission bits (07777)
    std::optional<Id> owner, group;
    std::string where;               // "recipes/minimal.toml:30: rootfs.add[2]"
};

struct Recipe {
    fs::path file;                   // the recipe as given
    std::string name, version, compatible, seed;
    // [os_release]: fields added to the /etc/os-release the build makes from name and version
    // (NAME and ID may be given; the versioned fields may not).
    std::map<std::string, std::string> os_release;
    // Things worth saying that do not stop the build ("<file>:<line>: <key>: <what>").
    std::vector<std::string> warnings;

    partitions::LayoutSpec layout;
    bool verity_size_auto = true;    // root-verity size computed from the root partition size

    struct Kernel {
        bool enabled = true;
        std::string package = "linux-image-cloud-amd64";
        fs::path deb;                // a kernel .deb file instead of a package name
        std::string where;
    } kernel;

    // [boot]: unified kernel images for the ESPs. Absent: the ESPs stay empty.
    struct Boot {
        bool enabled = false;
        std::string cmdline = "console=ttyS0";  // added to what Cairn puts on the command line
        fs::path key, cert;                     // Secure Boot signing key and certificate (PEM)
        std::string key_passphrase;             // for an encrypted key
        bool debug = false;                     // cairn-init drops to a shell instead of rebooting; never for production
        std::vector<std::string> initrd_modules;  // empty: the defaults
        std::string init = "/sbin/init";
        std::string log_mount = "/var/log";
        std::string where;
    } boot;

    // [update]: the image can take signed update bundles (cairn-updated, cairnctl, a D-Bus system
    // bus, the trust anchor and /usr/lib/cairn/release.json go into the root).
    struct Update {
        bool enabled = false;
        fs::path trust_anchor;                    // PEM CA certificate(s) bundles must chain to
        std::vector<std::string> health_check;    // argv run on a trial boot; empty: the services check
        fs::path config;                          // becomes /etc/cairn/update.toml ([http], [channel]);
                                                  // checked at parse time as the device reads it
        std::string where;
    } update;

    // [attestation]: the build signs its reference document (what a good boot of each slot
    // measures, imager/measure.hpp) with this key, into reference.json.sig beside the build's
    // output and on each ESP. The certificate must be allowed to sign bundles and chain to
    // [update]'s trust anchor: devices and verifiers check it as they check bundles. The device's
    // attestation agent goes into the root (imager/attestation_agent.hpp) unless `agent = false`;
    // `config` becomes /etc/cairn/attestation.toml (without it the agent waits for one).
    struct Attestation {
        bool enabled = false;
        fs::path key, cert;                       // PEM signing key and certificate (+ intermediates)
        std::string key_passphrase;               // for an encrypted key
        bool agent = true;                        // cairn-attestd and `cairnctl attest` in the root
        fs::path config;                          // the agent's attestation.toml; may be empty
        std::string where;
    } attestation;

    // [firewall]: cairn-firewall and its policy go into the root (/usr/sbin/cairn-firewall,
    // /etc/cairn/firewall.toml); the image's init loads it before any interface is up.
    struct Firewall {
        bool enabled = false;
        fs::path policy;                          // a policy file; empty: the defaults (SSH only)
        std::string where;
    } firewall;

    // [ssh]: Debian's OpenSSH server goes into the root, keys and certificates only
    // (/usr/sbin/sshd, /etc/ssh/sshd_config, the authorized keys and user CA from here). Host
    // keys are made on the device's first boot, on the data partition; never baked in. With
    // `vsock`, sshd also answers on AF_VSOCK port 22 where the kernel has vsock.
    struct Ssh {
        bool enabled = false;
        std::map<std::string, std::vector<fs::path>> authorized_keys;  // user -> public key files
        fs::path trusted_user_ca_keys;            // CA public keys for certificate logins; may be empty
        bool vsock = true;
        std::string where;
    } ssh;

    // [provisioning]: the provisioning agent (cairn-provisiond, the TPM device TCTI, cairnctl)
    // goes into the root; `config` becomes /etc/cairn/config.toml. Without it the device waits
    // for `cairnctl config apply`.
    struct Provisioning {
        bool enabled = false;
        fs::path config;
        std::string where;
    } provisioning;

    // Debian packages installed as Debian installs them, their dependencies resolved by apt,
    // before the rootfs steps (imager/apt.hpp, imager/dpkg.hpp).
    struct Packages {
        std::string base;                  // "" (none), "essential", "minbase" or "important"
        std::vector<std::string> names;    // apt package names, "name" or "name=version"
        std::vector<fs::path> debs;        // local .deb files; their dependencies come from the sources
        fs::path sources;                  // a .sources (deb822) or .list file; empty: the build host's apt sources
        fs::path lock;                     // the lock file: <recipe without .toml>.lock beside the recipe
        std::string where;                 // "<file>:<line>: rootfs"
        bool enabled() const { return !base.empty() || !names.empty() || !debs.empty(); }
    };

    struct Rootfs {
        std::string filesystem = "erofs";   // erofs or ext4
        std::string compression = "none";   // erofs only: none, lz4, lz4hc
        bool verity = true;
        Packages packages;
        std::vector<Step> steps;
    } rootfs;
};

// Whether `name` is a Debian package name ([a-z0-9][a-z0-9+.-]+), optionally with "=VERSION"
// (Debian version characters) or ":ARCH": nothing apt could read as an option or a pattern.
bool is_package_spec(std::string_view name);

// Parses and validates a recipe. Relative paths in it are resolved against the recipe's folder.
// Any problem throws Error "<file>:<line>: <key>: <what is wrong>".
Recipe load_recipe(const fs::path& file);
// The same for recipe text that came from `file` (which names it in errors and anchors its relative paths).
Recipe parse_recipe(std::string_view text, const fs::path& file);

std::string_view step_kind_name(Step::Kind kind);

// The image's /etc/os-release: NAME (the recipe's name unless [os_release] gives one), ID,
// VERSION_ID, PRETTY_NAME ("NAME version"), IMAGE_ID, IMAGE_VERSION from the recipe's name and
// (effective) version, then the other [os_release] fields.
std::string os_release_text(const Recipe& recipe);

// The architecture every image is built for; a compatible string left out is "<name>-<arch>".
inline constexpr const char* image_arch = "x86_64";

}  // namespace cairn::imager
