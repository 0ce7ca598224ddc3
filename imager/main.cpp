// cairn: the host tool. Builds verified A/B disk images from recipes and inspects them.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include "common/args.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/terminal.hpp"
#include "common/units.hpp"
#include "common/version.hpp"
#include "imager/build.hpp"
#include "imager/deb.hpp"
#include "imager/packages.hpp"
#include "imager/recipe.hpp"
#include "updater/bundle.hpp"
#include "imager/update.hpp"
#include "imager/inspect.hpp"
#include "imager/publish.hpp"
#include "imager/delta.hpp"
#include "qemu/machine.hpp"

namespace {

// Each command's help, shown by `cairn COMMAND --help` and, together, by `cairn --help`.
const char* build_help = R"(  build RECIPE -o DIR   Build the image RECIPE describes into DIR:
                        disk.raw (sparse GPT disk image), manifest.json, sbom.cdx.json
                        (CycloneDX SBOM), rootfs.img, root_<slot>.verity (per-slot hash
                        trees), vmlinuz, and with [boot] initrd.img and uki_<slot>.efi;
                        with [update] also esp_<slot>.img (the slot's ESP, just big
                        enough, for bundles); with Debian packages packages.lock.
                        With [boot], manifest.json's "reference" holds what a good
                        boot of each slot measures (PCR 4, 9, 11 and the UKI signer);
                        with [attestation] also reference.json and reference.json.sig
                        (that document, signed), copied onto every ESP beside the UKI.
                        Without [attestation] no signed document is made.
                        Installing Debian packages needs root.
      -o, --output DIR  Output directory (created if missing; required)
      --cache DIR       Where downloaded .deb packages are kept
                        (default: $CAIRN_CACHE, else ~/.cache/cairn)
      --json            Print the manifest as JSON on standard output when done
      -q, --quiet       No progress on standard error
      --debug           Debug image: on a boot failure cairn-init drops to a shell
                        instead of rebooting, and init starts a shell on the serial
                        console. Never ship one: it warns, and cairn bundle refuses it
                        without --allow-debug.
      --image-version V Use V instead of the recipe's version (e.g. a CI build number)
      --lock FILE       Install the Debian packages this lock names (default: the
                        recipe's lock, RECIPE without .toml + .lock, when it exists;
                        without one apt resolves afresh). The lock used is left in
                        DIR/packages.lock; sbom.cdx.json lists every package
      --format LIST     VM disk formats to write, comma-separated: raw, qcow2 (QEMU/KVM,
                        Proxmox), vhdx (Hyper-V, Azure Local; dynamic), vmdk (VMware;
                        streamOptimized, for OVF import). disk.raw is always written;
                        the others are converted from it with qemu-img (package
                        qemu-utils) into disk.qcow2, disk.vhdx, disk.vmdk
)";

const char* lock_help = R"(  lock RECIPE           Resolve the recipe's Debian packages ([rootfs] base, packages,
                        debs) with apt and write the lock: every package with version,
                        architecture, URL and sha256 (default file: RECIPE without .toml
                        + .lock). A lock made for the same package list is kept as it is.
      --update          Resolve again even so: move every package to what apt has now
      --lock FILE       Write this file instead
      --cache DIR       Where apt's state and the .deb packages are kept
      --json            Print the lock as JSON
)";

const char* bundle_help = R"(  bundle DIR -o FILE    Make a signed update bundle from the build in DIR (its recipe
                        needs [update]): the root, each slot's verity tree and ESP,
                        and a manifest signed with a CMS signature; the manifest
                        carries the build's reference values (what a good boot of
                        each slot measures) when its manifest.json has them.
      --key FILE        PEM signing key (required)
      --cert FILE       PEM certificate of the key, intermediates after it (required);
                        it must chain to the image's [update] trust_anchor (checked
                        here as the device checks it)
      --key-passphrase P  for an encrypted key
      --allow-debug     Bundle a --debug build all the same (refused otherwise)
      --no-chunk-index  Leave out the ESPs' chunk index, for devices whose cairn-updated
                        predates it (it refuses a manifest with fields it does not know):
                        the step that brings them this updater. Installs from a server
                        then fetch the ESP whole
      --json            Print the bundle's manifest as JSON
)";

