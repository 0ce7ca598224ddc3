// A test PKI made with the openssl program: a root CA, an intermediate CA, a server certificate for
// localhost/127.0.0.1, device certificates (CN = registration ID) under the intermediate, and an
// unrelated root with a device of its own (the "unknown CA").
#pragma once

#include <filesystem>
#include <string>

#include "common/file.hpp"
#include "common/subprocess.hpp"

namespace cairn::test {

class TestPki {
public:
    explicit TestPki(const std::filesystem::path& dir) : dir_(dir) {
        std::filesystem::create_directories(dir_);
        write_text_file("ca.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n");
        write_text_file("server.ext",
                        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.2.2\n");  // 10.0.2.2: the host, seen from a QEMU guest
        write_text_file("client.ext", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n");
        self_signed("root", "Cairn Test Root");
        issue("intermediate", "Cairn Test Intermediate", "root", "ca.ext");
        issue("server", "localhost", "intermediate", "server.ext");
        concat("server-chain.pem", {"server.pem", "intermediate.pem"});
        self_signed("unknown-root", "Somebody Else's Root");
    }

    // A device certificate under the intermediate (or another issuer), with its chain file
    // <name>-chain.pem (device + intermediate) and key <name>.key.
    std::filesystem::path device(const std::string& name, const std::string& cn, const std::string& issuer = "intermediate",
                                 int days = 30) {
        issue(name, cn, issuer, "client.ext", days);
        if (issuer == "intermediate") concat(name + "-chain.pem", {name + ".pem", "intermediate.pem"});
        else concat(name + "-chain.pem", {name + ".pem"});
        return dir_ / (name + "-chain.pem");
    }

    std::filesystem::path operator/(const std::string& name) const { return dir_ / name; }
    std::filesystem::path dir() const { return dir_; }

private:
    void write_text_file(const std::string& name, const std::string& text) { write_file_atomic(dir_ / name, text); }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    void self_signed(const std::string& name, const std::string& cn) {
        run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path(name + ".key"), "-out",
                     path(name + ".pem"), "-days", "30", "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
    }

    void issue(const std::string& name, const std::string& cn, const std::string& issuer, const std::string& ext, int days = 30) {
        run_checked({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                     path(name + ".key"), "-out", path(name + ".csr"), "-subj", "/CN=" + cn});
        run_checked({"openssl", "x509", "-req", "-in", path(name + ".csr"), "-CA", path(issuer + ".pem"), "-CAkey",
                     path(issuer + ".key"), "-CAcreateserial", "-out", path(name + ".pem"), "-days", std::to_string(days),
                     "-extfile", path(ext)});
    }

    void concat(const std::string& out, std::initializer_list<std::string> parts) {
        std::string text;
        for (const auto& p : parts) text += read_file(dir_ / p);
        write_text_file(out, text);
    }

    std::filesystem::path dir_;
};

}  // namespace cairn::test
