#include "support/nginx_server.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <thread>

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string findNginx() {
  for (const char* p : {"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

}  // namespace

NginxServer::NginxServer(uint16_t upstream_port)
    : upstream_port_(upstream_port), binary_(findNginx()) {}

NginxServer::~NginxServer() {
  stop();
}

std::string NginxServer::errorLog() const {
  return fs::exists(dir_ / "error.log") ? readFile(dir_ / "error.log") : "";
}

std::vector<NginxServer::Logged> NginxServer::logged(size_t want) const {
  std::vector<Logged> out;
  eventually(
      [&] {
        out.clear();
        std::istringstream lines(fs::exists(accessLog()) ? readFile(accessLog()) : "");
        for (std::string line; std::getline(lines, line);) {
          std::istringstream f(line);
          std::string request_id, upstream_status, upstream_request_id;
          Logged e;
          f >> request_id >> e.status >> upstream_status >> upstream_request_id >> e.ssl_protocol >>
              e.connection >> e.request_length;
          out.push_back(std::move(e));
        }
        return out.size() >= want;
      },
      std::chrono::seconds(10));
  return out;
}

std::string NginxServer::version() const {
  int status = 0;
  std::string v = runCommand(binary_ + " -v 2>&1", &status);
  auto at = v.find("nginx/");
  return at == std::string::npos ? v : v.substr(at, v.find_first_of("\r\n ", at) - at);
}

bool NginxServer::start(std::chrono::milliseconds timeout) {
  if (binary_.empty()) {
    error_ = "nginx is not installed; the tests that put it in front need it (scripts/deps.sh)";
    return false;
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (startOn(freeLoopbackPort(), timeout)) return true;
  }
  return false;
}

bool NginxServer::startOn(uint16_t port, std::chrono::milliseconds timeout) {
  const std::string d = dir_.path().string();
  fs::create_directories(dir_ / "tmp");
  writeFile(dir_ / "error.log", "");
  std::string conf;
  if (::geteuid() == 0) conf += "user root;\n";  // the worker writes to this temp dir
  conf +=
      "worker_processes 1;\n"
      "daemon off;\n"
      "pid " +
      d +
      "/nginx.pid;\n"
      "error_log " +
      d +
      "/error.log info;\n"
      "events { worker_connections 256; }\n"
      "http {\n"
      "  log_format framing '$request_id $status $upstream_status $upstream_http_x_request_id "
      "$ssl_protocol $connection $request_length';\n"
      "  access_log " +
      d +
      "/access.log framing;\n"
      "  client_body_temp_path " +
      d +
      "/tmp/body;\n"
      "  proxy_temp_path " +
      d +
      "/tmp/proxy;\n"
      "  fastcgi_temp_path " +
      d +
      "/tmp/fastcgi;\n"
      "  uwsgi_temp_path " +
      d +
      "/tmp/uwsgi;\n"
      "  scgi_temp_path " +
      d + "/tmp/scgi;\n";
  if (root_.empty()) {
    conf +=
        "  upstream trellis {\n"
        "    server 127.0.0.1:" +
        std::to_string(upstream_port_) +
        ";\n"
        "    keepalive 8;\n"  // reused upstream connections: where a desync would smuggle
        "  }\n";
  }
  conf +=
      "  server {\n"
      "    listen 127.0.0.1:" +
      std::to_string(port) + (tls_cert_.empty() ? "" : " ssl") + ";\n";
  if (!tls_cert_.empty()) {
    conf += "    ssl_certificate " + tls_cert_.string() + ";\n    ssl_certificate_key " +
            tls_key_.string() + ";\n    ssl_protocols " + tls_protocols_ + ";\n";
  }
  if (!root_.empty()) {
    conf += "    location / {\n      root " + root_.string() + ";\n";
    if (uploads_) {
      conf +=
          "      dav_methods PUT;\n"
          "      create_full_put_path on;\n"
          "      client_max_body_size 0;\n";
    }
    conf += "    }\n  }\n}\n";
  } else {
    conf +=
        "    location / {\n"
        "      proxy_pass http://trellis;\n"
        "      proxy_http_version 1.1;\n"
        "      proxy_set_header Connection \"\";\n"
        "      proxy_request_buffering off;\n"
        "      proxy_next_upstream off;\n"
        "      proxy_set_header X-Proxy-Id $request_id;\n"
        "      add_header X-Proxy-Id $request_id always;\n"
        "    }\n"
        "  }\n"
        "}\n";
  }
  writeFile(dir_ / "nginx.conf", conf);

  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
    std::string out = d + "/stdout.log", c = d + "/nginx.conf", e = d + "/error.log",
                prefix = d + "/";
    FILE* f = std::freopen(out.c_str(), "a", stdout);
    (void)f;
    ::dup2(::fileno(stdout), STDERR_FILENO);
    ::execl(binary_.c_str(), binary_.c_str(), "-p", prefix.c_str(), "-c", c.c_str(), "-e",
            e.c_str(), static_cast<char*>(nullptr));
    std::perror("exec nginx");
    std::_Exit(127);
  }
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {  // e.g. the port was taken meanwhile
      pid_ = -1;
      error_ = "nginx exited at start: " + errorLog() + readFile(dir_ / "stdout.log");
      return false;
    }
    if (acceptsOnLoopback(port)) {
      port_ = port;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = "nginx did not accept connections on port " + std::to_string(port) + ": " + errorLog();
  stop();
  return false;
}

void NginxServer::stop() {
  stopChild(pid_, SIGQUIT, std::chrono::seconds(5));
}

}  // namespace trellis::test
