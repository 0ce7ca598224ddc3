#include "tests/support/nginx.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "common/fd.hpp"
#include "common/file.hpp"
#include "tests/support/test_support.hpp"

namespace cairn::test {

namespace fs = std::filesystem;

Nginx::Nginx(const fs::path& dir, const TestPki& pki) : dir_(dir) {
    fs::create_directories(www());
    fs::create_directories(dir_ / "temp");
    const std::string nginx = find_program("nginx").value_or("/usr/sbin/nginx").string();
    https_port_ = free_port();
    http_port_ = free_port();
    const std::string d = dir_.string();
    const std::string site = "    root " + www().string() + ";\n    location /norange/ { alias " + www().string() + "/; max_ranges 0; }\n"
                             "    location /onerange/ { alias " + www().string() + "/; max_ranges 1; }\n";
    const std::string config =
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid " + d + "/nginx.pid;\nerror_log " + d + "/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "  default_type application/octet-stream;\n"
        "  log_format cairn '$request_method $request_uri $status \"$http_range\" $body_bytes_sent';\n"
        "  access_log " + d + "/access.log cairn;\n"
        "  client_body_temp_path " + d + "/temp/body;\n  proxy_temp_path " + d + "/temp/proxy;\n"
        "  fastcgi_temp_path " + d + "/temp/fastcgi;\n  uwsgi_temp_path " + d + "/temp/uwsgi;\n  scgi_temp_path " + d + "/temp/scgi;\n"
        "  sendfile on;\n  keepalive_requests 10000;\n"
        "  server {\n    listen 127.0.0.1:" + std::to_string(https_port_) + " ssl;\n"
        "    ssl_certificate " + (pki / "server-chain.pem").string() + ";\n    ssl_certificate_key " + (pki / "server.key").string() + ";\n" +
        site + "  }\n"
        "  server {\n    listen 127.0.0.1:" + std::to_string(http_port_) + ";\n" + site + "  }\n"
        "}\n";
    write_file_atomic(dir_ / "nginx.conf", config);
    RunOptions options;
    options.die_with_parent = true;
    process_ = std::make_unique<Process>(std::vector<std::string>{nginx, "-p", d, "-c", (dir_ / "nginx.conf").string(), "-e",
                                                                  d + "/error.log"},
                                         dir_ / "nginx.out", options);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!(connect_loopback(https_port_) && connect_loopback(http_port_))) {
        if (!process_->running() || std::chrono::steady_clock::now() > until) {
            const fs::path log = dir_ / "error.log";
            throw std::runtime_error("nginx did not start: " + (fs::exists(log) ? read_file(log) : std::string("(no log)")) +
                                     (fs::exists(dir_ / "nginx.out") ? read_file(dir_ / "nginx.out") : ""));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

Nginx::~Nginx() {
    if (process_) process_->stop(2000);
}

std::string Nginx::https_url(const std::string& path, const std::string& host) const {
    return "https://" + host + ":" + std::to_string(https_port_) + "/" + path;
}

std::string Nginx::http_url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(http_port_) + "/" + path; }

std::string Nginx::access_log() const {
    const fs::path log = dir_ / "access.log";
    return fs::exists(log) ? read_file(log) : "";
}

}  // namespace cairn::test
