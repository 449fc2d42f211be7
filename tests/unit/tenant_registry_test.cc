// The tenant registry's contract, run against both system databases (SQLite's
// system.db and the shared PostgreSQL schema), plus several hosts sharing PostgreSQL.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "support/shared_postgres.h"
#include "support/test_support.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/registry.h"

namespace trellis::tenants {
namespace {

using test::SharedPostgres;
using test::TempDir;
using Outcome = Resolution::Outcome;
using namespace std::chrono_literals;

enum class Backend { kSqlite, kPostgres };

class RegistryFixture : public ::testing::Test {
 protected:
  void reopen() {
    reg_.reset();
    auto opened = open();
    ASSERT_TRUE(opened) << opened.status().toString();
    reg_ = std::move(*opened);
  }

  // Another registry on the same database: on PostgreSQL, what a second host sees.
  Result<std::unique_ptr<TenantRegistry>> open() {
    if (backend_ == Backend::kSqlite) return TenantRegistry::openSqlite(db_path_);
    if (db_.name.empty()) {
      db_ = SharedPostgres::freshDatabase();
      if (!db_) return Status::unavailable(db_.error);
    }
    return TenantRegistry::openPostgres(db_.app, 20ms);
  }

  TenantRecord tenant(std::string id, std::string plan = "default") {
    TenantRecord t;
    t.id = std::move(id);
    t.plan = std::move(plan);
    return t;
  }

  void createOk(TenantRecord t) {
    auto r = reg_->create(std::move(t));
    ASSERT_TRUE(r) << r.status().toString();
  }

  NewKey keyFor(std::string_view id, std::optional<int64_t> ttl = std::nullopt) {
    auto k = reg_->createKey(id, ttl);
    EXPECT_TRUE(k) << k.status().toString();
    return k ? *k : NewKey{};
  }

  // Everything the registry has stored, as bytes: the database files on SQLite, every
  // key row on PostgreSQL.
  std::string storedKeyBytes() {
    if (backend_ == Backend::kSqlite) {
      std::string bytes = test::readFile(db_path_);
      if (std::filesystem::exists(db_path_.string() + "-wal")) {
        bytes += test::readFile(db_path_.string() + "-wal");
      }
      return bytes;
    }
    auto r = SharedPostgres::server().execSql(
        "SELECT id || ' ' || tenant || ' ' || sha256 FROM trellis.api_keys", db_.name);
    EXPECT_TRUE(r) << r.error;
    std::string out;
    for (const auto& row : r.rows) out += row[0] + "\n";
    return out;
  }

  Backend backend_ = Backend::kSqlite;
  TempDir dir_;
  std::filesystem::path db_path_ = dir_.path() / "var" / "system.db";
  test::TestDatabase db_;
  std::unique_ptr<TenantRegistry> reg_;
};

class TenantRegistryTest : public RegistryFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override {
    backend_ = GetParam();
    reopen();
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, TenantRegistryTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

class SqliteTenantRegistryTest : public RegistryFixture {
 protected:
  void SetUp() override { reopen(); }
};

// Two trellisd hosts on one PostgreSQL: `reg_` is host A, `other_` host B.
class SharedTenantRegistryTest : public RegistryFixture {
 protected:
  void SetUp() override {
    backend_ = Backend::kPostgres;
    reopen();
    auto b = open();
    ASSERT_TRUE(b) << b.status().toString();
    other_ = std::move(*b);
  }

  // Waits until `pred` holds (another host polls every 20 ms here); false after 10 s.
  template <typename Pred>
  static bool eventually(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  std::unique_ptr<TenantRegistry> other_;
};

Quotas rate(uint64_t rps, std::optional<uint64_t> burst = std::nullopt) {
  Quotas q;
  q.requests_per_second = rps;
  q.burst = burst;
  return q;
}

// "trk_<8 lowercase hex>_<43 base64url>".
bool looksLikeKey(const std::string& k) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  auto b64url = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  };
  if (k.size() != 4 + 8 + 1 + 43 || k.compare(0, 4, "trk_") != 0 || k[12] != '_') return false;
  return std::all_of(k.begin() + 4, k.begin() + 12, hex) &&
         std::all_of(k.begin() + 13, k.end(), b64url);
}

TEST_F(SqliteTenantRegistryTest, CreatesTheDatabasePrivately) {
  struct stat st {};
  ASSERT_EQ(::stat(db_path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(db_path_.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_P(TenantRegistryTest, DefaultPlanAlwaysExistsWithoutLimits) {
  auto plans = reg_->plans();
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].name, "default");
  EXPECT_EQ(plans[0].quotas, Quotas{});
  // Leaving "default" out of a new set keeps it, unlimited.
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10, 20)}}));
  plans = reg_->plans();
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(plans[0].name, "default");
  EXPECT_EQ(plans[1].name, "free");
  // It may be given limits.
  ASSERT_TRUE(reg_->definePlans({{"default", rate(5)}}));
  ASSERT_EQ(reg_->plans().size(), 1u);
  EXPECT_EQ(reg_->plans()[0].quotas, rate(5));
}

