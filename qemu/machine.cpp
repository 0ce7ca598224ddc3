#include "qemu/machine.hpp"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/text.hpp"

namespace cairn::qemu {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* ovmf_code_secure = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
constexpr const char* ovmf_vars_secure = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
constexpr const char* ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
constexpr const char* ovmf_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";

// Names inside the state directory.
constexpr const char* vars_name = "OVMF_VARS.fd";
constexpr const char* vars_template_name = "OVMF_VARS.template";  // which store the copy was made from
constexpr const char* qmp_name = "qmp.sock";
// The serial console's two FIFOs, <console_pipe_name>.in (typed to the guest) and .out (what it
// prints). A pipe, not a socket: QEMU 7.2 writes a character to its log twice when its write to
// the console's reader would block, and a Unix socket blocks after a few hundred single-byte writes
// (each one queues a buffer of its own), while a pipe holds 64 KiB. Cairn drains .out from before
// QEMU starts, so the log keeps each character once.
constexpr const char* console_pipe_name = "console";
constexpr const char* swtpm_sock_name = "swtpm.sock";
constexpr const char* qemu_pid_name = "qemu.pid";
constexpr const char* swtpm_pid_name = "swtpm.pid";

constexpr int start_timeout_ms = 60000;  // QEMU under TCG on a busy machine can take a while to answer QMP

// A value inside a QEMU option list ("file=...,"): commas are doubled.
std::string option_value(const std::string& value) {
    std::string out;
    for (char c : value) {
        out.push_back(c);
        if (c == ',') out.push_back(',');
    }
    return out;
}

std::string seconds_text(std::chrono::seconds s) { return std::to_string(s.count()) + " s"; }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint64_t size_or_zero(const fs::path& path) {
    std::error_code ec;
    uint64_t size = fs::file_size(path, ec);
    return ec ? 0 : size;
}

// The content of a file from `offset` on ("" when it does not exist).
std::string read_from(const fs::path& path, uint64_t offset) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return "";
        fail_errno(path.string());
    }
    std::string out;
    char buffer[65536];
    for (;;) {
        ssize_t r = ::pread(fd.get(), buffer, sizeof buffer, static_cast<off_t>(offset + out.size()));
        if (r < 0) {
            if (errno == EINTR) continue;
            fail_errno("reading " + path.string());
        }
        if (r == 0) return out;
        out.append(buffer, static_cast<size_t>(r));
    }
}

// Console text made fit for an error message: no terminal escape sequences (OVMF clears the
// screen), no carriage returns or other control characters.
std::string printable(const std::string& text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == 0x1b) {
            if (i + 1 < text.size() && text[i + 1] == '[') {  // CSI: parameters, then a final byte 0x40-0x7e
                i += 2;
                while (i < text.size() && !(text[i] >= 0x40 && text[i] <= 0x7e)) ++i;
            } else {
                ++i;
            }
            continue;
        }
        if (c == '\n' || c == '\t' || c >= 0x20) out.push_back(static_cast<char>(c));
    }
    return out;
}


UniqueFd connect_unix(const fs::path& path, int timeout_ms) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.string().size() >= sizeof addr.sun_path)
        fail(path.string() + ": socket path too long (" + std::to_string(sizeof addr.sun_path - 1) +
             " characters at most; use a shorter state directory)");
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    for (int waited = 0;; waited += 20) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd) fail_errno("socket");
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
        if (waited >= timeout_ms) fail_errno("connecting to " + path.string());
        ::usleep(20000);
    }
}

std::string read_line(int fd, Clock::time_point deadline, const std::string& what) {
    std::string line;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd p{fd, POLLIN, 0};
        int ready = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) fail(what + ": no answer");
        char c;
        ssize_t r = ::read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) fail(what + ": the connection was closed");
        if (c == '\n') return line;
        line.push_back(c);
    }
}