const char* publish_help = R"(  publish BUNDLE -o DIR  Put a bundle and its channel's signed index (DIR/CHANNEL.json)
                        into DIR, ready to upload to any static HTTP(S) server: devices
                        whose /etc/cairn/update.toml [channel] url names the index
                        install the new version by themselves. The bundle is written
                        first, the index after it, each renamed into place.
      --channel NAME    The channel (default stable): the index is DIR/NAME.json
      --key FILE        PEM signing key (required): the bundle signer's kind of key
      --cert FILE       PEM certificate of the key (required; it must carry the
                        bundle-signing usage)
      --key-passphrase P  for an encrypted key
      --url URL         The bundle's URL in the index (another server or a CDN path;
                        absolute, or relative to the index); the bundle is then not
                        copied. Default: its file name, beside the index
      --expires DAYS    Devices refuse the index this many days after publishing
                        (publish again before then; a frozen channel is noticed)
      --trust-anchor PEM  Check the bundle and the index as a device holding this
                        anchor would
      --delta-from OLD  Also write the delta from the build of bundle OLD (cairn
                        delta) beside the bundle, before the index; repeatable, one
                        for each release devices may still run. Not with --url
      --delta-level N   zstd level for the deltas, 1 to 19 (default 19: smallest;
                        3 makes them in a tenth of the time, some 15 % larger)
      --json            Print the index as JSON
)";

const char* delta_help = R"(  delta FROM TO         Make the delta that devices running the build of bundle FROM
                        download, instead of the blocks they lack, to install bundle TO
                        from a server: each segment of TO's root, tree and ESP that
                        such a device does not have, zstd-patched against what it has.
                        Put it beside TO on the server, under the name it gets by
                        default (TO.from-<FROM's build id>): cairn-updated looks for it
                        there and checks everything it gives against TO's signed
                        manifest (it needs no signature of its own); without one, or
                        with a bad one, devices fetch the blocks from TO as before.
  -o, --output FILE     Where to write it (default: beside TO, named as above)
      --level N         zstd level, 1 to 19 (default 19)
      --json            Print the delta's table as JSON
)";

const char* inspect_help = R"(  inspect IMAGE         Show a disk image's name and version, layout and slots, and
                        re-verify every slot's dm-verity tree; exits 1 on any mismatch.
                        With its build's manifest, also the reference values (what a
                        good boot of each slot measures into PCR 4, 9 and 11).
  inspect BUNDLE        Show an update bundle's manifest (compatible, version, build,
                        payloads and sizes, reference values) and signer, check the
                        signature over the manifest and every payload's sha256;
                        exits 1 on any mismatch.
      --manifest FILE   Compare the image with this build manifest (default:
                        manifest.json beside IMAGE, when present)
      --trust-anchor PEM|DIR  Check the bundle's signer as a device holding this trust
                        anchor would: a PEM file, or a build folder (the anchor its
                        image holds)
      --json            Print the report as JSON
)";

const char* qemu_help = R"(  qemu IMAGE            Boot a disk image in QEMU (q35, OVMF with Secure Boot, swtpm),
                        showing the serial console until the image reports `ready`.
                        IMAGE is a raw or qcow2 disk (told by its content); the guest
                        writes into it. VHDX and VMDK disks are refused.
      --state DIR       Machine state (NVRAM, TPM, console log; default: IMAGE.qemu/)
      --keep            Keep running after `ready`: the console stays on the
                        terminal (type into it on a debug image). On a terminal
                        every key goes to the guest, Ctrl-C too: Ctrl-A x quits,
                        Ctrl-A h shows the console keys
      --forward H:G     Forward host TCP port H (127.0.0.1) to guest port G
      --no-secure-boot  Plain OVMF without Secure Boot
      --timeout SEC     How long to wait for `ready` (default 300)
)";

