// trellis/audit shipping its logs to a real rsyslog (tests/support/rsyslog_server.h) over
// TCP and over TLS: every record of every log arrives once, as the RFC 5424 message the
// export route serves, and rsyslog reads its header and structured data; records made while
// the collector is down arrive once it is back; without the operator's egress rule a
// loopback collector is refused, and the job says why.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "audit_test_util.h"
#include "support/rsyslog_server.h"
#include "support/test_certs.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};

// The messages of a body of octet-counted frames (RFC 6587 §3.4.1): "<length> <message>".
std::vector<std::string> framesOf(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < body.size()) {
    const size_t space = body.find(' ', at);
    if (space == std::string::npos) break;
    const size_t length = std::stoul(body.substr(at, space - at));
    out.push_back(body.substr(space + 1, length));
    at = space + 1 + length;
  }
  return out;
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class AuditSyslogTest : public ::testing::Test {
 protected:
  // trellisd with the audit plugin forwarding to `url` every second; `operator_rule` is the
  // plugin entry's egress list (empty: none).
  void start(const std::string& url, const std::string& operator_rule,
             const std::string& extra = "") {
    std::string entry =
        "    - id: trellis/audit\n"
        "      system: true\n";
    if (!operator_rule.empty()) entry += "      egress: [\"" + operator_rule + "\"]\n";
    entry += "      config: {syslog_url: \"" + url +
             "\", syslog_interval_s: 1, syslog_hostname: trellis-test}\n";
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(
        entry, "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n" + extra));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  // Records in both logs: admin actions in _system, a tenant's own read in its log.
  void makeRecords(const std::string& tag) {
    for (const char* who : {"-a", "-b"}) {
      auto r =
          admin("POST", "/v1/admin-tokens", R"({"name":")" + tag + who + R"(","role":"auditor"})");
      ASSERT_EQ(r.status, 201) << r.body;
    }
    ASSERT_EQ(request(server_->port(), "GET", "/audit/v1/records", kAcme).status, 200);
  }
  // Every log's records as the export route renders them for syslog.
  std::vector<std::string> exported() {
    std::vector<std::string> out;
    for (const char* log : {"_system", "acme"}) {
      auto r = admin("GET", std::string("/v1/x/trellis/audit/logs/") + log +
                                "/records?format=syslog&limit=100000");
      EXPECT_EQ(r.status, 200) << r.body;
      for (auto& m : framesOf(r.body)) out.push_back(std::move(m));
    }
    return out;
  }
  // True once every exported message is in rsyslog's raw.log.
  static bool allArrived(const RsyslogServer& syslog, const std::vector<std::string>& messages) {
    const std::string raw = syslog.raw();
    for (const auto& m : messages) {
      if (raw.find(m + "\n") == std::string::npos) return false;
    }
    return true;
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditSyslogTest, EveryRecordOfEveryLogArrivesOnceOverTcp) {
  RsyslogServer syslog;
  ASSERT_TRUE(syslog.start()) << syslog.error();
  const std::string url = "tcp://127.0.0.1:" + std::to_string(syslog.port());
  start(url, url);
  makeRecords("tcp");
  std::vector<std::string> messages = exported();
  ASSERT_GE(messages.size(), 3u);
  ASSERT_TRUE(eventually([&] { return allArrived(syslog, messages); }))
      << "raw.log:\n"
      << syslog.raw() << "\nrsyslog:\n"
      << syslog.log() << server_->log();
  // Sent once each, byte for byte what the export serves (the record itself is the MSG).
  const std::string raw = syslog.raw();
  for (const auto& m : messages) EXPECT_EQ(occurrences(raw, m + "\n"), 1u) << m;
  // rsyslog reads the RFC 5424 header and the structured data.
  const std::string parsed = syslog.parsed();
  EXPECT_THAT(parsed, HasSubstr("pri=110 ver=1 "));  // facility 13 (log audit), severity 6
  EXPECT_THAT(parsed, HasSubstr(" host=trellis-test app=trellis-audit procid=- msgid="));
  EXPECT_THAT(parsed, HasSubstr("sd=[trellis@32473 tenant=\"acme\""));
  EXPECT_THAT(parsed, HasSubstr("event_id=\""));
}

TEST_F(AuditSyslogTest, RecordsMadeWhileTheCollectorIsDownArriveOverTlsOnceItIsBack) {
  TempDir pki;
  Identity ca =
      makeCert(pki.path(), "ca", {.cn = "Test Syslog CA", .sans = "", .ca = true}, nullptr);
  Identity leaf = makeCert(pki.path(), "syslog", {.cn = "syslog", .sans = "IP:127.0.0.1"}, &ca);
  const uint16_t port = freeLoopbackPort();
  const std::string url = "tls://127.0.0.1:" + std::to_string(port);
  // The kernel trusts the test CA for egress (egress.ca_file).
  start(url, url, "egress:\n  ca_file: " + ca.cert_file.string() + "\n");
  makeRecords("while-down");
  // Nothing listens yet: the job's runs fail, and it says why.
  ASSERT_TRUE(eventually([&] {
    return admin("GET", "/v1/jobs").body.find("refused") != std::string::npos;
  })) << admin("GET", "/v1/jobs").body
      << server_->log();

  RsyslogServer syslog;
  syslog.serveTls(ca.cert_file, leaf.cert_file, leaf.key_file);
  syslog.listenOn(port);
  ASSERT_TRUE(syslog.start()) << syslog.error();
  makeRecords("after");
  std::vector<std::string> messages = exported();
  ASSERT_TRUE(eventually([&] { return allArrived(syslog, messages); }, std::chrono::seconds(60)))
      << "raw.log:\n"
      << syslog.raw() << "\nrsyslog:\n"
      << syslog.log() << server_->log();
  EXPECT_THAT(syslog.raw(), HasSubstr("while-down-a"));
}

TEST_F(AuditSyslogTest, ALoopbackCollectorNeedsTheOperatorsEgressRule) {
  RsyslogServer syslog;
  ASSERT_TRUE(syslog.start()) << syslog.error();
  start("tcp://127.0.0.1:" + std::to_string(syslog.port()), "");
  makeRecords("refused");
  // The manifest allows tcp://*:* — public hosts only; the job records why it failed.
  std::string jobs;
  ASSERT_TRUE(eventually([&] {
    jobs = admin("GET", "/v1/jobs").body;
    return jobs.find("loopback") != std::string::npos;
  })) << jobs
      << server_->log();
  EXPECT_THAT(jobs, HasSubstr("syslog-forward"));
  EXPECT_EQ(syslog.raw(), "");
}

}  // namespace
}  // namespace trellis::test
