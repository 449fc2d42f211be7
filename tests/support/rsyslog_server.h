// Debian's rsyslogd as a test's syslog collector: its own config, work directory and
// pidfile in a temp dir (never /etc/rsyslog.conf, /dev/log or /run/rsyslogd.pid), one TCP
// input on 127.0.0.1 — plain, or TLS with the gtls driver (RFC 5425) after serveTls() —
// and two files per message: raw.log (%rawmsg%, exactly what arrived) and parsed.log
// (rsyslog's own reading of the RFC 5424 header and structured data, one line each:
// "pri=… ver=… ts=… host=… app=… procid=… msgid=… sd=… msg=…").
//
//   RsyslogServer syslog;
//   ASSERT_TRUE(syslog.start()) << syslog.error();
//   ... send to tcp://127.0.0.1:<syslog.port()> ...
//   ASSERT_TRUE(eventually([&] { return syslog.parsed().find("msgid=x") != npos; }));
//
// rsyslog writes asynchronously: poll the files. A missing rsyslogd is a failure naming
// scripts/deps.sh, not a skip.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace trellis::test {

class RsyslogServer {
 public:
  RsyslogServer() = default;
  ~RsyslogServer();  // SIGTERM, then SIGKILL
  RsyslogServer(const RsyslogServer&) = delete;
  RsyslogServer& operator=(const RsyslogServer&) = delete;

  // TLS with this PEM certificate (chain) and key; `ca` is what rsyslog trusts (required by
  // gtls even though clients are not asked for certificates).
  void serveTls(std::filesystem::path ca, std::filesystem::path cert, std::filesystem::path key) {
    tls_ca_ = std::move(ca);
    tls_cert_ = std::move(cert);
    tls_key_ = std::move(key);
  }

  // Listen on this port rather than a free one (a collector that comes back where it was).
  void listenOn(uint16_t port) { wanted_port_ = port; }

  // Starts rsyslogd and waits until it accepts connections; false with error() on failure.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  void stop();

  uint16_t port() const { return port_; }
  const std::string& error() const { return error_; }
  std::string raw() const;     // every message as received, one per line
  std::string parsed() const;  // rsyslog's parse of each, one per line
  std::string log() const;     // rsyslogd's own stderr (TLS errors land here)

 private:
  bool startOn(uint16_t port, std::chrono::milliseconds timeout);
  std::string fileText(const std::string& name) const;

  TempDir dir_;
  uint16_t port_ = 0;
  uint16_t wanted_port_ = 0;
  pid_t pid_ = -1;
  std::string error_;
  std::filesystem::path tls_ca_, tls_cert_, tls_key_;
};

}  // namespace trellis::test