const char* usage_tail = R"(
  -h, --help            Show this help (after a command: that command's help)
  help [COMMAND]        The same
  --version             Show the version

Environment:
  SOURCE_DATE_EPOCH     Timestamp for every file in the image (reproducible builds)
  CAIRN_CACHE           Package cache directory

Exit status: 0 on success, 1 when inspect finds a mismatch or the image does not
reach `ready`, 2 on an error.
)";

std::string usage_text() {
    return std::string("Usage: cairn COMMAND [OPTIONS]\n\nBuilds immutable, verified A/B disk images from TOML recipes.\n\nCommands:\n") +
           build_help + lock_help + bundle_help + publish_help + delta_help + inspect_help + "\n" + qemu_help + usage_tail;
}

// `cairn COMMAND --help`: the command's own usage line and section.
int command_help(const char* synopsis, const char* help) {
    std::printf("Usage: cairn %s\n\n%s", synopsis, help);
    return 0;
}

int usage_error(const std::string& message) {
    std::fprintf(stderr, "cairn: %s\nTry 'cairn --help'.\n", message.c_str());
    return 2;
}

int cmd_build(const std::vector<std::string>& args) {
    cairn::imager::BuildOptions o;
    bool json = false;
    std::optional<std::string> formats;  // --format, repeatable: the lists joined
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("-o", "--output")) o.out_dir = a.value();
        else if (a.is("--cache")) o.cache = a.value();
        else if (a.is("--json")) json = true;
        else if (a.is("-q", "--quiet")) o.progress = false;
        else if (a.is("--debug")) o.debug = true;
        else if (a.is("--image-version")) o.version = a.value();
        else if (a.is("--format")) formats = (formats ? *formats + "," : "") + a.value();
        else if (a.is("--lock")) o.lock = a.value();
        else if (a.is_option()) return usage_error("build: unknown option '" + a.arg() + "'");
        else if (o.recipe.empty()) o.recipe = a.arg();
        else return usage_error("build: one recipe at a time ('" + a.arg() + "' is extra)");
    }
    if (a.help()) return command_help("build RECIPE -o DIR [OPTIONS]", build_help);
    if (a.version()) return cairn::print_version("cairn");
    if (o.recipe.empty()) return usage_error("build: which recipe? (cairn build RECIPE -o DIR)");
    if (o.out_dir.empty()) return usage_error("build: where to? (-o DIR)");
    if (o.version)
        if (auto problem = cairn::version_problem(*o.version))
            return usage_error("build: --image-version: '" + *o.version + "' is not a version (" + *problem + ")");
    if (formats) {
        try {
            o.formats = cairn::imager::parse_disk_formats(*formats, "--format");
        } catch (const cairn::Error& e) {
            return usage_error(std::string("build: ") + e.what());
        }
        cairn::imager::require_disk_format_tools(o.formats);
    }
    if (o.debug)
        std::fputs("cairn: warning: --debug: the image has a root shell on its serial console and drops to a shell when its boot "
                   "fails; never ship it (cairn bundle refuses it without --allow-debug)\n",
                   stderr);
    nlohmann::json manifest = cairn::imager::build_image(o);
    if (json) std::cout << manifest.dump(2) << "\n";
    else if (o.progress) {
        std::fprintf(stderr, "Built %s: %s\n", o.out_dir.c_str(), (o.out_dir / cairn::imager::outputs::disk).c_str());
        for (const auto& f : manifest["disk"].value("formats", nlohmann::json::array()))
            std::fprintf(stderr, "  %s\n", (o.out_dir / f["file"].get<std::string>()).c_str());
        for (auto& [slot, s] : manifest["slots"].items())
            if (s.contains("verity")) std::fprintf(stderr, "  slot %s root hash %s\n", slot.c_str(), s["verity"]["root_hash"].get<std::string>().c_str());
    }
    return 0;
}