TEST_P(TenantRegistryTest, CreateGetListUpdateRemove) {
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10, 20)}, {"pro", rate(100)}}));
  TenantRecord acme = tenant("acme", "free");
  acme.labels = {{"team", "payments"}, {"env", "prod"}};
  acme.plugins = {"trellis/hello", "acme/billing"};
  auto created = reg_->create(acme);
  ASSERT_TRUE(created) << created.status().toString();
  EXPECT_GT(created->created_at_ms, 0);
  EXPECT_EQ(created->source, "api");
  EXPECT_EQ(created->status, TenantStatus::kActive);
  createOk(tenant("globex"));

  auto got = reg_->get("acme");
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, *created);
  EXPECT_EQ(reg_->get("nobody").status().code(), StatusCode::kNotFound);

  auto all = reg_->list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, "acme");
  EXPECT_EQ(all[1].id, "globex");

  EXPECT_EQ(reg_->create(tenant("acme")).status().code(), StatusCode::kConflict);

  TenantRecord change = tenant("acme", "pro");
  change.labels = {{"team", "core"}};
  change.plugins = {"trellis/hello"};
  change.status = TenantStatus::kSuspended;  // ignored: update keeps status
  change.created_at_ms = 1;                  // ignored too
  auto updated = reg_->update(change);
  ASSERT_TRUE(updated) << updated.status().toString();
  EXPECT_EQ(updated->plan, "pro");
  EXPECT_EQ(updated->labels, (std::map<std::string, std::string>{{"team", "core"}}));
  EXPECT_EQ(updated->plugins, std::set<std::string>{"trellis/hello"});
  EXPECT_EQ(updated->status, TenantStatus::kActive);
  EXPECT_EQ(updated->created_at_ms, created->created_at_ms);
  EXPECT_EQ(*reg_->get("acme"), *updated);
  EXPECT_EQ(reg_->update(tenant("nobody")).status().code(), StatusCode::kNotFound);

  auto view = reg_->view("acme");
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->plan, "pro");
  EXPECT_TRUE(view->hasPlugin("trellis/hello"));
  EXPECT_FALSE(view->hasPlugin("acme/billing"));

  ASSERT_TRUE(reg_->remove("acme"));
  EXPECT_EQ(reg_->get("acme").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reg_->view("acme"), nullptr);
  EXPECT_EQ(reg_->remove("acme").code(), StatusCode::kNotFound);
  EXPECT_EQ(reg_->list().size(), 1u);
}

TEST_P(TenantRegistryTest, ValidationMessagesNameTheField) {
  auto expectInvalid = [&](TenantRecord t, const std::string& fragment) {
    auto r = reg_->create(std::move(t));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalid);
    EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
  };
  expectInvalid(tenant("Acme"), "tenant id \"Acme\"");
  expectInvalid(tenant(""), "tenant id \"\"");
  expectInvalid(tenant("acme", "gold"), "plan \"gold\" is not defined");
  expectInvalid(tenant("acme", "Gold!"), "plan name \"Gold!\"");

  TenantRecord t = tenant("acme");
  t.labels = {{"Team", "x"}};
  expectInvalid(t, "label key \"Team\"");
  t.labels = {{"team", std::string(257, 'x')}};
  expectInvalid(t, "label \"team\" value is 257 bytes");
  t.labels = {{"team", "a\nb"}};
  expectInvalid(t, "label \"team\" value contains control characters");
  t.labels = {{"team", std::string(256, 'x')}, {"a.b_c-d", ""}};
  createOk(t);

  for (const char* bad : {"hello", "/hello", "trellis/", "Trellis/hello", "a/b/c", "-a/b"}) {
    TenantRecord p = tenant("p1");
    p.plugins = {bad};
    expectInvalid(p, "plugin id \"" + std::string(bad) + "\"");
  }

  TenantRecord q = tenant("q1");
  q.overrides.max_body_bytes = 0;
  expectInvalid(q, "overrides: max_body_bytes must be at least 1");
  q.overrides = rate(10, 5);
  expectInvalid(q, "burst (5) must be at least requests_per_second (10)");
  q.overrides = {};
  q.overrides.max_concurrent = uint64_t{1} << 63;
  expectInvalid(q, "max_concurrent must be at most");

  TenantRecord s = tenant("s1");
  s.source = "yaml";
  expectInvalid(s, "source \"yaml\"");

  // Plans.
  auto planInvalid = [&](std::vector<Plan> plans, const std::string& fragment) {
    Status st = reg_->definePlans(std::move(plans));
    EXPECT_EQ(st.code(), StatusCode::kInvalid) << st.toString();
    EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
  };
  planInvalid({{"Free", {}}}, "plan name \"Free\"");
  planInvalid({{"free", rate(10, 9)}}, "plan \"free\": burst (9)");
  planInvalid({{"free", rate(0)}}, "plan \"free\": requests_per_second must be at least 1");
  planInvalid({{"free", {}}, {"free", {}}}, "plan \"free\" is defined twice");

  // Overrides are checked against the plan they sit on.
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10, 20)}}));
  TenantRecord o = tenant("o1", "free");
  o.overrides.requests_per_second = 50;
  expectInvalid(o, "burst (20) must be at least requests_per_second (50)");

  EXPECT_EQ(reg_->list().size(), 1u);  // only the valid "acme"
}

TEST_P(TenantRegistryTest, PlanQuotasAreOverlaidWithOverrides) {
  Quotas pro = rate(100, 200);
  pro.max_body_bytes = 1 << 20;
  pro.max_concurrent = 10;
  ASSERT_TRUE(reg_->definePlans({{"pro", pro}}));
  TenantRecord t = tenant("acme", "pro");
  t.overrides.max_body_bytes = 4 << 20;
  t.overrides.max_host_calls = 50;
  createOk(t);

  auto view = reg_->view("acme");
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->quotas.requests_per_second, 100u);
  EXPECT_EQ(view->quotas.burst, 200u);
  EXPECT_EQ(view->quotas.max_concurrent, 10u);
  EXPECT_EQ(view->quotas.max_body_bytes, uint64_t{4} << 20);
  EXPECT_EQ(view->quotas.max_host_calls, 50u);
  EXPECT_FALSE(view->quotas.max_storage_bytes);
  EXPECT_EQ(view->quotas, pro.overlaidWith(t.overrides));

  // A plan change reaches the tenant's view; its overrides still win.
  Quotas cheaper = rate(5, 10);
  cheaper.max_body_bytes = 1024;
  ASSERT_TRUE(reg_->definePlans({{"pro", cheaper}}));
  view = reg_->view("acme");
  EXPECT_EQ(view->quotas.requests_per_second, 5u);
  EXPECT_EQ(view->quotas.max_body_bytes, uint64_t{4} << 20);
  EXPECT_FALSE(view->quotas.max_concurrent);
}

