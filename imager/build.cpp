#include "imager/build.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/progress.hpp"
#include "common/units.hpp"
#include "imager/build_stages.hpp"
#include "imager/deb.hpp"
#include "imager/measure.hpp"
#include "partitions/layout.hpp"
#include "updater/bundle.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using nlohmann::json;
using partitions::Role;

namespace {

int64_t build_epoch(const BuildOptions& o) {
    if (o.epoch) return *o.epoch;
    if (const char* e = std::getenv("SOURCE_DATE_EPOCH"); e && *e) {
        char* end = nullptr;
        long long v = std::strtoll(e, &end, 10);
        if (*end || v < 0) fail("SOURCE_DATE_EPOCH: '" + std::string(e) + "' is not a number of seconds");
        return v;
    }
    return static_cast<int64_t>(std::time(nullptr));
}

}  // namespace

BuildContext::BuildContext(const BuildOptions& o, const fs::path& w) : options(o), work(w), epoch(build_epoch(o)), tree(w / "staging" / "tree") {
    recipe = load_recipe(o.recipe);
    for (const auto& warning : recipe.warnings) std::fprintf(stderr, "cairn: warning: %s\n", warning.c_str());
    if (o.debug) {
        if (!recipe.boot.enabled) fail(o.recipe.string() + ": --debug needs a [boot] section (there is nothing to boot)");
        recipe.boot.debug = true;
    }
    if (o.version) {
        if (auto problem = version_problem(*o.version))
            fail("--image-version: '" + *o.version + "' is not a version (" + *problem + ")");
        recipe.version = *o.version;
    }
    if (recipe.attestation.enabled) check_attestation_signer(recipe);  // before hours of work, not after
    layout = partitions::plan(recipe.layout);
    cache = o.cache.empty() ? default_cache_dir() : o.cache;
    for (const auto& p : layout.partitions) {
        if (p.role != Role::Root) continue;
        SlotRoot r;
        r.slot = p.slot;
        r.root_label = p.label;
        r.verity_label = p.slot ? partitions::label_for(Role::RootVerity, p.slot) : "root_verity";
        roots.push_back(r);
    }
}

namespace {

bool boots(const BuildContext& c) { return c.recipe.boot.enabled; }
bool has_kernel(const BuildContext& c) { return c.recipe.kernel.enabled; }
bool has_verity(const BuildContext& c) { return c.recipe.rootfs.verity; }
bool has_packages(const BuildContext& c) { return c.recipe.rootfs.packages.enabled(); }
bool converts_disk(const BuildContext& c) {
    return std::any_of(c.options.formats.begin(), c.options.formats.end(), [](DiskFormat f) { return f != DiskFormat::Raw; });
}
std::string other_formats(const BuildContext& c) {
    std::string list;
    for (DiskFormat f : c.options.formats)
        if (f != DiskFormat::Raw) list += (list.empty() ? "" : ", ") + std::string(disk_format_name(f));
    return list;
}

}  // namespace

