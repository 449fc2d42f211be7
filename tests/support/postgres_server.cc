#include "support/postgres_server.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>

namespace trellis::test {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr int kPortAttempts = 5;
constexpr size_t kLogTailChars = 4000;

bool isExecutable(const fs::path& p) {
  return ::access(p.c_str(), X_OK) == 0;
}

bool hasServerBinaries(const fs::path& dir) {
  return isExecutable(dir / "initdb") && isExecutable(dir / "postgres");
}

// Waits for `pid` to exit; its wait status, or nothing on timeout.
std::optional<int> waitExit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;  // not our child any more: nothing left to wait for
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

std::string describeStatus(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// libpq keyword/value syntax: quote values that are empty or hold spaces, quotes or '\'.
std::string conninfoValue(const std::string& v) {
  if (!v.empty() && v.find_first_of(" '\\") == std::string::npos) return v;
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string quoteIdent(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string quoteLiteral(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

}  // namespace

PostgresServer::PostgresServer(fs::path bin_dir)
    : bin_dir_(bin_dir.empty() ? findBinDir() : std::move(bin_dir)) {}

PostgresServer::~PostgresServer() {
  stop();
}

fs::path PostgresServer::findBinDir() {
  // Debian: /usr/lib/postgresql/<major>/bin, several majors may sit side by side.
  fs::path best;
  int best_major = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    int major = std::atoi(name.c_str());
    if (major > best_major && hasServerBinaries(entry.path() / "bin")) {
      best_major = major;
      best = entry.path() / "bin";
    }
  }
  if (best.empty() && hasServerBinaries("/usr/local/pgsql/bin")) best = "/usr/local/pgsql/bin";
  return best;
}

std::string PostgresServer::connectionString(const std::string& db, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + conninfoValue(db) +
         " user=" + conninfoValue(user);
}

bool PostgresServer::running() const {
  if (pid_ <= 0) return false;
  // WNOWAIT: look without reaping, so stop() still collects the exit status.
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == 0;
}

std::string PostgresServer::log() const {
  return readFile(dir_ / "initdb.log") + readFile(dir_ / "postgres.log");
}

std::string PostgresServer::logTail(const fs::path& file, size_t from) const {
  std::string text = readFile(file);
  text = from < text.size() ? text.substr(from) : std::string();
  if (text.size() > kLogTailChars) text = "..." + text.substr(text.size() - kLogTailChars);
  return text;
}

pid_t PostgresServer::spawn(const std::vector<std::string>& argv, const fs::path& log_file) const {
  // Everything the child needs is prepared here: after fork() in a threaded process only
  // async-signal-safe calls are allowed.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // A clean environment: no PG* variables or sanitizer settings leak into the server.
  static const char* const kEnv[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", nullptr};
  const std::string cwd = dir_.path().string();
  int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return -1;
  const pid_t parent = ::getpid();
  const bool drop = as_postgres_user_;
  const uid_t uid = uid_;
  const gid_t gid = gid_;

  pid_t pid = ::fork();
  if (pid == 0) {
    auto fail = [](const char* msg) {
      ssize_t n = ::write(STDERR_FILENO, msg, std::strlen(msg));
      (void)n;
      ::_exit(127);
    };
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(log_fd, STDOUT_FILENO) < 0 ||
        ::dup2(log_fd, STDERR_FILENO) < 0) {
      ::_exit(127);
    }
    // Sockets and files of the test must not stay open for the server's whole life.
    ::close_range(3, ~0U, 0);
    if (drop && (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) {
      fail("postgres_server: cannot switch to the postgres user\n");
    }
    // initdb resolves the current directory, which must be readable by that user.
    if (::chdir(cwd.c_str()) != 0) fail("postgres_server: cannot chdir to the temp dir\n");
    // Set after setuid (which clears it): a crashed test must not leave a server behind.
    ::prctl(PR_SET_PDEATHSIG, SIGINT);
    if (::getppid() != parent) ::_exit(1);
    ::execve(args[0], args.data(), const_cast<char* const*>(kEnv));
    fail("postgres_server: exec failed\n");
  }
  ::close(log_fd);
  return pid;
}

bool PostgresServer::initCluster() {
  if (::geteuid() == 0) {
    // initdb and postgres refuse to run as root; Debian's package creates this user.
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwnam_r("postgres", &pw, buf.data(), buf.size(), &found) != 0 || !found) {
      error_ = "running as root needs the 'postgres' system user; run scripts/deps.sh --postgres";
      return false;
    }
    as_postgres_user_ = true;
    uid_ = pw.pw_uid;
    gid_ = pw.pw_gid;
    if (::chown(dir_.path().c_str(), uid_, gid_) != 0) {
      error_ = "cannot chown " + dir_.path().string() + " to postgres";
      return false;
    }
  }
  fs::permissions(dir_.path(), fs::perms::owner_all, fs::perm_options::replace);

  const fs::path data = dir_ / "data";
  const fs::path log_file = dir_ / "initdb.log";
  pid_t pid = spawn({(bin_dir_ / "initdb").string(), "-D", data.string(), "-U", kSuperuser,
                     "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"},
                    log_file);
  if (pid < 0) {
    error_ = "cannot start initdb";
    return false;
  }
  std::optional<int> status = waitExit(pid, 120s);
  if (!status) {
    ::kill(pid, SIGKILL);
    waitExit(pid, 5s);
  }
  if (!status || *status != 0) {
    error_ = "initdb failed (" + (status ? describeStatus(*status) : std::string("timeout")) +
             "):\n" + logTail(log_file);
    return false;
  }

  // Trust, but only for the private unix socket and IPv4 loopback (after the test's own
  // rules, which may ask for passwords).
  writeFile(data / "pg_hba.conf",
            "local all all trust\n" + hba_rules_ + "host  all all 127.0.0.1/32 trust\n");
  // Appended settings win over initdb's defaults. Durability is pointless for a test
  // cluster that is deleted afterwards, and fsync dominates its run time.
  std::string conf = readFile(data / "postgresql.conf");
  conf +=
      "\n# Trellis test server (tests/support/postgres_server.cc)\n"
      "listen_addresses = '127.0.0.1'\n"
      "unix_socket_directories = " +
      quoteLiteral(dir_.path().string()) +
      "\n"
      "max_connections = 50\n"
      "shared_buffers = 16MB\n"
      "fsync = off\n"
      "synchronous_commit = off\n"
      "full_page_writes = off\n"
      "wal_level = minimal\n"
      "max_wal_senders = 0\n"
      "logging_collector = off\n";
  if (!ssl_cert_.empty()) {
    for (const auto& [from, to] :
         {std::pair{ssl_cert_, data / "server.crt"}, std::pair{ssl_key_, data / "server.key"}}) {
      std::error_code ec;
      fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
      if (ec || ::chmod(to.c_str(), 0600) != 0 ||
          (as_postgres_user_ && ::chown(to.c_str(), uid_, gid_) != 0)) {
        error_ = "cannot copy " + from.string() + " into the cluster";
        return false;
      }
    }
    conf += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
  }
  writeFile(data / "postgresql.conf", conf);
  initialized_ = true;
  return true;
}

bool PostgresServer::launch(uint16_t port, std::chrono::milliseconds timeout, bool& bind_failed) {
  bind_failed = false;
  const fs::path log_file = dir_ / "postgres.log";
  std::error_code ec;
  const auto size = fs::file_size(log_file, ec);
  const size_t log_start = ec ? 0 : static_cast<size_t>(size);
  pid_ = spawn({(bin_dir_ / "postgres").string(), "-D", (dir_ / "data").string(), "-p",
                std::to_string(port)},
               log_file);
  if (pid_ < 0) {
    error_ = "cannot start postgres";
    return false;
  }
  port_ = port;
  const std::string ping = connectionString() + " connect_timeout=2";
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::string tail = logTail(log_file, log_start);
      bind_failed = tail.find("could not bind") != std::string::npos ||
                    tail.find("Address already in use") != std::string::npos;
      error_ = "postgres exited during start-up (" + describeStatus(status) + "):\n" + tail;
      return false;
    }
    // PQPING_REJECT means "starting up": only OK proves that sessions can be opened.
    if (::PQping(ping.c_str()) == PQPING_OK) return true;
    std::this_thread::sleep_for(25ms);
  }
  error_ = "postgres did not accept connections within " + std::to_string(timeout.count()) +
           " ms:\n" + logTail(log_file, log_start);
  stop();
  return false;
}

bool PostgresServer::start(std::chrono::milliseconds timeout) {
  if (running()) return true;
  stop();  // reaps a server that died on its own
  error_.clear();
  if (bin_dir_.empty() || !hasServerBinaries(bin_dir_)) {
    error_ = "PostgreSQL server binaries not found" +
             (bin_dir_.empty() ? std::string() : " in " + bin_dir_.string()) +
             "; run scripts/deps.sh --postgres";
    return false;
  }
  auto deadline = Clock::now() + timeout;
  if (!initialized_ && !initCluster()) return false;
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    // A restart tries to keep its port so that connection strings stay valid.
    uint16_t port = attempt == 0 && port_ != 0 ? port_ : freeLoopbackPort();
    if (port == 0) {
      error_ = "no free loopback port";
      return false;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    bool bind_failed = false;
    if (launch(port, std::max(left, std::chrono::milliseconds(1000)), bind_failed)) return true;
    if (!bind_failed) return false;
  }
  return false;
}

bool PostgresServer::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return true;
  const pid_t pid = pid_;
  pid_ = -1;
  ::kill(pid, SIGINT);
  if (waitExit(pid, timeout)) return true;
  ::kill(pid, SIGQUIT);
  if (!waitExit(pid, 5s)) {
    ::kill(pid, SIGKILL);
    waitExit(pid, 5s);
  }
  return false;
}