TEST_P(TenantRegistryTest, UpsertPlansUpdatesItsOwnAndKeepsTheRest) {
  // trellis.yaml's plans at start: a plan a state file added (and a tenant on it) survives.
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10)}, {"enterprise", rate(1000)}}));
  createOk(tenant("acme", "enterprise"));
  ASSERT_TRUE(reg_->upsertPlans({{"free", rate(20)}, {"pro", rate(100)}}));
  std::map<std::string, uint64_t> rps;
  for (const auto& p : reg_->plans()) rps[p.name] = p.quotas.requests_per_second.value_or(0);
  EXPECT_EQ(rps, (std::map<std::string, uint64_t>{
                     {"default", 0}, {"enterprise", 1000}, {"free", 20}, {"pro", 100}}));
  EXPECT_EQ(reg_->view("acme")->plan, "enterprise");
  EXPECT_EQ(reg_->upsertPlans({{"x", rate(10, 5)}}).code(), StatusCode::kInvalid);  // burst < rate
  EXPECT_EQ(reg_->upsertPlans({{"a", rate(1)}, {"a", rate(2)}}).code(), StatusCode::kInvalid);
  EXPECT_EQ(reg_->plans().size(), 4u);
}

TEST_P(TenantRegistryTest, DefinePlansRefusesToDropAPlanInUse) {
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10)}, {"pro", rate(100)}}));
  createOk(tenant("acme", "free"));
  Status s = reg_->definePlans({{"pro", rate(100)}});
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_NE(s.message().find("plan \"free\" is still used by tenant \"acme\""), std::string::npos)
      << s.message();
  EXPECT_EQ(reg_->plans().size(), 3u);  // nothing changed

  // A redefinition that would make a tenant's overrides inconsistent is refused too.
  TenantRecord fast = tenant("fast", "pro");
  fast.overrides.requests_per_second = 150;
  createOk(fast);
  s = reg_->definePlans({{"free", rate(10)}, {"pro", rate(100, 120)}});
  EXPECT_EQ(s.code(), StatusCode::kInvalid) << s.toString();
  EXPECT_NE(s.message().find("tenant \"fast\""), std::string::npos) << s.message();
  EXPECT_FALSE(reg_->view("fast")->quotas.burst);

  ASSERT_TRUE(reg_->remove("acme"));
  ASSERT_TRUE(reg_->definePlans({{"pro", rate(100)}}));
  EXPECT_EQ(reg_->plans().size(), 2u);
}

TEST_P(TenantRegistryTest, CreatedKeyResolvesToItsTenant) {
  TenantRecord t = tenant("acme");
  t.plugins = {"trellis/hello"};
  createOk(t);
  NewKey key = keyFor("acme");
  EXPECT_TRUE(looksLikeKey(key.secret)) << key.secret;
  EXPECT_EQ(key.secret.substr(4, 8), key.info.id);
  EXPECT_EQ(key.info.tenant, "acme");
  EXPECT_FALSE(key.info.expires_at_ms);
  EXPECT_FALSE(key.info.revoked_at_ms);

  Resolution r = reg_->resolve(key.secret);
  ASSERT_EQ(r.outcome, Outcome::kOk);
  ASSERT_NE(r.tenant, nullptr);
  EXPECT_EQ(r.tenant->id, "acme");
  EXPECT_TRUE(r.tenant->hasPlugin("trellis/hello"));
  EXPECT_NE(r.snapshot, nullptr);

  // Two keys are never the same.
  NewKey other = keyFor("acme");
  EXPECT_NE(other.secret, key.secret);
  EXPECT_NE(other.info.id, key.info.id);
  EXPECT_EQ(reg_->createKey("nobody", std::nullopt).status().code(), StatusCode::kNotFound);
}

TEST_P(TenantRegistryTest, ResolutionKeepsItsTenantAliveAfterChanges) {
  createOk(tenant("acme"));
  NewKey key = keyFor("acme");
  Resolution r = reg_->resolve(key.secret);
  ASSERT_EQ(r.outcome, Outcome::kOk);
  ASSERT_TRUE(reg_->remove("acme"));
  // The old snapshot still holds the view; a new lookup sees the removal.
  EXPECT_EQ(r.tenant->id, "acme");
  EXPECT_EQ(reg_->resolve(key.secret).outcome, Outcome::kUnknownKey);
}

TEST_P(TenantRegistryTest, UnknownEmptyAndGarbageKeysAreUnknown) {
  createOk(tenant("acme"));
  NewKey key = keyFor("acme");
  std::string tampered = key.secret;
  tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
  for (const std::string& bad :
       {std::string(), std::string("trk_00000000_xxx"), tampered, key.secret + " ", key.info.id,
        sha256Hex(key.secret), std::string("\0\xff\x01", 3), std::string(100000, 'k')}) {
    Resolution r = reg_->resolve(bad);
    EXPECT_EQ(r.outcome, Outcome::kUnknownKey) << bad.substr(0, 40);
    EXPECT_EQ(r.tenant, nullptr);
  }
}

