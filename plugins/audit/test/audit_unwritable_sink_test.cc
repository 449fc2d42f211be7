// Issue #15 item 8 with the real plugin as the sink (audit.on_sink_failure: block): while the
// plugin's storage refuses writes, kernel admin actions are refused with 503 naming the sink
// and change nothing; once it takes writes again no record claims they happened, the log
// still verifies, and the next action works and is recorded. On both storage backends:
//   SQLite      data/tenants (the plugin's _system.db and its redo log) on a small tmpfs in a
//               private mount namespace, filled up. A read-only remount is not possible here:
//               the kernel keeps the redo log and the database open for writing, and Linux
//               refuses to remount a file system read-only under open writers (EBUSY). A full
//               one fails the same durable write (pwrite of the redo log: ENOSPC).
//   PostgreSQL  INSERT, UPDATE and DELETE on trellis.kv revoked from the role trellisd
//               uses; effective at once, in its open sessions too.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "audit_test_util.h"
#include "core/hash.h"
#include "core/record.h"
#include "support/shared_postgres.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

enum class Backend { kSqlite, kPostgres };

// This test process (and so the trellisd it starts) in a mount namespace of its own, where
// mounts do not propagate back: nothing outside sees the tmpfs. "" or why it is not possible.
std::string privateMountNamespace() {
  static const std::string error = []() -> std::string {
    if (::unshare(CLONE_NEWNS) != 0) return std::string("unshare: ") + std::strerror(errno);
    if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return std::string("mount --make-rprivate /: ") + std::strerror(errno);
    }
    return "";
  }();
  return error;
}

