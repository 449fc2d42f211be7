// A throwaway PostgreSQL server for integration tests: `initdb` into a fresh temp dir, a
// `postgres` child listening only on 127.0.0.1 (a free port) and on a unix socket in that
// dir, trust auth on loopback, fsync off. Each instance is independent, so parallel test
// processes never share a cluster. As root (CI), initdb and postgres run as the `postgres`
// system user, since both refuse to run as root.
//
//   PostgresServer pg;
//   ASSERT_TRUE(pg.start()) << pg.error();
//   ASSERT_TRUE(pg.createDatabase("trellis"));
//   SqlResult r = pg.execSql("CREATE ROLE app LOGIN", "trellis");
//   ASSERT_TRUE(r) << r.error;
//   soci::session s(*soci::factory_postgresql(), pg.connectionString("trellis", "app"));
//
// Start the server from a thread that outlives it (normally the test's main thread): the
// child gets SIGINT when that thread exits, which is what stops it if the test crashes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {

// Outcome of execSql: rows of the last statement's result (NULL reads as "").
struct SqlResult {
  bool ok = false;
  std::string error;
  std::vector<std::vector<std::string>> rows;
  explicit operator bool() const { return ok; }
};

class PostgresServer {
 public:
  static constexpr const char* kSuperuser = "postgres";

  // `bin_dir` holds initdb and postgres; empty = the highest /usr/lib/postgresql/<major>/bin.
  explicit PostgresServer(std::filesystem::path bin_dir = {});
  ~PostgresServer();  // stops the server; the temp dir goes with it
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // Before the first start(): serve TLS (ssl = on) with this PEM certificate and key, copied
  // into the cluster (the server wants its key private to it). Plain connections still work.
  void enableSsl(std::filesystem::path cert, std::filesystem::path key) {
    ssl_cert_ = std::move(cert);
    ssl_key_ = std::move(key);
  }

  // Before the first start(): pg_hba.conf lines checked before the trust rules, for tests of
  // password authentication, e.g. "host all postgres 127.0.0.1/32 trust\n"
  // "host all all 127.0.0.1/32 scram-sha-256\n" (keep the superuser trusted: execSql needs it).
  void setHostAuthRules(std::string lines) { hba_rules_ = std::move(lines); }

  // Runs initdb on first use, then starts postgres and waits until it accepts connections.
  // A restart after stop() keeps the data and, if still free, the port. On failure returns
  // false and error() explains, with the tail of the server log.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Fast shutdown (SIGINT: abort transactions, disconnect, checkpoint) and wait; escalates
  // to SIGQUIT, then SIGKILL. False if it had to escalate.
  bool stop(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  bool running() const;

  uint16_t port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  const std::string& error() const { return error_; }
  std::string log() const;  // initdb output, then the server's stderr

  // libpq keyword/value form over TCP loopback, e.g. "host=127.0.0.1 port=N dbname=d user=u".
  std::string connectionString(const std::string& db = "postgres",
                               const std::string& user = kSuperuser) const;

  // As the superuser. One string may hold several statements (one implicit transaction).
  SqlResult execSql(const std::string& sql, const std::string& db = "postgres") const;
  SqlResult createDatabase(const std::string& name, const std::string& owner = "") const;

  // The directory with initdb/postgres, or empty if none is installed.
  static std::filesystem::path findBinDir();

 private:
  bool initCluster();
  // Spawns postgres on `port`; false with error_ set if it exits or does not become ready.
  // `bind_failed` tells the caller that another process took the port in the meantime.
  bool launch(uint16_t port, std::chrono::milliseconds timeout, bool& bind_failed);
  pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log_file) const;
  std::string logTail(const std::filesystem::path& file, size_t from = 0) const;

  TempDir dir_;  // first member: removed only after the server has stopped
  std::filesystem::path bin_dir_;
  bool as_postgres_user_ = false;  // root: children drop to the `postgres` user
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool initialized_ = false;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string error_;
  std::filesystem::path ssl_cert_, ssl_key_;
  std::string hba_rules_;
};

}  // namespace trellis::test