TEST_P(TenantRegistryTest, RevokedKeysAreRefused) {
  createOk(tenant("acme"));
  NewKey key = keyFor("acme");
  NewKey kept = keyFor("acme");
  ASSERT_TRUE(reg_->revokeKey(key.info.id));
  Resolution r = reg_->resolve(key.secret);
  EXPECT_EQ(r.outcome, Outcome::kRevokedKey);
  EXPECT_EQ(r.tenant, nullptr);
  EXPECT_EQ(reg_->resolve(kept.secret).outcome, Outcome::kOk);

  auto keys = reg_->listKeys("acme");
  ASSERT_EQ(keys.size(), 2u);
  const KeyInfo& revoked = keys[0].id == key.info.id ? keys[0] : keys[1];
  ASSERT_TRUE(revoked.revoked_at_ms);
  int64_t at = *revoked.revoked_at_ms;
  // Twice is fine and keeps the first time.
  ASSERT_TRUE(reg_->revokeKey(key.info.id));
  for (const auto& k : reg_->listKeys("acme")) {
    if (k.id == key.info.id) {
      EXPECT_EQ(k.revoked_at_ms, at);
    }
  }
  EXPECT_EQ(reg_->revokeKey("deadbeef").code(), StatusCode::kNotFound);
}

TEST_P(TenantRegistryTest, KeysExpire) {
  createOk(tenant("acme"));
  EXPECT_EQ(reg_->createKey("acme", 0).status().code(), StatusCode::kInvalid);
  EXPECT_EQ(reg_->createKey("acme", -5).status().code(), StatusCode::kInvalid);
  NewKey key = keyFor("acme", 1);
  ASSERT_TRUE(key.info.expires_at_ms);
  EXPECT_EQ(*key.info.expires_at_ms, key.info.created_at_ms + 1000);
  EXPECT_EQ(reg_->resolve(key.secret).outcome, Outcome::kOk);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  Resolution r = reg_->resolve(key.secret);
  EXPECT_EQ(r.outcome, Outcome::kExpiredKey);
  EXPECT_EQ(r.tenant, nullptr);
}

TEST_P(TenantRegistryTest, SuspendedTenantsResolveAsSuspended) {
  createOk(tenant("acme"));
  NewKey key = keyFor("acme");
  ASSERT_TRUE(reg_->setStatus("acme", TenantStatus::kSuspended));
  EXPECT_EQ(reg_->get("acme")->status, TenantStatus::kSuspended);
  Resolution r = reg_->resolve(key.secret);
  EXPECT_EQ(r.outcome, Outcome::kSuspended);
  ASSERT_NE(r.tenant, nullptr);
  EXPECT_EQ(r.tenant->id, "acme");
  EXPECT_EQ(r.tenant->status, TenantStatus::kSuspended);

  ASSERT_TRUE(reg_->setStatus("acme", TenantStatus::kActive));
  EXPECT_EQ(reg_->resolve(key.secret).outcome, Outcome::kOk);
  EXPECT_EQ(reg_->setStatus("nobody", TenantStatus::kActive).code(), StatusCode::kNotFound);
  EXPECT_EQ(tenantStatusName(TenantStatus::kSuspended), "suspended");
}

TEST_P(TenantRegistryTest, RemovingATenantRemovesItsKeys) {
  createOk(tenant("acme"));
  NewKey key = keyFor("acme");
  ASSERT_TRUE(reg_->remove("acme"));
  EXPECT_EQ(reg_->resolve(key.secret).outcome, Outcome::kUnknownKey);
  EXPECT_TRUE(reg_->listKeys("acme").empty());
  // A new tenant with the same id does not inherit them.
  createOk(tenant("acme"));
  EXPECT_EQ(reg_->resolve(key.secret).outcome, Outcome::kUnknownKey);
  EXPECT_EQ(reg_->revokeKey(key.info.id).code(), StatusCode::kNotFound);
}

TEST_P(TenantRegistryTest, ListKeysShowsIdsNeverSecrets) {
  createOk(tenant("acme"));
  createOk(tenant("globex"));
  NewKey a = keyFor("acme");
  NewKey b = keyFor("acme", 3600);
  keyFor("globex");
  auto keys = reg_->listKeys("acme");
  ASSERT_EQ(keys.size(), 2u);
  std::set<std::string> ids;
  for (const auto& k : keys) {
    ids.insert(k.id);
    EXPECT_EQ(k.tenant, "acme");
    EXPECT_EQ(k.id.size(), 8u);
  }
  EXPECT_EQ(ids, (std::set<std::string>{a.info.id, b.info.id}));
  EXPECT_TRUE(reg_->listKeys("nobody").empty());

  // Nothing stored is the secret or its base64 part.
  reg_.reset();
  std::string bytes = storedKeyBytes();
  for (const auto& secret : {a.secret, b.secret}) {
    EXPECT_EQ(bytes.find(secret.substr(13)), std::string::npos);
    EXPECT_NE(bytes.find(sha256Hex(secret)), std::string::npos);
  }
}

TEST_P(TenantRegistryTest, ImportedKeyHashesAreIdempotent) {
  createOk(tenant("acme"));
  createOk(tenant("globex"));
  std::string hex = sha256Hex("acme-declared-key");
  auto first = reg_->importKeyHash("acme", hex);
  ASSERT_TRUE(first) << first.status().toString();
  EXPECT_EQ(first->id, "cfg" + hex.substr(0, 8));
  EXPECT_EQ(reg_->resolve("acme-declared-key").outcome, Outcome::kOk);
  EXPECT_EQ(reg_->resolve("acme-declared-key").tenant->id, "acme");

  std::string upper = hex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto again = reg_->importKeyHash("acme", upper);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, first->id);
  EXPECT_EQ(again->created_at_ms, first->created_at_ms);
  EXPECT_EQ(reg_->listKeys("acme").size(), 1u);

  EXPECT_EQ(reg_->importKeyHash("globex", hex).status().code(), StatusCode::kConflict);
  EXPECT_EQ(reg_->importKeyHash("acme", "xyz").status().code(), StatusCode::kInvalid);
  EXPECT_EQ(reg_->importKeyHash("nobody", sha256Hex("k")).status().code(), StatusCode::kNotFound);

  // A revoked import stays revoked when the same hash is declared again.
  ASSERT_TRUE(reg_->revokeKey(first->id));
  auto third = reg_->importKeyHash("acme", hex);
  ASSERT_TRUE(third);
  EXPECT_TRUE(third->revoked_at_ms);
  EXPECT_EQ(reg_->resolve("acme-declared-key").outcome, Outcome::kRevokedKey);
}