// A small tmpfs at `dir`, filled on demand; detached when dropped (trellisd may still hold
// files in it).
class FillableTmpfs {
 public:
  explicit FillableTmpfs(fs::path dir) : dir_(std::move(dir)) {}
  ~FillableTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  std::string mount() {
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=16m,mode=0755") != 0) {
      return std::string("mount tmpfs: ") + std::strerror(errno);
    }
    mounted_ = true;
    return "";
  }
  // Takes every free block: the next write that needs one fails with ENOSPC.
  bool fill() {
    int fd = ::open((dir_ / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    const std::string chunk(4096, 'x');
    while (::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    const bool full = errno == ENOSPC;
    ::close(fd);
    return full;
  }
  void empty() { fs::remove(dir_ / "filler"); }

 private:
  fs::path dir_;
  bool mounted_ = false;
};

class AuditUnwritableSinkTest : public ::testing::TestWithParam<Backend> {
 protected:
  virtual std::string failureMode() const { return "block"; }
  void SetUp() override {
    std::string extra = "audit:\n  sink: trellis/audit\n  on_sink_failure: " + failureMode() + "\n";
    std::string config = defaultTestConfig(
        "    - id: trellis/audit\n"
        "      system: true\n"
        "      config: {checkpoint_every: 1000, checkpoint_interval_s: 3600,"
        " hmac_key_interval_s: 0}\n",
        extra);
    if (GetParam() == Backend::kPostgres) {
      db_ = SharedPostgres::freshDatabase();
      ASSERT_TRUE(db_) << db_.error;
      const std::string anchor = "  data_dir: @DATA@\n";
      config.insert(config.find(anchor) + anchor.size(),
                    "  url: \"" + db_.appUrl() + "\"\n  pool_size: 2\n");
    }
    server_ = std::make_unique<TrellisdProcess>(config);
    if (GetParam() == Backend::kSqlite) {
      if (std::string e = privateMountNamespace(); !e.empty()) {
        GTEST_SKIP() << "no private mount namespace here: " << e;
      }
      tmpfs_ = std::make_unique<FillableTmpfs>(server_->dir() / "data" / "tenants");
      if (std::string e = tmpfs_->mount(); !e.empty()) GTEST_SKIP() << e;
    }
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  // The plugin's storage refuses every write from now on.
  void refuseWrites() {
    if (GetParam() == Backend::kSqlite) {
      ASSERT_TRUE(tmpfs_->fill());
    } else {
      SqlResult r = SharedPostgres::server().execSql(
          "REVOKE INSERT, UPDATE, DELETE ON trellis.kv FROM trellis_app", db_.name);
      ASSERT_TRUE(r) << r.error;
    }
    // A full file system may still have room in a file's last page: the records of admin
    // reads, as small as an admin record gets, use it up until one is refused too.
    ASSERT_TRUE(eventually([&] { return admin("GET", "/v1/tenants").status == 503; }))
        << server_->log();
  }
  void acceptWrites() {
    if (GetParam() == Backend::kSqlite) {
      tmpfs_->empty();
    } else {
      SqlResult r = SharedPostgres::server().execSql(
          "GRANT INSERT, UPDATE, DELETE ON trellis.kv TO trellis_app", db_.name);
      ASSERT_TRUE(r) << r.error;
    }
  }

  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  // The system log, signed up to now and exported, passes `trellis-audit verify`.
  void expectSystemLogVerifies() {
    ASSERT_EQ(audit("POST", "logs/_system/checkpoint").status, 200);
    auto evidence = audit("GET", "logs/_system/evidence");
    ASSERT_EQ(evidence.status, 200) << evidence.body;
    std::string out;
    EXPECT_EQ(verifyPack(evidence.body, &out), 0) << out;
  }

  // PostgreSQL: the newest line of the system log, read from storage.
  std::string lastSystemLine() {
    SqlResult last = SharedPostgres::server().execSql(
        "SELECT convert_from(value, 'UTF8') FROM trellis.kv WHERE tenant_id = '_system' AND "
        "plugin = 'trellis/audit' AND convert_from(key, 'UTF8') LIKE 'rec/\\_system/%' "
        "ORDER BY key DESC LIMIT 1",
        db_.name);
    EXPECT_TRUE(last) << last.error;
    EXPECT_EQ(last.rows.size(), 1u);
    return last && last.rows.size() == 1 ? last.rows[0][0] : std::string();
  }
  // PostgreSQL: stores `incoming` as the system log's next record behind the plugin's back,
  // chained to the newest line, as a commit whose answer was lost leaves it; returns it.
  std::string plantRecordAfterTheLast(const std::string& incoming) {
    const std::string last_line = lastSystemLine();
    if (last_line.empty()) return "";
    const uint64_t seq = json(last_line)->getValue<uint64_t>("seq") + 1;
    auto in = audit::IncomingRecord::parse(incoming);
    EXPECT_TRUE(in) << in.status().message();
    if (!in) return "";
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    const std::string landed = audit::buildRecord(*in, {.seq = seq,
                                                        .time_ms = now_ms,
                                                        .event_id = audit::uuidV7(now_ms),
                                                        .prev = audit::sha256(last_line)});
    SqlResult put = SharedPostgres::server().execSql(
        "INSERT INTO trellis.kv(tenant_id, plugin, key, value, version) VALUES ('_system', "
        "'trellis/audit', decode('" +
            audit::toHex("rec/_system/" + padded(seq)) + "', 'hex'), decode('" +
            audit::toHex(landed) + "', 'hex'), 1)",
        db_.name);
    EXPECT_TRUE(put) << put.error;
    return landed;
  }

  HttpReply audit(const std::string& method, const std::string& tail) {
    return admin(method, "/v1/x/trellis/audit/" + tail);
  }
  double metric(const std::string& name) {
    std::smatch m;
    const std::string body = admin("GET", "/metrics").body;
    if (!std::regex_search(body, m, std::regex("\n" + name + " ([0-9.e+]+)"))) return -1;
    return std::stod(m[1]);
  }
  std::vector<Poco::JSON::Object::Ptr> systemRecords(uint64_t from) {
    std::vector<Poco::JSON::Object::Ptr> out;
    auto r = audit("GET", "logs/_system/records?from=" + std::to_string(from) + "&limit=100000");
    EXPECT_EQ(r.status, 200) << r.body;
    for (const auto& l : lines(r.body)) out.push_back(json(l));
    return out;
  }
  uint64_t systemSize() {
    auto logs = json(audit("GET", "logs").body)->getArray("logs");
    for (size_t i = 0; logs && i < logs->size(); ++i) {
      auto log = logs->getObject(static_cast<unsigned>(i));
      if (log->getValue<std::string>("log") == "_system") return log->getValue<uint64_t>("size");
    }
    return 0;
  }

  TestDatabase db_;
  std::unique_ptr<TrellisdProcess> server_;
  std::unique_ptr<FillableTmpfs> tmpfs_;  // SQLite: data/tenants; detached before the above
};

TEST_P(AuditUnwritableSinkTest, AdminActionsAreRefusedChangeNothingAndClaimNothing) {
  ASSERT_EQ(admin("POST", "/v1/tenants", R"({"id":"initech"})").status, 201) << server_->log();
  const std::string tenants_before = admin("GET", "/v1/tenants").body;
  const std::string keys_before = admin("GET", "/v1/tenants/initech/keys").body;
  const std::string policies_before = admin("GET", "/v1/policies").body;
  const uint64_t size_before = systemSize();
  ASSERT_GT(size_before, 0u);

  refuseWrites();
  const double refused_before = metric("trellis_audit_refused_actions_total");
  const std::string deny_all = R"({"name": "deny.lua", "source": "function on_request(ctx, req) )"
                               R"(return policy.deny(403, 'denied') end"})";
  for (auto [method, path, body] : {std::tuple{"POST", "/v1/tenants", R"({"id":"hooli"})"},
                                    std::tuple{"POST", "/v1/tenants/initech/keys", "{}"},
                                    std::tuple{"PUT", "/v1/policies/global", deny_all.c_str()},
                                    std::tuple{"DELETE", "/v1/tenants/initech", ""}}) {
    auto r = admin(method, path, body);
    EXPECT_EQ(r.status, 503) << method << " " << path << ": " << r.body;
    EXPECT_THAT(r.body, HasSubstr("audit sink trellis/audit did not store the record"))
        << method << " " << path;
    EXPECT_THAT(r.body, HasSubstr("nothing was changed (audit.on_sink_failure: block)"));
  }
  EXPECT_EQ(metric("trellis_audit_refused_actions_total"), refused_before + 4) << server_->log();
  acceptWrites();

  // Nothing changed.
  EXPECT_EQ(admin("GET", "/v1/tenants/hooli").status, 404);
  EXPECT_EQ(admin("GET", "/v1/tenants/initech").status, 200);
  EXPECT_EQ(admin("GET", "/v1/tenants").body, tenants_before);
  EXPECT_EQ(admin("GET", "/v1/tenants/initech/keys").body, keys_before);
  EXPECT_EQ(admin("GET", "/v1/policies").body, policies_before);

  // The next action works, and its records are the first about a write since the refusal:
  // none of the refused actions is recorded as requested or done.
  ASSERT_EQ(admin("POST", "/v1/tenants", R"({"id":"hooli"})").status, 201) << server_->log();
  bool created_recorded = false;
  int creation_requests = 0;  // the one that worked only, not the refused one
  for (const auto& rec : systemRecords(size_before + 1)) {
    const std::string action = rec->getValue<std::string>("action");
    const std::string resource = rec->optValue<std::string>("resource", "");
    const std::string type = rec->getValue<std::string>("type");
    const bool mutating = action.rfind("GET ", 0) != 0;
    if (!mutating || type.rfind("admin.", 0) != 0) continue;
    if (action == "POST /v1/tenants" && type == "admin.response" &&
        rec->optValue<int>("status", 0) == 201) {
      created_recorded = true;
      continue;
    }
    if (action == "POST /v1/tenants" && type == "admin.request" && !created_recorded) {
      ++creation_requests;
      continue;
    }
    ADD_FAILURE() << "a record of a refused action: " << rec->get("action").toString() << " "
                  << resource << " " << type << " status " << rec->optValue<int>("status", 0);
  }
  EXPECT_TRUE(created_recorded) << "the tenant created after the outage is recorded";
  EXPECT_EQ(creation_requests, 1);
  EXPECT_EQ(admin("GET", "/v1/tenants/hooli").status, 200);

  // The log the refusals left behind still verifies end to end.
  expectSystemLogVerifies();
}

