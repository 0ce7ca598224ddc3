// A QEMU machine for boot tests and `cairn qemu`: q35 with OVMF (Secure Boot on by default, with
// the snakeoil keys Debian ships for tests), a swtpm TPM 2.0, a virtio disk, user-mode network
// with port forwards, a serial console logged to a file and open for input, and QMP.
//
// Everything a machine keeps lives in its state directory: the NVRAM (a copy of OVMF's variable
// store, made on the first start only), the TPM state (tpm/), console.log (appended across
// starts), qemu.log and swtpm.log (the programs' own output), the QMP socket, the console's FIFOs and
// the pid files. Starting again on the same directory is booting the same machine again.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/fd.hpp"
#include "common/subprocess.hpp"

namespace cairn::qemu {

// What a disk image file holds, told by its first bytes, never by its name: qcow2 starts with
// "QFI\xfb", VHDX with "vhdxfile", a sparse VMDK with "KDMV" (a VMDK descriptor file with
// "# Disk DescriptorFile"); anything else (a GPT disk, an empty file) is raw.
enum class DiskFormat { Raw, Qcow2, Vhdx, Vmdk };
// Throws Error naming the file when it cannot be read.
DiskFormat detect_disk_format(const std::filesystem::path& image);
const char* disk_format_name(DiskFormat format);  // "raw", "qcow2", "vhdx", "vmdk": QEMU's names

struct Config {
    // The disk (virtio-blk), used in place (read-write: the guest's writes go into the file): a raw
    // or qcow2 image, told apart by detect_disk_format. VHDX and VMDK are refused by start(): they
    // are for Hyper-V and VMware (boot the disk.raw or disk.qcow2 of the same build). May be empty.
    std::filesystem::path disk;
    std::filesystem::path state_dir;     // NVRAM copy, TPM state, console log, sockets; created; kept across starts
    // true: OVMF_CODE_4M.secboot.fd (SMM) + a copy of OVMF_VARS_4M.snakeoil.fd (Secure Boot on).
    // false: OVMF_CODE_4M.fd + a copy of OVMF_VARS_4M.fd. A state directory keeps the kind it was made with.
    bool secure_boot = true;
    bool tpm = true;                     // a swtpm (TPM 2.0) per start; its state stays in state_dir/tpm
    // Direct kernel boot: OVMF still runs and starts the kernel. OVMF does not enforce Secure Boot
    // here: a kernel that fails the signature check is started by its legacy loader anyway (and
    // sees Secure Boot on). Tests of Secure Boot itself must boot from the disk.
    std::filesystem::path kernel, initrd;
    std::string append;
    unsigned memory_mb = 1024;
    unsigned cpus = 2;
    std::vector<std::pair<uint16_t, uint16_t>> forwards;  // host TCP port (127.0.0.1) -> guest port
    std::vector<std::string> extra_args;                  // e.g. {"-no-reboot"}: a guest reboot ends QEMU
};

class Machine {
public:
    explicit Machine(Config config);
    ~Machine();  // stops QEMU and swtpm if still running; never throws
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // Starts swtpm (if asked) and QEMU, and returns once QEMU answers on QMP. A machine still
    // running is stopped first. Throws Error with QEMU's (or swtpm's) own message when it
    // cannot start; nothing is left running then.
    void start();
    // Waits until `marker` appears in the console since the last start(); returns its offset in
    // console(). Throws Error naming the marker and the seconds waited, with the console's last
    // 30 lines, on a timeout or when QEMU exits first.
    size_t wait_for(const std::string& marker, std::chrono::seconds timeout);
    // Like wait_for, but only looks at output from offset `from` on (e.g. after a reset).
    size_t wait_for_after(const std::string& marker, size_t from, std::chrono::seconds timeout);
    std::string console() const;                // the console output since the last start()
    std::string console_tail(size_t lines) const;  // its last lines, terminal escapes removed
    void send(const std::string& text);         // types on the serial console
    bool running() const;
    // The ACPI power button (QMP system_powerdown); kills QEMU when it has not stopped after `grace`.
    void power_off(std::chrono::seconds grace = std::chrono::seconds(30));
    void reset();                               // QMP system_reset: same process; disk, NVRAM and TPM kept
    void kill();                                // SIGKILL to QEMU at once (a power cut), then swtpm stops
    // Waits for QEMU to exit (the guest powered off, or rebooted under -no-reboot) and returns its
    // exit status (128 + signal when killed). Throws Error when it still runs after `timeout`.
    int wait_exit(std::chrono::seconds timeout);
    std::string qmp(const std::string& execute_json);  // one QMP command, its reply line (events skipped)
    const Config& config() const { return config_; }
    std::filesystem::path console_log() const { return config_.state_dir / "console.log"; }
    // The QEMU command line start() runs (without the TPM part, which needs swtpm's socket).
    std::vector<std::string> qemu_command() const;
    // What the running QEMU accelerates with, asked over QMP (query-kvm): "kvm" or "tcg".
    std::string accelerator();
    pid_t qemu_pid() const;                     // -1 when not running
    pid_t swtpm_pid() const;                    // -1 when not running

private:
    void stop_all() noexcept;
    void open_console();
    void drain_console();
    std::string log_tail(const std::filesystem::path& log, uint64_t from) const;

    Config config_;
    std::unique_ptr<Process> swtpm_;
    std::unique_ptr<Process> qemu_;
    uint64_t console_start_ = 0;  // console.log size at the last start()
    UniqueFd console_in_, console_out_;  // the console's FIFOs (see machine.cpp), open from start() on
    std::thread drainer_;
    std::atomic<bool> draining_{false};
};

// True when /dev/kvm can be opened and offers SMM (the machine is q35,smm=on): QEMU then runs
// with -accel kvm, else with -accel tcg.
bool kvm_usable();
// Why not: "" when kvm_usable(), else e.g. "KVM offers no SMM" or "/dev/kvm: No such file or directory".
std::string kvm_unusable_reason();

}  // namespace cairn::qemu