int cmd_lock(const std::vector<std::string>& args) {
    std::filesystem::path recipe_file, cache;
    std::optional<std::filesystem::path> lock_file;
    bool update = false, json = false;
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("--update")) update = true;
        else if (a.is("--lock")) lock_file = a.value();
        else if (a.is("--cache")) cache = a.value();
        else if (a.is("--json")) json = true;
        else if (a.is_option()) return usage_error("lock: unknown option '" + a.arg() + "'");
        else if (recipe_file.empty()) recipe_file = a.arg();
        else return usage_error("lock: one recipe at a time ('" + a.arg() + "' is extra)");
    }
    if (a.help()) return command_help("lock RECIPE [OPTIONS]", lock_help);
    if (a.version()) return cairn::print_version("cairn");
    if (recipe_file.empty()) return usage_error("lock: which recipe? (cairn lock RECIPE)");
    cairn::imager::Recipe recipe = cairn::imager::load_recipe(recipe_file);
    auto result = cairn::imager::lock_recipe(recipe, cache.empty() ? cairn::imager::default_cache_dir() : cache, lock_file, update);
    if (json) {
        std::cout << cairn::imager::lock_text(result.lock);
        return 0;
    }
    using Change = cairn::imager::LockResult::Change;
    const char* what = result.change == Change::created ? "wrote" : result.change == Change::updated ? "updated" : "kept (made for this package list)";
    std::fprintf(stderr, "cairn: %s %s: %zu packages\n", what, result.file.c_str(), result.lock.packages.size());
    return 0;
}

int cmd_bundle(const std::vector<std::string>& args) {
    cairn::imager::BundleOptions o;
    bool json = false;
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("-o", "--output")) o.out = a.value();
        else if (a.is("--key")) o.key = a.value();
        else if (a.is("--cert")) o.cert = a.value();
        else if (a.is("--key-passphrase")) o.key_passphrase = a.value();
        else if (a.is("--json")) json = true;
        else if (a.is("--allow-debug")) o.allow_debug = true;
        else if (a.is("--no-chunk-index")) o.no_chunk_index = true;
        else if (a.is_option()) return usage_error("bundle: unknown option '" + a.arg() + "'");
        else if (o.build_dir.empty()) o.build_dir = a.arg();
        else return usage_error("bundle: one build at a time ('" + a.arg() + "' is extra)");
    }
    if (a.help()) return command_help("bundle DIR -o FILE --key FILE --cert FILE [OPTIONS]", bundle_help);
    if (a.version()) return cairn::print_version("cairn");
    if (o.build_dir.empty()) return usage_error("bundle: from which build? (cairn bundle DIR -o FILE --key K --cert C)");
    if (o.out.empty()) return usage_error("bundle: where to? (-o FILE)");
    if (o.key.empty() || o.cert.empty()) return usage_error("bundle: --key and --cert are required");
    nlohmann::json m = cairn::imager::make_bundle(o);
    if (json) std::cout << m.dump(2) << "\n";
    else std::fprintf(stderr, "Bundle %s: %s %s (%s)\n", o.out.c_str(), m["compatible"].get<std::string>().c_str(),
                      m["version"].get<std::string>().c_str(), m["build_id"].get<std::string>().c_str());
    return 0;
}

