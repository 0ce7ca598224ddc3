// The Debian image with systemd (recipes/eflow.toml, built with the fixture's package lock) in
// QEMU with OVMF Secure Boot and swtpm, driven over SSH as an administrator would: one
// multiplexed connection per boot (the firewall blocks a source after 3 new SSH connections
// within 60 s, as docs/ssh.md explains).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <sstream>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Commands over one SSH connection (ControlMaster): the first opens it, the rest reuse it.
class Ssh {
public:
    explicit Ssh(uint16_t port) : port_(port), key_(test_private_key(dir_.path(), "ssh-admin")) {}
    // Runs `command` as root; returns its result (exit 255: ssh itself failed).
    RunResult run(const std::string& command) {
        return cairn::run(ssh_command(port_, options(), command));
    }
    // Runs `command`; its standard output, trimmed. A failure fails the test with what it printed.
    std::string out(const std::string& command) {
        RunResult r = run(command);
        EXPECT_EQ(r.exit_code, 0) << command << ":\n" << r.out << r.err;
        return trim_end(r.out);
    }
    // Closes the connection (before the guest reboots, so that the next command opens a new one).
    void close() { cairn::run(ssh_command(port_, {"-o", "ControlPath=" + (dir_ / "control").string(), "-O", "exit"}, "")); }

private:
    std::vector<std::string> options() const {
        return {"-i", key_.string(), "-o", "ControlMaster=auto", "-o", "ControlPath=" + (dir_ / "control").string(), "-o", "ControlPersist=600"};
    }
    Scratch dir_;
    uint16_t port_;
    fs::path key_;
};

// A booted copy of the fixture image with SSH forwarded.
struct Device {
    Booted booted{"eflow"};
    uint16_t port = free_port();
    std::unique_ptr<Ssh> ssh;
    qemu::Machine* machine = nullptr;

    explicit Device(std::vector<fs::path> drives = {}) {
        booted.drives = std::move(drives);
        booted.forwards = {{port, 22}};
        machine = &booted.start();
        machine->wait_for("cairn: ready slot=a version=0.1.0", 600s);
        ssh = std::make_unique<Ssh>(port);
    }
    // Reboots from inside (systemctl reboot) and waits for `ready_line` after it.
    size_t reboot(const std::string& ready_line) {
        const size_t from = machine->console().size();
        ssh->run("systemctl reboot");
        ssh->close();
        return machine->wait_for_after(ready_line, from, 600s);
    }
    json update_status() {
        std::string out = ssh->out("cairnctl update status --json");
        json j = json::parse(out, nullptr, false);
        if (!j.is_object()) throw std::runtime_error("no status JSON in: " + out);
        return j;
    }
};

const json& slot(const json& status, const std::string& name) {
    for (const json& s : status["slots"])
        if (s["slot"] == name) return s;
    throw std::runtime_error("no slot " + name + " in " + status.dump());
}

uint64_t monotonic(Ssh& ssh, const std::string& property, const std::string& unit) {
    return std::stoull(ssh.out("systemctl show -P " + property + " " + unit));
}

}  // namespace