// All of `text` to a socket (without SIGPIPE when the other end is gone) or a pipe.
void write_all(int fd, const std::string& text, const std::string& what, bool socket) {
    size_t done = 0;
    while (done < text.size()) {
        const char* at = text.data() + done;
        const size_t left = text.size() - done;
        ssize_t w = socket ? ::send(fd, at, left, MSG_NOSIGNAL) : ::write(fd, at, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            fail_errno("writing to " + what);
        }
        done += static_cast<size_t>(w);
    }
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// One QMP session: greeting, capabilities negotiation, the command; returns the command's reply
// line ({"return": ...} or {"error": ...}), skipping the events QEMU sends in between.
std::string qmp_exchange(const fs::path& socket, const std::string& execute_json, int timeout_ms) {
    const std::string what = "QMP (" + socket.string() + ")";
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    UniqueFd fd = connect_unix(socket, 1000);
    if (!starts_with(read_line(fd.get(), deadline, what), "{\"QMP\"")) fail(what + ": no QMP greeting");
    auto command = [&](const std::string& json) {
        write_all(fd.get(), json + "\n", what, true);
        for (;;) {
            std::string line = read_line(fd.get(), deadline, what);
            if (starts_with(line, "{\"return\"") || starts_with(line, "{\"error\"")) return line;
        }
    };
    std::string caps = command("{\"execute\":\"qmp_capabilities\"}");
    if (!starts_with(caps, "{\"return\"")) fail(what + ": qmp_capabilities refused: " + caps);
    return command(execute_json);
}

void require_file(const fs::path& path, const std::string& what) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) fail("qemu: " + what + " " + path.string() + " does not exist");
}

}  // namespace

DiskFormat detect_disk_format(const fs::path& image) {
    UniqueFd fd = open_file(image, O_RDONLY | O_CLOEXEC);
    char head[21] = {};
    size_t got = 0;
    while (got < sizeof head) {
        ssize_t r = ::pread(fd.get(), head + got, sizeof head - got, static_cast<off_t>(got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) fail_errno("reading " + image.string());
        if (r == 0) break;
        got += static_cast<size_t>(r);
    }
    const std::string_view start(head, got);
    if (start.starts_with("QFI\xfb")) return DiskFormat::Qcow2;
    if (start.starts_with("vhdxfile")) return DiskFormat::Vhdx;
    if (start.starts_with("KDMV") || start.starts_with("# Disk DescriptorFile")) return DiskFormat::Vmdk;
    return DiskFormat::Raw;
}

const char* disk_format_name(DiskFormat format) {
    switch (format) {
        case DiskFormat::Raw: return "raw";
        case DiskFormat::Qcow2: return "qcow2";
        case DiskFormat::Vhdx: return "vhdx";
        case DiskFormat::Vmdk: return "vmdk";
    }
    return "raw";
}

std::string kvm_unusable_reason() {
    UniqueFd fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!fd) return std::string("/dev/kvm: ") + std::strerror(errno);
    // The machine has SMM (Secure Boot's flash protection): some hosts, nested ones among them,
    // offer KVM without it, and QEMU would refuse to start.
    if (::ioctl(fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_X86_SMM) <= 0) return "KVM offers no SMM";
    return "";
}

bool kvm_usable() { return kvm_unusable_reason().empty(); }

std::string Machine::accelerator() {
    std::string reply = qmp(R"({"execute": "query-kvm"})");
    std::erase_if(reply, [](char c) { return c == ' ' || c == '\t'; });
    if (reply.find("\"enabled\":true") != std::string::npos) return "kvm";
    if (reply.find("\"enabled\":false") != std::string::npos) return "tcg";
    fail("qemu: query-kvm answered " + reply);
}

Machine::Machine(Config config) : config_(std::move(config)) {
    if (config_.state_dir.empty()) fail("qemu: the machine needs a state directory");
    config_.state_dir = fs::absolute(config_.state_dir);
    for (fs::path* p : {&config_.disk, &config_.kernel, &config_.initrd})
        if (!p->empty()) *p = fs::absolute(*p);
    if (config_.kernel.empty() && !config_.initrd.empty()) fail("qemu: an initrd needs a kernel to go with it");
    if (config_.kernel.empty() && !config_.append.empty()) fail("qemu: a kernel command line needs a kernel to go with it");
}

Machine::~Machine() { stop_all(); }

void Machine::stop_all() noexcept {
    draining_ = false;
    if (drainer_.joinable()) drainer_.join();
    console_in_.reset();
    console_out_.reset();
    try {
        if (qemu_) qemu_->stop(2000);  // SIGTERM: QEMU exits cleanly
    } catch (...) {
    }
    try {
        if (swtpm_) swtpm_->stop(2000);
    } catch (...) {
    }
    qemu_.reset();
    swtpm_.reset();
    std::error_code ec;
    for (const char* name : {qemu_pid_name, swtpm_pid_name}) fs::remove(config_.state_dir / name, ec);
}