// A commit whose answer is lost (the session dies between COMMIT and its reply) leaves a record
// stored that the plugin was told was not: its next append must read it back, not try the same
// seq for ever. Sessions are killed while admin actions run; some actions are refused, and once
// the killing stops they all work again, without a restart, and the log verifies.
TEST_P(AuditUnwritableSinkTest, AppendsKeepWorkingWhileStorageSessionsAreKilled) {
  if (GetParam() != Backend::kPostgres) GTEST_SKIP() << "kills PostgreSQL sessions";
  std::atomic<bool> stop{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    while (!stop.load()) {
      SqlResult r = SharedPostgres::server().execSql(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + db_.name +
              "' AND pid <> pg_backend_pid()",
          db_.name);
      if (r) kills.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(3));  // pacing the fault, not a wait
    }
  });
  int created = 0, refused = 0;
  std::vector<std::string> made;
  for (int i = 0; i < 60; ++i) {
    const std::string id = "killed-" + std::to_string(i);
    const int status = admin("POST", "/v1/tenants", R"({"id":")" + id + R"("})").status;
    if (status == 201) {
      ++created;
      made.push_back(id);
    } else {
      ++refused;
    }
  }
  stop = true;
  killer.join();
  EXPECT_GT(kills.load(), 0);
  std::cout << "[ info ] created " << created << ", refused " << refused << " while "
            << kills.load() << " kill rounds ran\n";

  // Without a restart: the next actions work (a wedged log would refuse every one).
  for (int i = 0; i < 5; ++i) {
    const std::string id = "after-" + std::to_string(i);
    ASSERT_TRUE(eventually([&] {
      const int status = admin("POST", "/v1/tenants", R"({"id":")" + id + R"("})").status;
      return status == 201 || status == 409;
    })) << server_->log();
    EXPECT_EQ(admin("GET", "/v1/tenants/" + id).status, 200);
  }
  for (const auto& id : made) EXPECT_EQ(admin("GET", "/v1/tenants/" + id).status, 200) << id;

  // A record stored behind a lost answer is kept and named by a later record.
  for (const auto& rec : systemRecords(1)) {
    if (rec->getValue<std::string>("action") != "audit.record.stored_after_failure") continue;
    const uint64_t seq = rec->getObject("parameters")->getValue<uint64_t>("seq");
    EXPECT_LT(seq, rec->getValue<uint64_t>("seq"));
    std::cout << "[ info ] record " << seq << " was stored although its answer was lost\n";
  }

  expectSystemLogVerifies();
}

