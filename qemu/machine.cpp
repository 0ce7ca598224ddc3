#include "qemu/machine.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"

namespace cairn::qemu {

namespace fs = std::filesystem;

namespace {

constexpr const char* ovmf_code_secure = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
constexpr const char* ovmf_vars_secure = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
constexpr const char* ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
constexpr const char* ovmf_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";

UniqueFd connect_unix(const fs::path& path, int timeout_ms) {
    for (int waited = 0;; waited += 20) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd) fail_errno("socket");
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if (path.string().size() >= sizeof addr.sun_path) fail(path.string() + ": socket path too long");
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
        if (waited >= timeout_ms) fail_errno("connecting to " + path.string());
        ::usleep(20000);
    }
}

std::string read_line(int fd, int timeout_ms) {
    std::string line;
    char c;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) <= 0) fail("QMP: no answer");
        ssize_t r = ::read(fd, &c, 1);
        if (r <= 0) fail("QMP: connection closed");
        if (c == '\n') return line;
        line.push_back(c);
    }
}

void write_all(int fd, const std::string& text, const std::string& what) {
    size_t done = 0;
    while (done < text.size()) {
        ssize_t w = ::write(fd, text.data() + done, text.size() - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            fail_errno("writing to " + what);
        }
        done += static_cast<size_t>(w);
    }
}

}  // namespace

Machine::Machine(Config config) : config_(std::move(config)) {
    if (config_.state_dir.empty()) fail("qemu: the machine needs a state directory");
    config_.state_dir = fs::absolute(config_.state_dir);
    if (!config_.disk.empty()) config_.disk = fs::absolute(config_.disk);
}

Machine::~Machine() { stop_all(); }

void Machine::stop_all() {
    draining_ = false;
    if (drainer_.joinable()) drainer_.join();
    console_fd_.reset();
    try {
        if (qemu_) qemu_->stop(1000);
        if (swtpm_) swtpm_->stop(1000);
    } catch (...) {
    }
    qemu_.reset();
    swtpm_.reset();
}