TEST_P(TenantRegistryTest, EverythingSurvivesAReopen) {
  Quotas free = rate(10, 20);
  free.max_storage_bytes = 1 << 30;
  ASSERT_TRUE(reg_->definePlans({{"free", free}}));
  TenantRecord acme = tenant("acme", "free");
  acme.labels = {{"team", "payments"}};
  acme.plugins = {"trellis/hello"};
  acme.overrides.max_body_bytes = 2048;
  createOk(acme);
  createOk(tenant("globex"));
  ASSERT_TRUE(reg_->setStatus("globex", TenantStatus::kSuspended));
  NewKey live = keyFor("acme", 3600);
  NewKey revoked = keyFor("acme");
  ASSERT_TRUE(reg_->revokeKey(revoked.info.id));
  NewKey globex = keyFor("globex");
  auto records = reg_->list();
  auto plans = reg_->plans();
  auto keys = reg_->listKeys("acme");

  reopen();
  EXPECT_EQ(reg_->list(), records);
  ASSERT_EQ(reg_->plans().size(), plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    EXPECT_EQ(reg_->plans()[i].name, plans[i].name);
    EXPECT_EQ(reg_->plans()[i].quotas, plans[i].quotas);
  }
  auto reopened_keys = reg_->listKeys("acme");
  ASSERT_EQ(reopened_keys.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(reopened_keys[i].id, keys[i].id);
    EXPECT_EQ(reopened_keys[i].created_at_ms, keys[i].created_at_ms);
    EXPECT_EQ(reopened_keys[i].expires_at_ms, keys[i].expires_at_ms);
    EXPECT_EQ(reopened_keys[i].revoked_at_ms, keys[i].revoked_at_ms);
  }
  EXPECT_EQ(reg_->resolve(live.secret).outcome, Outcome::kOk);
  EXPECT_EQ(reg_->resolve(revoked.secret).outcome, Outcome::kRevokedKey);
  EXPECT_EQ(reg_->resolve(globex.secret).outcome, Outcome::kSuspended);
  EXPECT_EQ(reg_->view("acme")->quotas.max_body_bytes, 2048u);
  EXPECT_EQ(reg_->view("acme")->quotas.max_storage_bytes, uint64_t{1} << 30);
}

TEST_P(TenantRegistryTest, PluginConfigOverridesLiveWithTheEnabledPlugin) {
  TenantRecord acme = tenant("acme");
  acme.plugins = {"trellis/hello", "acme/other"};
  createOk(acme);
  createOk(tenant("globex"));

  ASSERT_TRUE(reg_->setPluginConfig("acme", "trellis/hello", R"({"greeting":"Bonjour"})"));
  EXPECT_EQ(reg_->view("acme")->plugin_config.at("trellis/hello"), R"({"greeting":"Bonjour"})");
  EXPECT_TRUE(reg_->view("globex")->plugin_config.empty());
  ASSERT_TRUE(reg_->setPluginConfig("acme", "acme/other", R"({"n":1})"));
  ASSERT_TRUE(reg_->setPluginConfig("acme", "trellis/hello", R"({"greeting":"Hola"})"));
  reopen();
  EXPECT_EQ(reg_->view("acme")->plugin_config.at("trellis/hello"), R"({"greeting":"Hola"})");

  // Only for an enabled plugin of an existing tenant, and within the size limit.
  Status s = reg_->setPluginConfig("globex", "trellis/hello", "{}");
  EXPECT_EQ(s.code(), StatusCode::kInvalid);
  EXPECT_NE(s.message().find("does not enable plugin \"trellis/hello\""), std::string::npos)
      << s.message();
  EXPECT_EQ(reg_->setPluginConfig("nobody", "trellis/hello", "{}").code(), StatusCode::kNotFound);
  std::string big =
      R"({"greeting":")" + std::string(TenantRegistry::kMaxPluginConfigBytes, 'x') + R"("})";
  EXPECT_EQ(reg_->setPluginConfig("acme", "trellis/hello", big).code(), StatusCode::kInvalid);
  EXPECT_EQ(reg_->view("acme")->plugin_config.at("trellis/hello"), R"({"greeting":"Hola"})");

  // Disabling the plugin drops its overrides; re-enabling it does not bring them back.
  TenantRecord changed = *reg_->get("acme");
  changed.plugins = {"acme/other"};
  ASSERT_TRUE(reg_->update(changed));
  EXPECT_EQ(reg_->view("acme")->plugin_config.count("trellis/hello"), 0u);
  EXPECT_EQ(reg_->view("acme")->plugin_config.count("acme/other"), 1u);
  changed.plugins = {"acme/other", "trellis/hello"};
  ASSERT_TRUE(reg_->update(changed));
  EXPECT_EQ(reg_->view("acme")->plugin_config.count("trellis/hello"), 0u);

  // Removing them, and the tenant with what is left.
  ASSERT_TRUE(reg_->setPluginConfig("acme", "acme/other", std::nullopt));
  EXPECT_TRUE(reg_->view("acme")->plugin_config.empty());
  ASSERT_TRUE(reg_->setPluginConfig("acme", "acme/other", R"({"n":2})"));
  ASSERT_TRUE(reg_->remove("acme"));
  createOk(acme);
  EXPECT_TRUE(reg_->view("acme")->plugin_config.empty());
}