std::vector<std::string> Machine::qemu_command() const {
    const fs::path& dir = config_.state_dir;
    std::vector<std::string> argv = {"qemu-system-x86_64", "-nodefaults", "-machine", "q35,smm=on",
                                     "-accel", kvm_usable() ? "kvm" : "tcg",
                                     "-m", std::to_string(config_.memory_mb), "-smp", std::to_string(config_.cpus)};
    // Flash that only SMM code may write. Only for the Secure Boot build, which has SMM: the plain
    // OVMF_CODE_4M.fd cannot write such flash, and its NVRAM would silently never persist.
    if (config_.secure_boot) argv.insert(argv.end(), {"-global", "driver=cfi.pflash01,property=secure,value=on"});
    argv.insert(argv.end(),
                {"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + option_value(config_.secure_boot ? ovmf_code_secure : ovmf_code),
                 "-drive", "if=pflash,format=raw,unit=1,file=" + option_value((dir / vars_name).string()),
                 "-display", "none",
                 "-chardev", "pipe,id=console,path=" + option_value((dir / console_pipe_name).string()) +
                                 ",logfile=" + option_value(console_log().string()) + ",logappend=on",
                 "-serial", "chardev:console",
                 "-qmp", "unix:" + option_value((dir / qmp_name).string()) + ",server=on,wait=off",
                 "-pidfile", (dir / qemu_pid_name).string()});
    // The format told from the content, and given to QEMU (left to probe, QEMU keeps a raw disk's
    // first sector from the guest); no snapshot=on: the guest writes to the file.
    if (!config_.disk.empty())
        argv.insert(argv.end(), {"-drive", std::string("if=none,id=disk0,format=") + disk_format_name(detect_disk_format(config_.disk)) +
                                               ",file=" + option_value(config_.disk.string()),
                                 "-device", "virtio-blk-pci,drive=disk0"});
    std::string netdev = "user,id=net0";
    for (auto [host, guest] : config_.forwards)
        netdev += ",hostfwd=tcp:127.0.0.1:" + std::to_string(host) + "-:" + std::to_string(guest);
    argv.insert(argv.end(), {"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"});
    // A hardware random source, as real machines have one (RDRAND on x86, virtio-rng in most VM
    // hosts): without it the guest kernel's pool is not ready until seconds into the boot under
    // emulation, and what asks for random bytes early waits (journald, to name its journal file).
    // OVMF hands the guest a seed from it too. After the other PCI devices: their slots, and so
    // the guest's interface names (enp0s2), stay as they were.
    argv.insert(argv.end(), {"-device", "virtio-rng-pci"});
    if (config_.tpm)
        argv.insert(argv.end(), {"-chardev", "socket,id=chrtpm,path=" + option_value((dir / swtpm_sock_name).string()),
                                 "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"});
    if (!config_.kernel.empty()) {
        argv.insert(argv.end(), {"-kernel", config_.kernel.string()});
        if (!config_.initrd.empty()) argv.insert(argv.end(), {"-initrd", config_.initrd.string()});
        if (!config_.append.empty()) argv.insert(argv.end(), {"-append", config_.append});
    }
    argv.insert(argv.end(), config_.extra_args.begin(), config_.extra_args.end());
    return argv;
}

std::string Machine::log_tail(const fs::path& log, uint64_t from) const {
    std::string tail = last_lines(printable(read_from(log, from)), 10);
    return tail.empty() ? "(it printed nothing; see " + log.string() + ")" : tail;
}

