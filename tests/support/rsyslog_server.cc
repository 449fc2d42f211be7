#include "support/rsyslog_server.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kRsyslogd = "/usr/sbin/rsyslogd";

}  // namespace

RsyslogServer::~RsyslogServer() {
  stop();
}

std::string RsyslogServer::fileText(const std::string& name) const {
  return fs::exists(dir_ / name) ? readFile(dir_ / name) : "";
}

std::string RsyslogServer::raw() const {
  return fileText("raw.log");
}
std::string RsyslogServer::parsed() const {
  return fileText("parsed.log");
}
std::string RsyslogServer::log() const {
  return fileText("stderr.log");
}

bool RsyslogServer::start(std::chrono::milliseconds timeout) {
  if (::access(kRsyslogd, X_OK) != 0) {
    error_ = "rsyslogd is not installed; the syslog tests need it (scripts/deps.sh)";
    return false;
  }
  if (wanted_port_ != 0) return startOn(wanted_port_, timeout);
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (startOn(freeLoopbackPort(), timeout)) return true;
  }
  return false;
}

bool RsyslogServer::startOn(uint16_t port, std::chrono::milliseconds timeout) {
  const std::string d = dir_.path().string();
  const bool tls = !tls_cert_.empty();
  // maxMessageSize must come before any input: audit records reach 16 KiB and more.
  std::string conf =
      "global(workDirectory=\"" + d + "\" processInternalMessages=\"on\" maxMessageSize=\"256k\"";
  if (tls) {
    conf += " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"" + tls_ca_.string() +
            "\" DefaultNetstreamDriverCertFile=\"" + tls_cert_.string() +
            "\" DefaultNetstreamDriverKeyFile=\"" + tls_key_.string() + "\"";
  }
  conf += ")\n";
  conf += tls ? "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" "
                "StreamDriver.AuthMode=\"anon\")\n"
              : "module(load=\"imtcp\")\n";
  conf += "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"" + std::to_string(port) +
          "\" ruleset=\"recv\")\n"
          "template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n"
          "template(name=\"parsed\" type=\"list\") {\n"
          "  constant(value=\"pri=\") property(name=\"pri\")\n"
          "  constant(value=\" ver=\") property(name=\"protocol-version\")\n"
          "  constant(value=\" ts=\") property(name=\"timereported\" dateFormat=\"rfc3339\")\n"
          "  constant(value=\" host=\") property(name=\"hostname\")\n"
          "  constant(value=\" app=\") property(name=\"app-name\")\n"
          "  constant(value=\" procid=\") property(name=\"procid\")\n"
          "  constant(value=\" msgid=\") property(name=\"msgid\")\n"
          "  constant(value=\" sd=\") property(name=\"structured-data\")\n"
          "  constant(value=\" msg=\") property(name=\"msg\" droplastlf=\"on\")\n"
          "  constant(value=\"\\n\")\n"
          "}\n"
          "ruleset(name=\"recv\") {\n"
          "  action(type=\"omfile\" file=\"" +
          d +
          "/raw.log\" template=\"raw\")\n"
          "  action(type=\"omfile\" file=\"" +
          d +
          "/parsed.log\" template=\"parsed\")\n"
          "}\n";
  writeFile(dir_ / "rsyslog.conf", conf);

  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
    const std::string err = d + "/stderr.log", c = d + "/rsyslog.conf", pid = d + "/rsyslogd.pid";
    FILE* f = std::freopen(err.c_str(), "a", stderr);
    (void)f;
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execl(kRsyslogd, kRsyslogd, "-n", "-f", c.c_str(), "-i", pid.c_str(),
            static_cast<char*>(nullptr));
    std::perror("exec rsyslogd");
    std::_Exit(127);
  }
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {  // e.g. the port was taken meanwhile
      pid_ = -1;
      error_ = "rsyslogd exited at start: " + log();
      return false;
    }
    if (acceptsOnLoopback(port)) {
      port_ = port;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = "rsyslogd did not accept connections on port " + std::to_string(port) + ": " + log();
  stop();
  return false;
}

void RsyslogServer::stop() {
  stopChild(pid_, SIGTERM, std::chrono::seconds(5));
}

}  // namespace trellis::test