TEST_P(TenantRegistryTest, ApplyDeclaredCreatesMissingTenantsAndReportsDrift) {
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10)}, {"pro", rate(100)}}));
  TenantRecord acme = tenant("acme", "free");
  acme.labels = {{"team", "payments"}};
  acme.plugins = {"trellis/hello"};
  TenantRecord globex = tenant("globex");

  auto first = reg_->applyDeclared({acme, globex});
  ASSERT_TRUE(first) << first.status().toString();
  EXPECT_TRUE(first->empty());
  EXPECT_EQ(reg_->get("acme")->source, "config");
  EXPECT_EQ(reg_->get("acme")->plan, "free");
  EXPECT_TRUE(reg_->view("acme")->hasPlugin("trellis/hello"));

  // Applying the same declaration again changes nothing and reports nothing.
  auto records = reg_->list();
  auto second = reg_->applyDeclared({acme, globex});
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->empty());
  EXPECT_EQ(reg_->list(), records);

  // Changes through the API win and show up as drift.
  TenantRecord changed = acme;
  changed.plan = "pro";
  changed.labels = {{"team", "core"}, {"cost", "42"}};
  changed.plugins = {"acme/billing"};
  changed.overrides.max_body_bytes = 100;
  ASSERT_TRUE(reg_->update(changed));
  createOk(tenant("initech"));  // through the API, then also declared

  auto drift = reg_->applyDeclared({acme, tenant("initech")});
  ASSERT_TRUE(drift) << drift.status().toString();
  std::vector<std::string> details;
  for (const auto& d : *drift) details.push_back(d.tenant + ": " + d.detail);
  auto has = [&](const std::string& s) {
    return std::find(details.begin(), details.end(), s) != details.end();
  };
  EXPECT_TRUE(has("acme: plan is \"pro\" in the registry but \"free\" in trellis.yaml"));
  EXPECT_TRUE(
      has("acme: label \"team\" is \"core\" in the registry but \"payments\" in "
          "trellis.yaml"));
  EXPECT_TRUE(has("acme: label \"cost\" is \"42\" in the registry but not in trellis.yaml"));
  EXPECT_TRUE(
      has("acme: plugin \"trellis/hello\" is enabled in trellis.yaml but not in the "
          "registry"));
  EXPECT_TRUE(
      has("acme: plugin \"acme/billing\" is enabled in the registry but not in "
          "trellis.yaml"));
  EXPECT_TRUE(
      has("acme: override max_body_bytes is 100 in the registry but unset in "
          "trellis.yaml"));
  EXPECT_TRUE(has("initech: created through the API, also declared in trellis.yaml"));
  EXPECT_TRUE(
      has("globex: declared in trellis.yaml earlier but no longer; kept in the registry "
          "until removed through the API"));
  EXPECT_EQ(details.size(), 8u) << ::testing::PrintToString(details);

  // The registry was not overwritten.
  EXPECT_EQ(reg_->get("acme")->plan, "pro");
  EXPECT_EQ(reg_->get("initech")->source, "api");
}

TEST_P(TenantRegistryTest, ApplyDeclaredRefusesBadDeclarationsAndChangesNothing) {
  auto dup = reg_->applyDeclared({tenant("acme"), tenant("acme")});
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalid);
  EXPECT_NE(dup.status().message().find("tenant \"acme\" is declared twice"), std::string::npos);
  auto bad_plan = reg_->applyDeclared({tenant("acme"), tenant("globex", "gold")});
  EXPECT_EQ(bad_plan.status().code(), StatusCode::kInvalid);
  EXPECT_NE(bad_plan.status().message().find("plan \"gold\" is not defined"), std::string::npos);
  EXPECT_TRUE(reg_->list().empty());  // "acme" was rolled back with the rest
}

TEST_P(TenantRegistryTest, ConcurrentResolveWhileMutating) {
  createOk(tenant("stable"));
  NewKey stable = keyFor("stable");
  createOk(tenant("flip"));
  NewKey flip = keyFor("flip");

  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<long> lookups{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        Resolution a = reg_->resolve(stable.secret);
        if (a.outcome != Outcome::kOk || a.tenant == nullptr || a.tenant->id != "stable") ++bad;
        Resolution b = reg_->resolve(flip.secret);
        if (b.outcome == Outcome::kOk || b.outcome == Outcome::kSuspended) {
          if (b.tenant == nullptr || b.tenant->id != "flip" ||
              (b.outcome == Outcome::kSuspended) !=
                  (b.tenant->status == TenantStatus::kSuspended)) {
            ++bad;
          }
        } else {
          ++bad;
        }
        if (reg_->resolve("garbage").outcome != Outcome::kUnknownKey) ++bad;
        auto v = reg_->view("stable");
        if (v == nullptr || v->id != "stable") ++bad;
        lookups += 4;
      }
    });
  }
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(
        reg_->setStatus("flip", i % 2 == 0 ? TenantStatus::kSuspended : TenantStatus::kActive));
    std::string id = "churn" + std::to_string(i);
    createOk(tenant(id));
    NewKey k = keyFor(id);
    ASSERT_TRUE(reg_->revokeKey(k.info.id));
    ASSERT_TRUE(reg_->remove(id));
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(lookups.load(), 0);
}