// The lost answer made deterministic: while the plugin's writes are refused (so its last write
// failed), the record it was writing is put in storage behind its back, exactly as a commit
// whose answer was lost leaves it. Once writes work again the next action is not refused for
// ever on that seq: the plugin reads the record back, keeps it, names it in an
// audit.record.stored_after_failure record, and the log verifies.
TEST_P(AuditUnwritableSinkTest, ARecordStoredDespiteAFailedWriteIsReadBackAndNamed) {
  if (GetParam() != Backend::kPostgres) GTEST_SKIP() << "writes storage behind trellisd's back";
  ASSERT_EQ(admin("POST", "/v1/tenants", R"({"id":"initech"})").status, 201) << server_->log();
  refuseWrites();

  // What the plugin stores for the refused request, had its commit landed.
  const std::string landed = plantRecordAfterTheLast(
      R"({"type":"admin.request","action":"POST /v1/tenants","tenant":"","outcome":"pending",)"
      R"("resource":"/v1/tenants","actor":{"name":"bootstrap","principal":"bootstrap",)"
      R"("role":"operator"},"parameters":{"id":"hooli"},"seq":1000000,"request_id":"lost"})");
  ASSERT_FALSE(landed.empty());
  const uint64_t landed_seq = json(landed)->getValue<uint64_t>("seq");
  acceptWrites();

  // Not wedged: the next action works at once, no restart.
  ASSERT_EQ(admin("POST", "/v1/tenants", R"({"id":"hooli"})").status, 201) << server_->log();
  auto records = systemRecords(landed_seq);
  ASSERT_GE(records.size(), 2u);
  EXPECT_EQ(records[0]->getValue<std::string>("request_id"), "lost");
  EXPECT_EQ(records[0]->getValue<std::string>("event_id"),
            json(landed)->getValue<std::string>("event_id"));
  EXPECT_EQ(records[1]->getValue<std::string>("action"), "audit.record.stored_after_failure");
  EXPECT_EQ(records[1]->getObject("parameters")->getValue<uint64_t>("seq"), landed_seq);
  EXPECT_NE(server_->log().find("was stored although its write reported a failure"),
            std::string::npos);

  expectSystemLogVerifies();
}