SqlResult PostgresServer::execSql(const std::string& sql, const std::string& db) const {
  SqlResult out;
  std::unique_ptr<PGconn, decltype(&::PQfinish)> conn(::PQconnectdb(connectionString(db).c_str()),
                                                      &::PQfinish);
  if (::PQstatus(conn.get()) != CONNECTION_OK) {
    out.error = ::PQerrorMessage(conn.get());
    return out;
  }
  std::unique_ptr<PGresult, decltype(&::PQclear)> res(::PQexec(conn.get(), sql.c_str()),
                                                      &::PQclear);
  const ExecStatusType st = ::PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    out.error = res ? ::PQresultErrorMessage(res.get()) : ::PQerrorMessage(conn.get());
    return out;
  }
  for (int r = 0; r < ::PQntuples(res.get()); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < ::PQnfields(res.get()); ++c)
      row.emplace_back(::PQgetvalue(res.get(), r, c));
    out.rows.push_back(std::move(row));
  }
  out.ok = true;
  return out;
}

SqlResult PostgresServer::createDatabase(const std::string& name, const std::string& owner) const {
  std::string sql = "CREATE DATABASE " + quoteIdent(name);
  if (!owner.empty()) sql += " OWNER " + quoteIdent(owner);
  return execSql(sql);
}

}  // namespace trellis::test