int cmd_publish(const std::vector<std::string>& args) {
    cairn::imager::PublishOptions o;
    bool json = false;
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("-o", "--output")) o.out_dir = a.value();
        else if (a.is("--channel")) o.channel = a.value();
        else if (a.is("--key")) o.key = a.value();
        else if (a.is("--cert")) o.cert = a.value();
        else if (a.is("--key-passphrase")) o.key_passphrase = a.value();
        else if (a.is("--url")) o.url = a.value();
        else if (a.is("--trust-anchor")) o.trust_anchor = a.value();
        else if (a.is("--delta-from")) o.delta_from.push_back(a.value());
        else if (a.is("--delta-level")) {
            const std::string v = a.value();
            const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), o.delta_level);
            if (ec != std::errc() || end != v.data() + v.size() || o.delta_level < 1 || o.delta_level > 19)
                return usage_error("publish: --delta-level takes a number from 1 to 19, not '" + v + "'");
        }
        else if (a.is("--expires")) {
            const std::string v = a.value();
            int days = 0;
            const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), days);
            if (ec != std::errc() || end != v.data() + v.size() || days < 1 || days > 3660)
                return usage_error("publish: --expires takes a number of days from 1 to 3660, not '" + v + "'");
            o.expires_days = days;
        } else if (a.is("--json")) json = true;
        else if (a.is_option()) return usage_error("publish: unknown option '" + a.arg() + "'");
        else if (o.bundle.empty()) o.bundle = a.arg();
        else return usage_error("publish: one bundle at a time ('" + a.arg() + "' is extra)");
    }
    if (a.help()) return command_help("publish BUNDLE -o DIR --key FILE --cert FILE [OPTIONS]", publish_help);
    if (a.version()) return cairn::print_version("cairn");
    if (o.bundle.empty()) return usage_error("publish: which bundle? (cairn publish BUNDLE -o DIR --key K --cert C)");
    if (o.out_dir.empty()) return usage_error("publish: where to? (-o DIR)");
    if (o.key.empty() || o.cert.empty()) return usage_error("publish: --key and --cert are required");
    if (!o.url.empty() && !o.delta_from.empty())
        return usage_error("publish: --delta-from writes deltas beside the bundle, which --url puts elsewhere (make them with cairn delta "
                           "and upload them beside it)");
    const cairn::imager::PublishResult r = cairn::imager::publish(o);
    for (const auto& d : r.deltas)
        if (!json) std::fprintf(stderr, "Delta from %s (%s): %s, %s\n", d.table.from_version.c_str(), d.table.from_build_id.c_str(),
                                d.file.c_str(), cairn::format_size(d.size).c_str());
    if (json) std::cout << nlohmann::json::parse(cairn::read_file(r.index_file)).dump(2) << "\n";
    else std::fprintf(stderr, "Published %s %s on channel %s: %s%s%s\n", r.index.compatible.c_str(), r.index.version.c_str(),
                      r.index.channel.c_str(), r.index_file.c_str(), r.bundle_file.empty() ? "" : " and ", r.bundle_file.c_str());
    return 0;
}

int cmd_delta(const std::vector<std::string>& args) {
    cairn::imager::DeltaOptions o;
    bool json = false;
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("-o", "--output")) o.out = a.value();
        else if (a.is("--level")) {
            const std::string v = a.value();
            const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), o.level);
            if (ec != std::errc() || end != v.data() + v.size() || o.level < 1 || o.level > 19)
                return usage_error("delta: --level takes a number from 1 to 19, not '" + v + "'");
        } else if (a.is("--json")) json = true;
        else if (a.is_option()) return usage_error("delta: unknown option '" + a.arg() + "'");
        else if (o.from.empty()) o.from = a.arg();
        else if (o.to.empty()) o.to = a.arg();
        else return usage_error("delta: two bundles, FROM and TO ('" + a.arg() + "' is extra)");
    }
    if (a.help()) return command_help("delta FROM.cairn TO.cairn [-o FILE] [OPTIONS]", delta_help);
    if (a.version()) return cairn::print_version("cairn");
    if (o.to.empty()) return usage_error("delta: which bundles? (cairn delta FROM.cairn TO.cairn)");
    if (!json) o.progress = [](const std::string& line) { std::fprintf(stderr, "  %s\n", line.c_str()); };
    const cairn::imager::DeltaResult r = cairn::imager::make_delta(o);
    if (json) std::cout << nlohmann::json::parse(r.table.to_json()).dump(2) << "\n";
    else std::fprintf(stderr, "Delta %s: %s -> %s, %s (%.2f %% of the %s a device would otherwise place)\n", r.file.c_str(),
                      r.table.from_version.c_str(), r.table.to_version.c_str(), cairn::format_size(r.size).c_str(),
                      r.payloads ? 100.0 * static_cast<double>(r.size) / static_cast<double>(r.payloads) : 0.0,
                      cairn::format_size(r.payloads).c_str());
    return 0;
}