// The build, stage by stage.
const std::vector<Stage>& build_pipeline() {
    static const std::vector<Stage> pipeline = {
        {"staging", nullptr, nullptr, stages::staging},
        {"kernel-ahead", has_kernel, nullptr, stages::kernel_ahead},
        {"packages", has_packages,
         [](const BuildContext& c) {
             const auto& p = c.recipe.rootfs.packages;
             return "Installing Debian packages (" + (p.base.empty() ? std::string("essential") : p.base) + " and " + std::to_string(p.names.size() + p.debs.size()) +
                    " named, with their dependencies)";
         },
         stages::packages},
        {"root-tree", nullptr, [](const BuildContext& c) { return "Assembling the root tree (" + std::to_string(c.recipe.rootfs.steps.size()) + " steps)"; },
         stages::root_tree},
        {"kernel", has_kernel,
         [](const BuildContext& c) {
             return "Adding the kernel (" + (c.recipe.kernel.deb.empty() ? c.recipe.kernel.package : c.recipe.kernel.deb.filename().string()) + ")";
         },
         stages::kernel},
        {"initrd", boots, [](const BuildContext&) { return std::string("Building the initrd"); }, stages::initrd},
        {"device-files", nullptr, nullptr, stages::device_files},
        {"check-libraries", nullptr, nullptr, stages::check_libraries},
        {"sbom", nullptr, nullptr, stages::sbom},
        {"image-var", has_packages, nullptr, stages::image_var},
        {"early-boot", nullptr, nullptr, stages::early_boot},
        {"read-ahead", nullptr, nullptr, stages::read_ahead},
        {"root-filesystem", nullptr,
         [](const BuildContext& c) {
             return "Making the " + c.recipe.rootfs.filesystem + " root filesystem (" + std::to_string(c.tree.entries().size()) + " entries)";
         },
         stages::root_filesystem},
        {"disk-roots", nullptr, nullptr, stages::disk_roots},
        {"verity", has_verity, [](const BuildContext& c) { return "Computing dm-verity hash trees (" + std::to_string(c.roots.size()) + " slots)"; },
         stages::verity},
        {"ukis", boots, [](const BuildContext&) { return std::string("Making and signing the unified kernel images"); }, stages::ukis},
        {"reference", boots, [](const BuildContext&) { return std::string("Predicting what a good boot measures (reference values)"); },
         stages::reference},
        {"esps", nullptr, [](const BuildContext&) { return std::string("Making the EFI System Partitions"); }, stages::esps},
        {"disk", nullptr,
         [](const BuildContext& c) { return "Writing " + std::string(outputs::disk) + " (" + format_size(c.layout.disk_size) + ", sparse)"; },
         stages::disk},
        {"disk-formats", converts_disk, [](const BuildContext& c) { return "Converting " + std::string(outputs::disk) + " to " + other_formats(c); },
         stages::disk_formats},
        {"manifest", nullptr, [](const BuildContext&) { return std::string("Writing the manifest"); }, stages::manifest},
        {"publish", nullptr, nullptr, stages::publish},
    };
    return pipeline;
}

std::vector<std::string> planned_stages(const BuildContext& context) {
    std::vector<std::string> names;
    for (const Stage& s : build_pipeline())
        if (!s.applies || s.applies(context)) names.emplace_back(s.name);
    return names;
}

void run_pipeline(BuildContext& context) {
    int numbered = 0;
    for (const Stage& s : build_pipeline())
        if (s.title && (!s.applies || s.applies(context))) ++numbered;
    Progress progress(numbered, context.options.progress);
    context.progress = &progress;
    std::string times;  // where the time went, for the last progress line
    for (const Stage& s : build_pipeline()) {
        if (s.applies && !s.applies(context)) continue;
        if (s.title) progress.step(s.title(context));
        const auto start = std::chrono::steady_clock::now();
        s.run(context);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (seconds >= 0.05) {
            char item[96];
            std::snprintf(item, sizeof item, "%s%.*s %.1f s", times.empty() ? "" : ", ", static_cast<int>(s.name.size()), s.name.data(), seconds);
            times += item;
        }
    }
    progress.note("stage times: " + times);
    context.progress = nullptr;
}

namespace {

// The output folder's lock: an flock on DIR/.cairn-build.lock, taken at once or not at all,
// and removed when the build ends (while still held). A build that opened the file just before
// the holder removed it would lock a file no longer in the folder: after taking the lock, the
// name must still lead to the locked file, else it tries again with the new one. The descriptor
// is O_CLOEXEC: programs the build starts do not hold the lock.
class OutputLock {
public:
    explicit OutputLock(const fs::path& out_dir) : file_(out_dir / build_lock) {
        for (int attempt = 0;; ++attempt) {
            fd_ = open_file(file_, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
                if (errno == EWOULDBLOCK)
                    fail(out_dir.string() + ": another cairn build is writing into this folder (it holds " + file_.string() +
                         "); wait for it to finish, or build into another folder");
                fail_errno("locking " + file_.string());
            }
            struct stat held {}, named {};
            if (::fstat(fd_.get(), &held) == 0 && ::stat(file_.c_str(), &named) == 0 && held.st_dev == named.st_dev && held.st_ino == named.st_ino)
                return;
            if (attempt == 10) fail(file_.string() + ": the lock file keeps changing under this build");
        }
    }
    ~OutputLock() { ::unlink(file_.c_str()); }  // before the descriptor closes: nobody else holds the lock yet
    OutputLock(const OutputLock&) = delete;
    OutputLock& operator=(const OutputLock&) = delete;

private:
    fs::path file_;
    UniqueFd fd_;
};

// Temporary folders of builds that were killed outright. Called under the lock, so none of
// them belongs to a running build.
void sweep_stale(const fs::path& out_dir, bool verbose) {
    std::error_code ec;
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(out_dir, ec))
        if (e.path().filename().string().starts_with(".cairn-build-") && e.is_directory(ec) && !e.is_symlink(ec)) stale.push_back(e.path());
    for (const auto& p : stale) {
        remove_tree(p);
        if (verbose) std::fprintf(stderr, "cairn: removed %s, left by a build that was stopped\n", p.c_str());
    }
}

// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD for the calling thread while it lives.
class BlockedSignals {
public:
    BlockedSignals() {
        sigemptyset(&set_);
        for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set_, s);
        ::pthread_sigmask(SIG_BLOCK, &set_, &old_);
        // An ignored SIGCHLD (inherited through exec) would neither be reported nor leave the child to wait for.
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGCHLD, &dfl, &old_chld_);
    }
    ~BlockedSignals() {
        ::sigaction(SIGCHLD, &old_chld_, nullptr);
        ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    BlockedSignals(const BlockedSignals&) = delete;
    BlockedSignals& operator=(const BlockedSignals&) = delete;
    const sigset_t& set() const { return set_; }
    const sigset_t& old() const { return old_; }

private:
    sigset_t set_, old_;
    struct sigaction old_chld_ {};
};

// Runs build() in a child process in its own process group and waits for it, or for SIGINT or
// SIGTERM: then the group is killed, nothing writes into `work` any more, and it is removed.
json supervise(const BuildOptions& options, TempDir& work) {
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) fail_errno("pipe for the build");
    UniqueFd error_read(ends[0]), error_write(ends[1]);
    BlockedSignals blocked;
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) fail_errno("fork for the build");
    if (child == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(2);
        error_read.reset();
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        ::signal(SIGHUP, SIG_DFL);
        ::pthread_sigmask(SIG_SETMASK, &blocked.old(), nullptr);
        int code = 0;
        try {
            BuildContext context(options, work.path());
            run_pipeline(context);
        } catch (const std::exception& e) {
            std::string message = e.what();
            (void)!::write(error_write.get(), message.data(), message.size());
            code = 2;
        } catch (...) {
            code = 2;
        }
        std::fflush(nullptr);
        ::_exit(code);
    }
    ::setpgid(child, child);
    error_write.reset();
    int status = 0;
    for (;;) {
        siginfo_t info {};
        const int sig = ::sigwaitinfo(&blocked.set(), &info);
        if (sig < 0) continue;  // EINTR
        if (sig == SIGCHLD) {
            // Has it exited? Looked at without reaping it, so that its pid, the group's id, stays
            // taken until the group is killed below.
            siginfo_t exited {};
            if (::waitid(P_PID, static_cast<id_t>(child), &exited, WEXITED | WNOHANG | WNOWAIT) == 0 && exited.si_pid == child) break;
            continue;
        }
        // SIGINT, SIGTERM or SIGHUP: stop everything the build runs, then clean up.
        ::kill(-child, SIGKILL);
        ::kill(child, SIGKILL);
        while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        const std::string removed = work.path().string();
        remove_tree(work.path());
        throw BuildInterrupted("build interrupted, removed " + removed, sig);
    }
    // A program the build started and left behind (none should) goes with the group.
    ::kill(-child, SIGKILL);
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    std::string message;
    char buffer[4096];
    for (ssize_t n; (n = ::read(error_read.get(), buffer, sizeof buffer)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        message.append(buffer, static_cast<size_t>(n));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return json::parse(read_file(options.out_dir / outputs::manifest));
    if (!message.empty()) fail(message);
    if (WIFSIGNALED(status)) fail("the build process was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")");
    fail("the build process failed (exit status " + std::to_string(WEXITSTATUS(status)) + ")");
}

}  // namespace

json build_image(const BuildOptions& options) {
    std::error_code ec;
    const bool created = !fs::exists(options.out_dir, ec);
    try {
        fs::create_directories(options.out_dir, ec);
        if (ec) fail(options.out_dir.string() + ": cannot create the output directory: " + ec.message());
        OutputLock lock(options.out_dir);
        sweep_stale(options.out_dir, options.progress);
        TempDir work(options.out_dir, ".cairn-build-");
        return supervise(options, work);
    } catch (...) {
        if (created) fs::remove(options.out_dir, ec);  // only a folder this build made, and only when empty
        throw;
    }
}

}  // namespace cairn::imager