void Machine::start() {
    stop_all();
    const fs::path& dir = config_.state_dir;
    fs::create_directories(dir);
    const fs::path vars = dir / "OVMF_VARS.fd";
    if (!fs::exists(vars)) fs::copy_file(config_.secure_boot ? ovmf_vars_secure : ovmf_vars, vars);
    for (const char* sock : {"console.sock", "qmp.sock", "swtpm.sock"}) fs::remove(dir / sock);
    std::error_code ec;
    console_start_ = fs::exists(console_log()) ? fs::file_size(console_log()) : 0;

    std::vector<std::string> argv = {"qemu-system-x86_64", "-machine", "q35,smm=on", "-accel",
                                     ::access("/dev/kvm", R_OK | W_OK) == 0 ? "kvm" : "tcg",
                                     "-m", std::to_string(config_.memory_mb), "-smp", std::to_string(config_.cpus),
                                     "-global", "driver=cfi.pflash01,property=secure,value=on",
                                     "-drive", std::string("if=pflash,format=raw,unit=0,readonly=on,file=") + (config_.secure_boot ? ovmf_code_secure : ovmf_code),
                                     "-drive", "if=pflash,format=raw,unit=1,file=" + vars.string(),
                                     "-chardev", "socket,id=console,path=" + (dir / "console.sock").string() +
                                                     ",server=on,wait=off,logfile=" + console_log().string() + ",logappend=on",
                                     "-serial", "chardev:console",
                                     "-qmp", "unix:" + (dir / "qmp.sock").string() + ",server=on,wait=off",
                                     "-display", "none", "-vga", "none"};
    if (!config_.disk.empty()) {
        argv.insert(argv.end(), {"-drive", "if=none,id=disk0,format=raw,file=" + config_.disk.string(), "-device", "virtio-blk-pci,drive=disk0"});
    }
    std::string netdev = "user,id=net0";
    for (auto [host, guest] : config_.forwards) netdev += ",hostfwd=tcp:127.0.0.1:" + std::to_string(host) + "-:" + std::to_string(guest);
    argv.insert(argv.end(), {"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"});

    if (config_.tpm) {
        fs::create_directories(dir / "tpm");
        swtpm_ = std::make_unique<Process>(std::vector<std::string>{"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + (dir / "tpm").string(),
                                                                    "--ctrl", "type=unixio,path=" + (dir / "swtpm.sock").string(), "--terminate"},
                                           dir / "swtpm.log");
        for (int i = 0; i < 250 && !fs::exists(dir / "swtpm.sock"); ++i) ::usleep(20000);
        if (!fs::exists(dir / "swtpm.sock")) fail("swtpm did not start (see " + (dir / "swtpm.log").string() + ")");
        argv.insert(argv.end(), {"-chardev", "socket,id=chrtpm,path=" + (dir / "swtpm.sock").string(), "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                                 "-device", "tpm-tis,tpmdev=tpm0"});
    }
    argv.insert(argv.end(), config_.extra_args.begin(), config_.extra_args.end());
    qemu_ = std::make_unique<Process>(argv, dir / "qemu.log");
    for (int i = 0; i < 250 && !fs::exists(dir / "qmp.sock"); ++i) {
        if (!qemu_->running()) break;
        ::usleep(20000);
    }
    if (!qemu_->running()) fail("QEMU did not start: " + read_file(dir / "qemu.log"));
}

std::string Machine::console() const {
    std::error_code ec;
    if (!fs::exists(console_log(), ec)) return "";
    std::string all = read_file(console_log());
    return console_start_ <= all.size() ? all.substr(console_start_) : std::string();
}

std::string Machine::console_tail(size_t lines) const {
    std::string c = console();
    size_t pos = c.size();
    for (size_t i = 0; i <= lines && pos != std::string::npos && pos > 0; ++i) pos = c.rfind('\n', pos - 1);
    return pos == std::string::npos ? c : c.substr(pos + 1);
}

size_t Machine::wait_for(const std::string& marker, std::chrono::seconds timeout) { return wait_for_after(marker, 0, timeout); }

size_t Machine::wait_for_after(const std::string& marker, size_t from, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        std::string c = console();
        size_t at = c.find(marker, from);
        if (at != std::string::npos) return at;
        bool alive = running();
        if (!alive || std::chrono::steady_clock::now() > deadline) {
            fail("qemu: '" + marker + "' did not appear on the console " +
                 (alive ? "within " + std::to_string(timeout.count()) + " s" : "before QEMU exited") + "; last console lines:\n" + console_tail(30));
        }
        ::usleep(100000);
    }
}

void Machine::drain_console() {
    char buffer[4096];
    while (draining_) {
        pollfd p{console_fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 100) > 0 && ::read(console_fd_.get(), buffer, sizeof buffer) <= 0) break;
    }
}

void Machine::send(const std::string& text) {
    if (!console_fd_) {
        console_fd_ = connect_unix(config_.state_dir / "console.sock", 5000);
        // Output also arrives on the connection; it is in the log already, so drop it here.
        draining_ = true;
        drainer_ = std::thread([this] { drain_console(); });
    }
    write_all(console_fd_.get(), text, "the serial console");
}

bool Machine::running() { return qemu_ && qemu_->running(); }

std::string Machine::qmp(const std::string& execute_json) {
    UniqueFd fd = connect_unix(config_.state_dir / "qmp.sock", 5000);
    read_line(fd.get(), 5000);  // greeting
    write_all(fd.get(), "{\"execute\":\"qmp_capabilities\"}\n", "QMP");
    read_line(fd.get(), 5000);
    write_all(fd.get(), execute_json + "\n", "QMP");
    for (;;) {
        std::string line = read_line(fd.get(), 10000);
        if (line.find("\"return\"") != std::string::npos || line.find("\"error\"") != std::string::npos) return line;
    }
}

void Machine::reset() {
    qmp("{\"execute\":\"system_reset\"}");
}

void Machine::power_off(std::chrono::seconds grace) {
    if (!running()) return;
    try {
        qmp("{\"execute\":\"system_powerdown\"}");
    } catch (const Error&) {
    }
    if (!wait_exit(grace)) kill();
    stop_all();
}

void Machine::kill() {
    if (qemu_) {
        qemu_->signal(SIGKILL);
        qemu_->wait(5000);
    }
    stop_all();
}

std::optional<int> Machine::wait_exit(std::chrono::seconds timeout) {
    if (!qemu_) return std::nullopt;
    return qemu_->wait(static_cast<int>(timeout.count() * 1000));
}

}  // namespace cairn::qemu