int cmd_inspect(const std::vector<std::string>& args) {
    std::filesystem::path path;
    cairn::imager::InspectOptions o;
    bool json = false;
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("--manifest")) o.manifest = a.value();
        else if (a.is("--trust-anchor")) o.trust_anchor = a.value();
        else if (a.is("--json")) json = true;
        else if (a.is_option()) return usage_error("inspect: unknown option '" + a.arg() + "'");
        else if (path.empty()) path = a.arg();
        else return usage_error("inspect: one image or bundle at a time ('" + a.arg() + "' is extra)");
    }
    if (a.help()) return command_help("inspect IMAGE|BUNDLE [OPTIONS]", inspect_help);
    if (a.version()) return cairn::print_version("cairn");
    if (path.empty()) return usage_error("inspect: which image or bundle? (cairn inspect IMAGE)");
    auto result = cairn::imager::inspect(path, o);
    if (json) std::cout << result.report.dump(2) << "\n";
    else std::cout << cairn::imager::format_report(result.report);
    return result.ok ? 0 : 1;
}

volatile std::sig_atomic_t interrupted = 0;

int cmd_qemu(const std::vector<std::string>& args) {
    cairn::qemu::Config c;
    bool keep = false;
    int timeout = 300;
    cairn::Args a(args);
    while (a.next()) {
        if (a.is("--state")) c.state_dir = a.value();
        else if (a.is("--keep")) keep = true;
        else if (a.is("--no-secure-boot")) c.secure_boot = false;
        else if (a.is("--timeout")) timeout = static_cast<int>(a.number(1, 7 * 24 * 3600));
        else if (a.is("--forward")) {
            const std::string pair = a.value();
            const size_t colon = pair.find(':');
            if (colon == std::string::npos) return usage_error("qemu: --forward takes HOST:GUEST ports, not '" + pair + "'");
            c.forwards.push_back({static_cast<uint16_t>(cairn::parse_number(pair.substr(0, colon), "--forward", 1, 65535)),
                                  static_cast<uint16_t>(cairn::parse_number(pair.substr(colon + 1), "--forward", 1, 65535))});
        } else if (a.is_option()) return usage_error("qemu: unknown option '" + a.arg() + "'");
        else if (c.disk.empty()) c.disk = a.arg();
        else return usage_error("qemu: one image at a time");
    }
    if (a.help()) return command_help("qemu IMAGE [OPTIONS]", qemu_help);
    if (a.version()) return cairn::print_version("cairn");
    if (c.disk.empty()) return usage_error("qemu: which image? (cairn qemu IMAGE)");
    if (!std::filesystem::is_regular_file(c.disk)) throw cairn::Error(c.disk.string() + ": no such image file");
    if (c.state_dir.empty()) c.state_dir = c.disk.string() + ".qemu";
    std::signal(SIGINT, [](int) { interrupted = 1; });
    std::signal(SIGTERM, [](int) { interrupted = 1; });
    std::signal(SIGHUP, [](int) { interrupted = 1; });

    // With --keep, what is typed goes to the guest. On a terminal, raw mode: every key as typed
    // (Ctrl-C too), no local echo, with Ctrl-A as the way out; restored on every way out of here.
    // A terminal this process does not own (`cairn qemu --keep &`) is left alone: reading it or
    // changing its mode would stop the job (SIGTTIN, SIGTTOU).
    const bool terminal = ::isatty(0);
    const bool foreground = terminal && ::tcgetpgrp(0) == ::getpgrp();
    const bool typing = keep && (!terminal || foreground);
    const bool on_terminal = typing && terminal;
    const char* escape_hint = "Ctrl-A x quits, Ctrl-A h helps";
    cairn::qemu::Machine m(c);
    m.start();
    // Raw before the message that says the console is attached (a reader of that line, such as
    // the console test, may check the mode at once).
    std::optional<cairn::RawTerminal> raw;
    if (on_terminal) raw.emplace(0);
    if (on_terminal)
        std::fprintf(stderr, "cairn: booting %s (state in %s)\ncairn: console attached; %s\n", c.disk.c_str(), c.state_dir.c_str(), escape_hint);
    else
        std::fprintf(stderr, "cairn: booting %s (state in %s; Ctrl-C stops)\n", c.disk.c_str(), c.state_dir.c_str());
    if (keep && !typing) std::fprintf(stderr, "cairn: running in the background: the console shows output only (type into it from the foreground)\n");
    cairn::ConsoleEscape escape;
    bool reading = typing, quit = false;
    size_t shown = 0;
    bool ready = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
    while (!interrupted && !quit && m.running()) {
        std::string console = m.console();
        if (console.size() > shown) {
            std::fwrite(console.data() + shown, 1, console.size() - shown, stdout);
            std::fflush(stdout);
            shown = console.size();
        }
        if (!ready && console.find("cairn: ready") != std::string::npos) {
            ready = true;
            std::fprintf(stderr, "\ncairn: %s is up. Console log: %s\n", c.disk.c_str(), m.console_log().c_str());
            if (on_terminal) std::fprintf(stderr, "cairn: console attached; %s\n", escape_hint);
            if (!keep) {
                std::fprintf(stderr, "cairn: for a shell on the console, build with --debug and boot with --keep\n");
                break;
            }
        }
        if (!ready && std::chrono::steady_clock::now() > deadline) {
            std::fprintf(stderr, "\ncairn: %s did not reach `ready` within %d s\n", c.disk.c_str(), timeout);
            break;
        }
        // Wait up to 100 ms for a key (or just wait, when nothing is typed).
        pollfd key{reading ? 0 : -1, POLLIN, 0};
        if (::poll(&key, 1, 100) <= 0 || !(key.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buffer[256];
        ssize_t r = ::read(0, buffer, sizeof buffer);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            reading = false;  // end of input: the machine runs on, as with a closed terminal
            continue;
        }
        std::string_view typed(buffer, static_cast<size_t>(r));
        cairn::ConsoleEscape::Result keys;
        if (on_terminal) keys = escape.feed(typed);
        else keys.to_guest = typed;
        if (keys.help) std::fprintf(stderr, "\r\n%s", cairn::ConsoleEscape::help_text());
        if (keys.quit) {
            quit = true;
            std::fprintf(stderr, "\r\ncairn: Ctrl-A x: stopping the machine\n");
        }
        if (!keys.to_guest.empty() && m.running()) {
            try {
                m.send(keys.to_guest);
            } catch (const cairn::Error&) {
                // QEMU exited between the check and the write: the loop ends on its own.
            }
        }
    }
    raw.reset();
    if (ready && !m.running()) std::fprintf(stderr, "\ncairn: the machine powered off\n");
    m.power_off(std::chrono::seconds(ready ? 3 : 1));  // the minimal image has no ACPI handler: a short grace
    return ready ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage_error("no command given");
    const std::string command = args[0];
    args.erase(args.begin());
    try {
        if (command == "help" && !args.empty()) {
            // `cairn help COMMAND`: what `cairn COMMAND --help` shows.
            const std::string topic = args[0];
            if (topic == "build") return cmd_build({"--help"});
            if (topic == "bundle") return cmd_bundle({"--help"});
            if (topic == "publish") return cmd_publish({"--help"});
            if (topic == "delta") return cmd_delta({"--help"});
            if (topic == "lock") return cmd_lock({"--help"});
            if (topic == "inspect") return cmd_inspect({"--help"});
            if (topic == "qemu") return cmd_qemu({"--help"});
            return usage_error("help: unknown command '" + topic + "'");
        }
        if (cairn::Args::is_help(command) || command == "help") {
            std::fputs(usage_text().c_str(), stdout);
            return 0;
        }
        if (cairn::Args::is_version(command)) return cairn::print_version("cairn");
        if (command == "build") return cmd_build(args);
        if (command == "inspect") return cmd_inspect(args);
        if (command == "lock") return cmd_lock(args);
        if (command == "bundle") return cmd_bundle(args);
        if (command == "publish") return cmd_publish(args);
        if (command == "delta") return cmd_delta(args);
        if (command == "qemu") return cmd_qemu(args);
        return usage_error("unknown command '" + command + "'");
    } catch (const cairn::imager::BuildInterrupted& e) {
        std::fprintf(stderr, "%scairn: %s\n", ::isatty(2) ? "\n" : "", e.what());  // after a progress line left open
        return 128 + e.signal();
    } catch (const cairn::UsageError& e) {
        return usage_error(command + ": " + e.what());
    } catch (const cairn::Error& e) {
        std::fprintf(stderr, "cairn: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cairn: %s\n", e.what());
        return 2;
    }
}