TEST_F(SqliteTenantRegistryTest, RefusesAPathItCannotUse) {
  EXPECT_FALSE(TenantRegistry::openSqlite(""));
  EXPECT_FALSE(TenantRegistry::openSqlite(dir_.path() / "a\"b.db"));
  test::writeFile(dir_.path() / "file", "x");
  auto r = TenantRegistry::openSqlite(dir_.path() / "file" / "system.db");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

TEST_F(SharedTenantRegistryTest, KeysAndTenantsCreatedOnOneHostResolveOnTheOther) {
  TenantRecord acme = tenant("acme");
  acme.plugins = {"trellis/hello"};
  createOk(acme);
  NewKey key = keyFor("acme");
  ASSERT_TRUE(eventually([&] { return other_->resolve(key.secret).outcome == Outcome::kOk; }));
  Resolution r = other_->resolve(key.secret);
  ASSERT_NE(r.tenant, nullptr);
  EXPECT_EQ(r.tenant->id, "acme");
  EXPECT_TRUE(r.tenant->hasPlugin("trellis/hello"));
  EXPECT_EQ(other_->get("acme")->plugins, acme.plugins);
  EXPECT_EQ(other_->listKeys("acme").size(), 1u);
}

TEST_F(SharedTenantRegistryTest, PluginConfigOverridesReachTheOtherHost) {
  TenantRecord acme = tenant("acme");
  acme.plugins = {"trellis/hello"};
  createOk(acme);
  ASSERT_TRUE(reg_->setPluginConfig("acme", "trellis/hello", R"({"greeting":"Hej"})"));
  EXPECT_TRUE(eventually([&] {
    auto v = other_->view("acme");
    return v && v->plugin_config.count("trellis/hello") == 1 &&
           v->plugin_config.at("trellis/hello") == R"({"greeting":"Hej"})";
  }));
}

TEST_F(SharedTenantRegistryTest, RevocationAndSuspensionReachTheOtherHost) {
  createOk(tenant("acme"));
  createOk(tenant("globex"));
  NewKey acme = keyFor("acme");
  NewKey globex = keyFor("globex");
  ASSERT_TRUE(eventually([&] { return other_->resolve(globex.secret).outcome == Outcome::kOk; }));

  // Changed on B, seen on A: propagation works both ways.
  ASSERT_TRUE(other_->revokeKey(acme.info.id));
  ASSERT_TRUE(other_->setStatus("globex", TenantStatus::kSuspended));
  EXPECT_EQ(other_->resolve(acme.secret).outcome, Outcome::kRevokedKey);  // at once on B
  EXPECT_TRUE(
      eventually([&] { return reg_->resolve(acme.secret).outcome == Outcome::kRevokedKey; }));
  EXPECT_TRUE(
      eventually([&] { return reg_->resolve(globex.secret).outcome == Outcome::kSuspended; }));

  ASSERT_TRUE(reg_->remove("acme"));
  EXPECT_TRUE(eventually([&] { return other_->view("acme") == nullptr; }));
  EXPECT_EQ(other_->resolve(acme.secret).outcome, Outcome::kUnknownKey);
}

TEST_F(SharedTenantRegistryTest, TwoHostsCreatingTheSameTenantGetOneSuccessAndOneConflict) {
  for (int round = 0; round < 10; ++round) {
    const std::string id = "race" + std::to_string(round);
    Result<TenantRecord> a = Status::internal("not run"), b = Status::internal("not run");
    std::thread ta([&] { a = reg_->create(tenant(id)); });
    std::thread tb([&] { b = other_->create(tenant(id)); });
    ta.join();
    tb.join();
    EXPECT_NE(static_cast<bool>(a), static_cast<bool>(b))
        << a.status().toString() << " / " << b.status().toString();
    const Status loser = a ? b.status() : a.status();
    EXPECT_EQ(loser.code(), StatusCode::kConflict) << loser.toString();
  }
  EXPECT_TRUE(eventually([&] { return other_->list().size() == 10 && reg_->list().size() == 10; }));
}

TEST_F(SharedTenantRegistryTest, AHostThatStartsLaterSeesEverything) {
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10, 20)}}));
  createOk(tenant("acme", "free"));
  NewKey key = keyFor("acme");
  auto late = open();
  ASSERT_TRUE(late) << late.status().toString();
  EXPECT_EQ((*late)->resolve(key.secret).outcome, Outcome::kOk);
  EXPECT_EQ((*late)->view("acme")->quotas.requests_per_second, 10u);
  EXPECT_EQ((*late)->plans().size(), 2u);
}

// ---- applyState (trellis config apply) ------------------------------------------------

DesiredTenant desired(std::string id, std::string plan = "default") {
  DesiredTenant d;
  d.record.id = std::move(id);
  d.record.plan = std::move(plan);
  return d;
}

std::vector<std::string> describe(const StatePlan& plan) {
  std::vector<std::string> out;
  for (const auto& c : plan.changes) out.push_back(c.action + " " + c.object);
  return out;
}

