// The QEMU runner itself, on the debug build of the minimal image (it has a console shell).
#include "qemu/machine.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace std::chrono_literals;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

// A TCP port on 127.0.0.1 that nothing listens on right now.
uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// Connects to 127.0.0.1:port and reads what the other side sends (empty on failure).
std::string read_from(uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string got;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        char buffer[256];
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, 10000) > 0) {
            ssize_t r = ::read(fd, buffer, sizeof buffer);
            if (r <= 0) break;
            got.append(buffer, static_cast<size_t>(r));
        }
    }
    ::close(fd);
    return got;
}

}  // namespace

TEST(Machine, BootsTypesResetsAndRestartsWithItsState) {
    Scratch dir;
    fs::path disk = dir / "disk.raw";
    run_checked({"cp", "--sparse=always", (test::test_images() / "minimal-debug/disk.raw").string(), disk.string()});
    qemu::Config c;
    c.disk = disk;
    c.state_dir = dir / "state";
    const uint16_t port = free_port();
    c.forwards = {{port, 7777}};
    qemu::Machine m(c);
    m.start();
    size_t ready = m.wait_for("cairn: ready", 180s);
    m.wait_for_after("# ", ready, 60s);  // the debug image's shell
    EXPECT_TRUE(fs::exists(dir / "state/OVMF_VARS.fd"));

    // Typing on the console, and the TPM that swtpm provides.
    m.send("cat /sys/class/tpm/tpm0/tpm_version_major; echo typed-\"ok\"\n");
    size_t typed = m.wait_for("typed-ok", 30s);
    EXPECT_NE(m.console().rfind("\n2", typed), std::string::npos) << m.console_tail(10);

    // A host port forwarded to a guest listener (QEMU's user network: the guest is 10.0.2.15).
    m.send("modprobe virtio_net && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && "
           "{ echo forwarded-ok | nc -l -p 7777 & } ; echo net-\"up\"\n");
    m.wait_for("net-up", 60s);
    std::string got;
    for (int i = 0; i < 20 && got.find("forwarded-ok") == std::string::npos; ++i) {
        got = read_from(port);
        if (got.empty()) std::this_thread::sleep_for(500ms);
    }
    EXPECT_NE(got.find("forwarded-ok"), std::string::npos) << "nothing came through the forward; console:\n" << m.console_tail(15);

    // A marker that never comes: a clear error with the console's last lines.
    try {
        m.wait_for("this never appears", 1s);
        FAIL();
    } catch (const Error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("'this never appears' did not appear"), std::string::npos) << what;
        EXPECT_NE(what.find("typed-ok"), std::string::npos) << "the last console lines are shown";
    }

    // Reset in place: the same process boots again.
    size_t before = m.console().size();
    m.reset();
    m.wait_for_after("cairn: ready", before, 180s);

    // Power cut, then start again on the same disk, NVRAM and TPM state.
    m.kill();
    EXPECT_FALSE(m.running());
    EXPECT_FALSE(fs::is_empty(dir / "state/tpm")) << "swtpm keeps its state";
    m.start();
    EXPECT_EQ(m.console().find("cairn: ready"), std::string::npos) << "console() starts afresh at each start()";
    m.wait_for("cairn: ready", 180s);
    m.power_off(5s);  // no ACPI handler in the minimal image: the grace runs out, then the kill
    EXPECT_FALSE(m.running());
}