// In degrade mode the kernel keeps a record the sink did not store and sends it again once the
// sink stores. If that record did land (a lost answer), the redelivery must not be a second
// copy: the sink answers with the stored record's seq.
class AuditDegradedSinkTest : public AuditUnwritableSinkTest {
 protected:
  std::string failureMode() const override { return "degrade"; }
};

TEST_P(AuditDegradedSinkTest, TheRedeliveryOfARecordThatLandedIsNotStoredTwice) {
  ASSERT_EQ(admin("POST", "/v1/tenants", R"({"id":"initech"})").status, 201) << server_->log();
  SqlResult revoke = SharedPostgres::server().execSql(
      "REVOKE INSERT, UPDATE, DELETE ON trellis.kv FROM trellis_app", db_.name);
  ASSERT_TRUE(revoke) << revoke.error;
  // Degrade: the action proceeds; its records wait in the kernel's backlog.
  const HttpReply created = admin("POST", "/v1/tenants", R"({"id":"hooli"})");
  const std::string request_id = created.header("x-request-id");
  ASSERT_FALSE(request_id.empty());

  const std::string last_line = lastSystemLine();
  ASSERT_FALSE(last_line.empty());
  // The request record was the first the sink failed to store: the kernel's next number.
  const int64_t kernel_seq = json(last_line)->getValue<int64_t>("kernel_seq") + 1;
  const std::string landed = plantRecordAfterTheLast(
      R"({"type":"admin.request","action":"POST /v1/tenants","tenant":"","outcome":"pending",)"
      R"("resource":"/v1/tenants","actor":{"name":"bootstrap","principal":"bootstrap"},)"
      R"("parameters":{"id":"hooli"},"request_id":")" +
      request_id + R"(","seq":)" + std::to_string(kernel_seq) + "}");
  ASSERT_FALSE(landed.empty());
  const uint64_t landed_seq = json(landed)->getValue<uint64_t>("seq");
  SqlResult grant = SharedPostgres::server().execSql(
      "GRANT INSERT, UPDATE, DELETE ON trellis.kv TO trellis_app", db_.name);
  ASSERT_TRUE(grant) << grant.error;

  // The next audited call sends the backlog first (/metrics is not audited).
  ASSERT_TRUE(eventually([&] {
    admin("GET", "/v1/tenants");
    return metric("trellis_audit_backlog_records") == 0;
  })) << server_->log();
  int requests = 0, responses = 0;
  bool named = false;
  for (const auto& rec : systemRecords(landed_seq)) {
    if (rec->optValue<std::string>("request_id", "") == request_id) {
      const std::string type = rec->getValue<std::string>("type");
      if (type == "admin.request") ++requests;
      if (type == "admin.response") ++responses;
    }
    if (rec->getValue<std::string>("action") == "audit.record.stored_after_failure") {
      named = rec->getObject("parameters")->getValue<uint64_t>("seq") == landed_seq;
    }
  }
  EXPECT_EQ(requests, 1) << "the landed request record, not a second copy";
  EXPECT_EQ(responses, 1);
  EXPECT_TRUE(named);
  EXPECT_EQ(systemRecords(landed_seq)[0]->getValue<std::string>("event_id"),
            json(landed)->getValue<std::string>("event_id"));

  expectSystemLogVerifies();
}

INSTANTIATE_TEST_SUITE_P(Storage, AuditDegradedSinkTest, ::testing::Values(Backend::kPostgres),
                         [](const auto&) { return "Postgres"; });

INSTANTIATE_TEST_SUITE_P(Storage, AuditUnwritableSinkTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

}  // namespace
}  // namespace trellis::test