void Machine::start() {
    stop_all();
    const fs::path& dir = config_.state_dir;
    if (!config_.disk.empty()) {
        require_file(config_.disk, "disk image");
        const DiskFormat format = detect_disk_format(config_.disk);
        if (format == DiskFormat::Vhdx || format == DiskFormat::Vmdk)
            fail("qemu: " + config_.disk.string() + " is a " + (format == DiskFormat::Vhdx ? "VHDX disk (for Hyper-V and Azure Local)" : "VMDK disk (for VMware)") +
                 "; this machine boots raw and qcow2 disks: boot the disk.raw or disk.qcow2 of the same build");
    }
    if (!config_.kernel.empty()) require_file(config_.kernel, "kernel");
    if (!config_.initrd.empty()) require_file(config_.initrd, "initrd");
    const std::string code = config_.secure_boot ? ovmf_code_secure : ovmf_code;
    const std::string vars_template = config_.secure_boot ? ovmf_vars_secure : ovmf_vars;
    require_file(code, "firmware (Debian package ovmf)");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("qemu: creating the state directory " + dir.string() + ": " + ec.message());

    // The machine's NVRAM: a copy of the firmware's variable store, made once.
    const fs::path vars = dir / vars_name;
    const fs::path template_note = dir / vars_template_name;
    if (!fs::exists(vars)) {
        require_file(vars_template, "firmware variable store (Debian package ovmf)");
        const fs::path partial = dir / (std::string(vars_name) + ".partial");
        fs::copy_file(vars_template, partial, fs::copy_options::overwrite_existing);
        fs::permissions(partial, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
        fs::rename(partial, vars);
        write_file_atomic(template_note, vars_template + "\n");
    } else if (fs::exists(template_note)) {
        std::string made_from = trim_end(read_file(template_note));
        if (made_from != vars_template)
            fail("qemu: the NVRAM in " + dir.string() + " was made from " + made_from + ", but this machine boots with Secure Boot " +
                 (config_.secure_boot ? "on" : "off") + " (" + vars_template + "); use another state directory, or delete " +
                 vars.string() + " to start with a blank NVRAM");
    }
    for (const char* name : {qmp_name, swtpm_sock_name}) fs::remove(dir / name, ec);
    console_start_ = size_or_zero(console_log());
    open_console();
    const uint64_t qemu_log_start = size_or_zero(dir / "qemu.log");
    const uint64_t swtpm_log_start = size_or_zero(dir / "swtpm.log");
    const std::vector<std::string> argv = qemu_command();
    RunOptions options;
    options.die_with_parent = true;  // a test that crashes leaves no QEMU or swtpm behind

    try {
        if (config_.tpm) {
            // swtpm ends when QEMU disconnects (--terminate): one per start, on the same state.
            fs::create_directories(dir / "tpm");
            swtpm_ = std::make_unique<Process>(
                std::vector<std::string>{"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + option_value((dir / "tpm").string()),
                                         "--ctrl", "type=unixio,path=" + option_value((dir / swtpm_sock_name).string()),
                                         "--pid", "file=" + option_value((dir / swtpm_pid_name).string()), "--terminate"},
                dir / "swtpm.log", options);
            const auto t0 = Clock::now();
            while (!fs::exists(dir / swtpm_sock_name)) {
                if (!swtpm_->running())
                    fail("qemu: swtpm did not start (exit " + std::to_string(swtpm_->wait(0).value_or(-1)) + "): " +
                         log_tail(dir / "swtpm.log", swtpm_log_start));
                if (seconds_since(t0) > 10) fail("qemu: swtpm made no socket within 10 s: " + log_tail(dir / "swtpm.log", swtpm_log_start));
                ::usleep(10000);
            }
        }
        qemu_ = std::make_unique<Process>(argv, dir / "qemu.log", options);
        // Started means: QEMU answers on QMP, which it does once the machine is built (firmware,
        // kernel and disk opened). An exit before that is a start failure with QEMU's own message.
        const auto t0 = Clock::now();
        for (;;) {
            if (!qemu_->running())
                fail("qemu: QEMU did not start (exit " + std::to_string(qemu_->wait(0).value_or(-1)) + "): " +
                     log_tail(dir / "qemu.log", qemu_log_start));
            if (fs::exists(dir / qmp_name)) {
                try {
                    qmp_exchange(dir / qmp_name, "{\"execute\":\"query-status\"}", 2000);
                    break;
                } catch (const Error&) {
                    // not answering yet
                }
            }
            if (seconds_since(t0) * 1000 > start_timeout_ms)
                fail("qemu: QEMU did not answer on QMP within " + std::to_string(start_timeout_ms / 1000) + " s: " +
                     log_tail(dir / "qemu.log", qemu_log_start));
            ::usleep(20000);
        }
    } catch (...) {
        stop_all();
        throw;
    }
}

std::string Machine::console() const { return read_from(console_log(), console_start_); }

std::string Machine::console_tail(size_t lines) const { return last_lines(printable(console()), lines); }

size_t Machine::wait_for(const std::string& marker, std::chrono::seconds timeout) { return wait_for_after(marker, 0, timeout); }

size_t Machine::wait_for_after(const std::string& marker, size_t from, std::chrono::seconds timeout) {
    if (!qemu_) fail("qemu: waiting for '" + marker + "': the machine was not started");
    const auto t0 = Clock::now();
    for (;;) {
        const bool alive = running();  // before reading: output written before an exit is seen
        size_t at = console().find(marker, from);
        if (at != std::string::npos) return at;
        if (!alive) {
            fail("qemu: '" + marker + "' did not appear on the console: QEMU exited (status " +
                 std::to_string(qemu_->wait(0).value_or(-1)) + ") after " + std::to_string(static_cast<long>(seconds_since(t0))) +
                 " s; last console lines:\n" + console_tail(30));
        }
        if (Clock::now() - t0 > timeout)
            fail("qemu: '" + marker + "' did not appear on the console within " + seconds_text(timeout) +
                 "; last console lines:\n" + console_tail(30));
        ::usleep(100000);
    }
}

void Machine::open_console() {
    // Both ends are opened read-write: that never waits for the other side, and with Cairn holding
    // a writer of .out its reads never see an end of file between QEMU's starts.
    std::array<UniqueFd*, 2> ends = {&console_in_, &console_out_};
    std::array<const char*, 2> suffixes = {".in", ".out"};
    for (size_t i = 0; i < ends.size(); ++i) {
        const fs::path fifo = config_.state_dir / (std::string(console_pipe_name) + suffixes[i]);
        std::error_code ec;
        fs::remove(fifo, ec);
        if (::mkfifo(fifo.c_str(), 0600) != 0) fail_errno("qemu: making the console pipe " + fifo.string());
        *ends[i] = open_file(fifo, O_RDWR | O_CLOEXEC | (i == 1 ? O_NONBLOCK : 0));
    }
    draining_ = true;
    drainer_ = std::thread([this] { drain_console(); });
}

void Machine::drain_console() {
    // What QEMU writes to .out is in the log already: read it to keep the pipe empty, and drop it.
    char buffer[65536];
    while (draining_) {
        pollfd p{console_out_.get(), POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) (void)::read(console_out_.get(), buffer, sizeof buffer);
    }
}

void Machine::send(const std::string& text) {
    if (!running()) fail("qemu: typing on the console: QEMU is not running");
    write_all(console_in_.get(), text, "the serial console", false);
}

bool Machine::running() const { return qemu_ && qemu_->running(); }

pid_t Machine::qemu_pid() const { return running() ? qemu_->pid() : -1; }

pid_t Machine::swtpm_pid() const { return swtpm_ && swtpm_->running() ? swtpm_->pid() : -1; }

std::string Machine::qmp(const std::string& execute_json) {
    if (!running()) fail("qemu: QMP " + execute_json + ": QEMU is not running");
    return qmp_exchange(config_.state_dir / qmp_name, execute_json, 10000);
}

void Machine::reset() {
    std::string reply = qmp("{\"execute\":\"system_reset\"}");
    if (!starts_with(reply, "{\"return\"")) fail("qemu: system_reset refused: " + reply);
}

void Machine::power_off(std::chrono::seconds grace) {
    if (running()) {
        try {
            qmp("{\"execute\":\"system_powerdown\"}");
        } catch (const Error&) {
            // it may be exiting already; the wait below settles it
        }
        if (!qemu_->wait(static_cast<int>(grace.count() * 1000))) kill();
    }
    stop_all();
}

void Machine::kill() {
    if (qemu_) {
        qemu_->signal(SIGKILL);
        qemu_->wait(5000);
    }
    stop_all();
}

int Machine::wait_exit(std::chrono::seconds timeout) {
    if (!qemu_) fail("qemu: waiting for QEMU to exit: the machine was not started");
    auto status = qemu_->wait(static_cast<int>(timeout.count() * 1000));
    if (!status)
        fail("qemu: QEMU still runs after " + seconds_text(timeout) + " of waiting for it to exit; last console lines:\n" +
             console_tail(30));
    if (swtpm_) swtpm_->stop(2000);  // it ends by itself once QEMU is gone; this reaps it
    return *status;
}

}  // namespace cairn::qemu