// One device's life, on as few boots as it takes (a Debian boot is the slowest thing the suite
// does). It boots under Secure Boot from its verity root to `running` with no failed unit; the
// firewall is up before the network; dpkg shows exactly the locked packages; SSH takes the
// recipe's key and refuses passwords; the provisioning agent registers through the TPM with an
// aziot-style config.toml. Then A/B on systemd's terms: an update (adding the user's own .deb with
// a service, and the Debian package it depends on) installs, boots as a trial and is committed
// once boot-complete.target is reached, and dpkg then shows the new packages; across that reboot
// the journal of the first boot, the machine-id and the provisioned identity are kept. An update
// whose unit ordered before boot-complete.target fails rolls back to the old slot, and says why.
TEST(Debian, BootsProvisionsKeepsItsJournalUpdatesAtBootCompleteAndRollsBackAFailingCheck) {
    // The provisioning service on the host (10.0.2.2 from the guest), and what the operator gives
    // the device on a read-only disk: an aziot-style config.toml and the service's CA.
    Scratch dir;
    DpsFixture dps(dir / "dps", json{{"enrollments", json::array()}});
    fs::create_directories(dir / "give");
    fs::copy_file(dps.trust_bundle(), dir / "give/dps-ca.pem");
    const std::string endpoint = "https://10.0.2.2:" + std::to_string(dps.port()) + "/";
    write_text(dir / "give/config.toml", "trust_bundle_cert = \"file:///etc/cairn/dps-ca.pem\"\n[provisioning]\nsource = \"dps\"\n"
                                         "global_endpoint = \"" + endpoint + "\"\nid_scope = \"" + dps_scope + "\"\n"
                                         "[provisioning.attestation]\nmethod = \"tpm\"\n[tpm]\ntcti = \"device:/dev/tpmrm0\"\n"
                                         "[cairn.hub]\nendpoint = \"" + endpoint + "\"\n");  // cairn-dps plays the hub
    run_checked({"tar", "-cf", (dir / "give.tar").string(), "-C", (dir / "give").string(), "config.toml", "dps-ca.pem"});

    const fs::path bundles = test_images() / "debian-update";
    Device d({dir / "give.tar", bundles / "v2.cairn", bundles / "broken.cairn"});
    Ssh& ssh = *d.ssh;
    EXPECT_EQ(ssh.out("systemctl is-system-running --wait"), "running") << ssh.run("systemctl --failed --no-pager").out;
    EXPECT_EQ(ssh.out("systemctl is-active boot-complete.target"), "active");
    EXPECT_EQ(ssh.out("od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | tr -d ' '"), "1");
    EXPECT_EQ(ssh.out("findmnt -no SOURCE /"), "/dev/mapper/root");
    EXPECT_EQ(ssh.out("cat /proc/1/comm"), "systemd");

    // systemd's first chores were done by cairn-init (initrd/early_boot.hpp): every module of the
    // boot's list loaded, none left, so the modprobe@ units skipped their modprobe; the API
    // filesystems mounted, so their mount units found them mounted.
    {
        const std::string& console = d.machine->console();
        const size_t at = console.find("cairn-init: for the image's init: ");
        ASSERT_NE(at, std::string::npos);
        const std::string line = console.substr(at, console.find('\n', at) - at);
        unsigned loaded = 0, there = 0, left = 1, mounted = 0;
        ASSERT_EQ(std::sscanf(line.c_str(), "cairn-init: for the image's init: %u modules loaded (%u were there, %u left to it), %u filesystems mounted",
                              &loaded, &there, &left, &mounted), 4) << line;
        EXPECT_GE(loaded, 10u) << line;  // the firewall's nftables modules, configfs, fuse, ...
        EXPECT_EQ(left, 0u) << line;
        EXPECT_GE(mounted, 5u) << line;
    }
    EXPECT_EQ(ssh.out("systemctl show -P ConditionResult modprobe@configfs.service"), "no");
    EXPECT_EQ(ssh.out("systemctl show -P ActiveState sys-kernel-config.mount"), "active");
    EXPECT_EQ(ssh.out("findmnt -no FSTYPE /tmp"), "tmpfs");
    EXPECT_EQ(ssh.out("findmnt -no FSTYPE /sys/fs/bpf"), "bpf");
    EXPECT_EQ(ssh.out("grep -c '^nft_ct ' /proc/modules"), "1");

    // The firewall's ruleset was loaded before systemd-networkd, the only thing that brings
    // interfaces up, started; and networkd cannot start without it.
    const uint64_t firewall_up = monotonic(ssh, "ActiveEnterTimestampMonotonic", "cairn-firewall.service");
    const uint64_t networkd_start = monotonic(ssh, "InactiveExitTimestampMonotonic", "systemd-networkd.service");
    EXPECT_GT(firewall_up, 0u);
    EXPECT_LT(firewall_up, networkd_start);
    EXPECT_NE(ssh.out("systemctl show -P Requires systemd-networkd.service").find("cairn-firewall.service"), std::string::npos);
    EXPECT_EQ(ssh.run("cairn-firewall status").exit_code, 0);

    // dpkg reads the running slot's database: exactly the lock, nothing half-installed or changed.
    std::string listed = ssh.out("dpkg-query -W -f '${Package} ${Version} ${Architecture}\\n' | sort");
    json lock = json::parse(read_file(test_images() / "eflow.lock"));
    std::string locked;
    std::vector<std::string> lines;
    for (const auto& p : lock["packages"])
        lines.push_back(p["name"].get<std::string>() + " " + p["version"].get<std::string>() + " " + p["architecture"].get<std::string>());
    std::sort(lines.begin(), lines.end());
    for (const auto& l : lines) locked += (locked.empty() ? "" : "\n") + l;
    EXPECT_EQ(listed, locked);
    EXPECT_EQ(ssh.out("dpkg --audit"), "");
    EXPECT_EQ(ssh.out("dpkg --verify"), "");
    EXPECT_EQ(ssh.out("findmnt -no OPTIONS /var/lib/dpkg").substr(0, 2), "ro");

    // Passwords are refused (a second connection; the first is the multiplexed one).
    RunResult password = run(ssh_command(d.port, {"-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
                                                  "-o", "BatchMode=yes"},
                                         "true"));
    EXPECT_EQ(password.exit_code, 255);
    EXPECT_NE(password.err.find("Permission denied (publickey)"), std::string::npos) << password.err;

    // The provisioning agent (a systemd unit) waits for a configuration. Enrolled by its TPM's
    // endorsement key (read over SSH, as a factory station would) and given the config.toml, it
    // registers through the TPM; after the reboot below it keeps that identity.
    EXPECT_EQ(ssh.out("systemctl is-active cairn-provisiond.service"), "active");
    const json tpm = json::parse(ssh.out("cairnctl provision tpm-info --json"));
    const std::string registration_id = tpm["registration_id"];
    auto enrolled = dps.admin("PUT", "/admin/enrollments/" + registration_id,
                              json{{"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", tpm["endorsement_key"]}}}}}}.dump());
    ASSERT_LT(enrolled.status, 300) << enrolled.body;
    size_t from = d.machine->console().size();
    std::string applied = ssh.out("mkdir -p /tmp/give && tar -xf /dev/vdb -C /tmp/give && cp /tmp/give/dps-ca.pem /etc/cairn/ && "
                                  "cairnctl config apply -c /tmp/give/config.toml");
    EXPECT_NE(applied.find("provisions again with it"), std::string::npos) << applied;
    d.machine->wait_for_after("cairn: provisioning done", from, 300s);
    json provisioned = json::parse(ssh.out("cairnctl provision status --json"));
    EXPECT_EQ(provisioned["state"], "Provisioned") << provisioned.dump(2);
    EXPECT_EQ(provisioned["identity"]["device_id"], registration_id);
    size_t registrations = 0;
    for (const json& r : dps.requests()) registrations += r.value("method", "") == "PUT";
    EXPECT_GE(registrations, 2u) << "a TPM registration is two PUTs (the challenge, then with the SAS token)";

    // The journal is on the log partition. The update below reboots into the other slot: the
    // journal, the machine-id and the provisioned identity stay (all on the log and data partitions).
    const std::string machine_id = ssh.out("cat /etc/machine-id");
    EXPECT_EQ(machine_id.size(), 32u);
    EXPECT_EQ(ssh.out("findmnt -no SOURCE /logs"), ssh.out("findmnt -no SOURCE /var/log/journal").substr(0, ssh.out("findmnt -no SOURCE /logs").size()));
    // journald wrote there from its start (cairn-init marks the journal flushed): no runtime journal.
    EXPECT_NE(ssh.run("ls /run/log/journal").exit_code, 0) << ssh.run("journalctl --header --no-pager | grep -i 'file path'").out;
    ssh.out("logger -t cairn-test 'before the reboot'");

    EXPECT_EQ(ssh.run("dpkg-query -W -f '${Status}' tree").out.find("install ok installed"), std::string::npos) << "tree is not in 0.1.0";
    EXPECT_NE(ssh.run("systemctl cat hello.service").exit_code, 0);
    std::string out = ssh.out("cairnctl update install /dev/vdc");
    EXPECT_NE(out.find("installed"), std::string::npos) << out;
    EXPECT_EQ(slot(d.update_status(), "b")["state"], "trial");

    const size_t before_reboot = d.machine->console().size();
    size_t ready = d.reboot("cairn: ready slot=b version=0.2.0");
    d.machine->wait_for_after("committed", ready, 300s);
    json st = d.update_status();
    EXPECT_EQ(st["booted"], "b");
    EXPECT_EQ(slot(st, "b")["state"], "good");
    EXPECT_TRUE(slot(st, "b")["primary"].get<bool>());
    // The user's own package, its dependency from Debian, and its service, enabled by its postinst.
    EXPECT_EQ(ssh.out("dpkg-query -W -f '${Status}' hello"), "install ok installed") << "dpkg sees the new slot's packages";
    EXPECT_EQ(ssh.out("dpkg-query -W -f '${Status}' tree"), "install ok installed");
    EXPECT_EQ(ssh.out("systemctl is-active hello.service"), "active");
    EXPECT_NE(ssh.out("journalctl -b -u hello.service -o cat --no-pager").find("hello from v2"), std::string::npos);
    // What the other slot's boot left.
    EXPECT_EQ(ssh.out("cat /etc/machine-id"), machine_id);
    d.machine->wait_for_after("cairn: provisioning done", before_reboot, 300s);
    EXPECT_EQ(json::parse(ssh.out("cairnctl provision status --json"))["identity"]["device_id"], registration_id);
    size_t after_reboot = 0;
    for (const json& r : dps.requests()) after_reboot += r.value("method", "") == "PUT";
    EXPECT_EQ(after_reboot, registrations) << "the agent registered again after the reboot";
    EXPECT_GE(std::stoi(ssh.out("journalctl --list-boots --no-pager | wc -l")), 2);
    EXPECT_NE(ssh.out("journalctl -b -1 -t cairn-test --no-pager -o cat"), "");
    EXPECT_EQ(ssh.out("systemctl is-system-running --wait"), "running");

    // 0.3.0's app-check.service fails: boot-complete.target is never reached.
    out = ssh.out("cairnctl update install /dev/vdd");
    EXPECT_NE(out.find("installed"), std::string::npos) << out;
    from = d.machine->console().size();
    ssh.run("systemctl reboot");
    ssh.close();
    const size_t trial = d.machine->wait_for_after("cairn: ready slot=a version=0.3.0", from, 600s);
    const size_t unhealthy = d.machine->wait_for_after("unhealthy: the boot ended (degraded) without reaching boot-complete.target", trial, 300s);
    d.machine->wait_for_after("cairn: ready slot=b version=0.2.0", unhealthy, 600s);
    d.machine->wait_for_after("cairn-updated: serving", unhealthy, 300s);
    st = d.update_status();
    EXPECT_EQ(st["booted"], "b");
    EXPECT_EQ(slot(st, "a")["state"], "bad");
    EXPECT_EQ(st["last"]["kind"], "rolled-back");
    EXPECT_NE(st["last"]["reason"].get<std::string>().find("failed units: app-check.service"), std::string::npos) << st.dump(2);
    EXPECT_EQ(ssh.out("dpkg-query -W -f '${Status}' tree"), "install ok installed") << "back on 0.2.0";
}