TEST_P(TenantRegistryTest, ApplyStateDryRunsThenAppliesEverythingAtOnce) {
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10)}}));
  TenantRecord old = tenant("old", "free");
  old.labels = {{"team", "a"}};
  createOk(old);
  const NewKey api_key = keyFor("old");
  createOk(tenant("stray"));

  const std::string acme_key = sha256Hex("acme-key");
  DesiredState state;
  state.plans = std::vector<Plan>{{"free", rate(20)}, {"pro", rate(100)}};
  DesiredTenant acme = desired("acme", "pro");
  acme.record.plugins = {"trellis/hello"};
  acme.key_hashes = {acme_key};
  acme.plugin_config = {{"trellis/hello", R"({"greeting":"Hi"})"}};
  DesiredTenant old_wanted = desired("old", "free");
  old_wanted.record.labels = {{"team", "b"}};
  state.tenants = {acme, old_wanted};

  auto planned = reg_->applyState(state, /*dry_run=*/true);
  ASSERT_TRUE(planned) << planned.status().toString();
  EXPECT_EQ(describe(*planned),
            (std::vector<std::string>{
                "create tenant \"acme\"",
                "import key key \"cfg" + acme_key.substr(0, 8) + "\" of tenant \"acme\"",
                "set config plugin \"trellis/hello\" of tenant \"acme\"", "update tenant \"old\"",
                "update plan \"free\"", "create plan \"pro\""}));
  ASSERT_EQ(planned->changes[3].details.size(), 1u);
  EXPECT_EQ(planned->changes[3].details[0],
            "label \"team\" is \"a\" in the registry but \"b\" in the file");
  // Drift: a tenant the file does not declare, and a declared tenant's key it does not list.
  ASSERT_EQ(planned->drift.size(), 2u);
  EXPECT_EQ(planned->drift[0].tenant, "old");
  EXPECT_NE(planned->drift[0].detail.find(api_key.info.id), std::string::npos);
  EXPECT_EQ(planned->drift[1].tenant, "stray");

  // The dry run changed nothing.
  EXPECT_FALSE(reg_->get("acme"));
  EXPECT_EQ(reg_->get("old")->labels.at("team"), "a");
  EXPECT_EQ(reg_->plans().size(), 2u);
  reopen();
  EXPECT_FALSE(reg_->get("acme"));

  auto applied = reg_->applyState(state, /*dry_run=*/false);
  ASSERT_TRUE(applied) << applied.status().toString();
  EXPECT_EQ(describe(*applied), describe(*planned));
  reopen();  // durable, not only in the snapshot
  EXPECT_EQ(reg_->get("acme")->plan, "pro");
  EXPECT_EQ(reg_->view("acme")->plugin_config.at("trellis/hello"), R"({"greeting":"Hi"})");
  EXPECT_EQ(reg_->get("old")->labels.at("team"), "b");
  EXPECT_EQ(reg_->view("old")->quotas.requests_per_second, 20u);
  EXPECT_EQ(reg_->resolve(api_key.secret).outcome, Outcome::kOk);  // drift is left alone
  EXPECT_TRUE(reg_->get("stray"));

  // Applying the same state again changes nothing; dropping the overrides removes them.
  auto again = reg_->applyState(state, false);
  ASSERT_TRUE(again) << again.status().toString();
  EXPECT_TRUE(again->changes.empty()) << describe(*again).front();
  state.tenants[0].plugin_config.clear();
  auto dropped = reg_->applyState(state, false);
  ASSERT_TRUE(dropped);
  EXPECT_EQ(describe(*dropped),
            std::vector<std::string>{"remove config plugin \"trellis/hello\" of tenant \"acme\""});
  EXPECT_TRUE(reg_->view("acme")->plugin_config.empty());
}

TEST_P(TenantRegistryTest, ApplyStateChangesNothingWhenOnePartIsRefused) {
  ASSERT_TRUE(reg_->definePlans({{"free", rate(10)}}));
  createOk(tenant("legacy", "free"));
  createOk(tenant("globex"));
  const std::string globex_key = sha256Hex("globex-key");
  ASSERT_TRUE(reg_->importKeyHash("globex", globex_key));
  auto before = reg_->list();

  // Ten changes, the ninth refused: nothing of the other nine is left behind.
  auto tenChanges = [&] {
    DesiredState state;
    state.plans = std::vector<Plan>{{"free", rate(5)}, {"pro", rate(50)}};
    for (int i = 1; i <= 8; ++i) {
      DesiredTenant t = desired("t" + std::to_string(i), i % 2 ? "pro" : "free");
      t.record.plugins = {"trellis/hello"};
      state.tenants.push_back(t);
    }
    state.tenants.push_back(desired("t9", "pro"));
    state.tenants.push_back(desired("t10"));
    return state;
  };
  struct Case {
    const char* what;
    std::function<void(DesiredTenant&)> ninth;
    StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {"unknown plan", [](DesiredTenant& t) { t.record.plan = "gold"; }, StatusCode::kInvalid,
       "tenant \"t9\": plan \"gold\" is not defined"},
      {"another tenant's key", [&](DesiredTenant& t) { t.key_hashes = {globex_key}; },
       StatusCode::kConflict, "tenant \"t9\": key hash is already registered"},
      {"overrides of a plugin it does not enable",
       [](DesiredTenant& t) {
         t.plugin_config = {{"trellis/hello", "{}"}};
       },
       StatusCode::kInvalid,
       "tenant \"t9\" configures plugin \"trellis/hello\" but does not enable it"},
      {"quotas that break the plan", [](DesiredTenant& t) { t.record.overrides.burst = 1; },
       StatusCode::kInvalid, "burst (1) must be at least requests_per_second (50)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    DesiredState state = tenChanges();
    c.ninth(state.tenants[8]);
    for (bool dry_run : {true, false}) {
      auto r = reg_->applyState(state, dry_run);
      ASSERT_FALSE(r);
      EXPECT_EQ(r.status().code(), c.code);
      EXPECT_NE(r.status().message().find(c.message), std::string::npos) << r.status().message();
    }
    EXPECT_EQ(reg_->list(), before);
    EXPECT_EQ(reg_->plans().size(), 2u);
    EXPECT_EQ(reg_->view("legacy")->quotas.requests_per_second, 10u);
  }

  // A plan the file drops while a tenant it does not declare is still on it.
  DesiredState state = tenChanges();
  state.plans = std::vector<Plan>{{"pro", rate(50)}};
  state.tenants.resize(8);
  for (auto& t : state.tenants) t.record.plan = "pro";
  auto r = reg_->applyState(state, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kConflict);
  EXPECT_NE(r.status().message().find("plan \"free\" is not in the file but tenant \"legacy\""),
            std::string::npos)
      << r.status().message();
  EXPECT_EQ(reg_->list(), before);

  // Declaring it there too moves it off the plan, and then the plan can go.
  state.tenants.push_back(desired("legacy", "pro"));
  auto applied = reg_->applyState(state, false);
  ASSERT_TRUE(applied) << applied.status().toString();
  EXPECT_EQ(reg_->plans().size(), 2u);  // pro and default
  EXPECT_EQ(reg_->get("legacy")->plan, "pro");
  EXPECT_EQ(reg_->list().size(), before.size() + 8);
}

}  // namespace
}  // namespace trellis::tenants
