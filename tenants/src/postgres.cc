// PostgreSQL URL parsing, the session pool and tenant transactions (postgres.h). The
// schema and its migrations live in postgres_schema.cc.
#include "trellis/tenants/postgres.h"

#include <libpq-fe.h>
#include <soci/postgresql/soci-postgresql.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <utility>

namespace trellis::tenants {
namespace {

constexpr std::string_view kShape = "expected postgresql://user:password@host:port/database";
constexpr int kDefaultConnectTimeoutSeconds = 5;
constexpr int kMaxTransactionAttempts = 5;

Status urlError(const std::string& problem) {
  return Status::invalid(std::string(kShape) + ": " + problem);
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `in`; false for a malformed escape.
bool percentDecode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = hexValue(in[i + 1]);
    int lo = hexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

bool hasControlChars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

bool isHostName(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

bool isIpv6(std::string_view h) {
  if (h.empty()) return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
  });
}

// libpq keyword/value syntax: single-quoted, with ' and \ escaped.
std::string conninfoValue(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// static_cast after checking the name: Debian's libsoci exports no type info for
// dynamic_cast to use.
PGconn* rawConnection(soci::session& sql) {
  soci::details::session_backend* backend = sql.get_backend();
  if (backend == nullptr || backend->get_backend_name() != "postgresql") return nullptr;
  return static_cast<soci::postgresql_session_backend*>(backend)->conn_;
}

}  // namespace

// ---- URL --------------------------------------------------------------------------------

Result<PostgresUrl> parsePostgresUrl(std::string_view url) {
  std::string_view rest;
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (url.substr(0, scheme.size()) == scheme) rest = url.substr(scheme.size());
  }
  if (rest.data() == nullptr) return urlError("the scheme must be postgresql:// or postgres://");
  PostgresUrl out;

  // The authority ends at the first '/', '?' or '#'; the userinfo at its last '@' (a
  // password may contain '@' only percent-encoded, but be lenient about where we cut).
  size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  std::string_view tail = authority_end == std::string_view::npos ? "" : rest.substr(authority_end);
  size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return urlError("the user name is missing (user@host)");
  std::string_view userinfo = authority.substr(0, at);
  std::string_view hostport = authority.substr(at + 1);

  size_t colon = userinfo.find(':');
  std::string_view user = userinfo.substr(0, colon);
  if (!percentDecode(user, out.user)) return urlError("the user name has a bad %-escape");
  if (out.user.empty()) return urlError("the user name is empty");
  if (colon != std::string_view::npos && !percentDecode(userinfo.substr(colon + 1), out.password)) {
    return urlError("the password has a bad %-escape");  // never echo the password
  }
  if (hasControlChars(out.user) || out.password.find('\0') != std::string::npos) {
    return urlError("the user name or password contains control characters");
  }

  std::string_view port;
  bool has_port = false;
  if (!hostport.empty() && hostport[0] == '[') {
    size_t close = hostport.find(']');
    if (close == std::string_view::npos) return urlError("the IPv6 host has no closing ']'");
    out.host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty() && after[0] != ':') return urlError("unexpected text after the IPv6 host");
    has_port = !after.empty();
    if (has_port) port = after.substr(1);
    if (!isIpv6(out.host)) return urlError("\"" + out.host + "\" is not an IPv6 address");
  } else {
    size_t pc = hostport.rfind(':');
    out.host = std::string(hostport.substr(0, pc));
    has_port = pc != std::string_view::npos;
    if (has_port) port = hostport.substr(pc + 1);
    if (out.host.empty()) return urlError("the host is missing");
    if (!isHostName(out.host)) {
      return urlError("the host \"" + out.host + "\" is not a host name or address");
    }
  }
  if (has_port) {
    bool digits =
        !port.empty() && port.size() <= 5 &&
        std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    unsigned long value = digits ? std::stoul(std::string(port)) : 0;
    if (!digits || value < 1 || value > 65535) {
      return urlError("the port \"" + std::string(port) + "\" is not a number from 1 to 65535");
    }
    out.port = static_cast<uint16_t>(value);
  }

  if (tail.empty() || tail[0] != '/') return urlError("the database name is missing (/database)");
  size_t query_at = tail.find_first_of("?#");
  if (!percentDecode(tail.substr(1, query_at == std::string_view::npos ? tail.npos : query_at - 1),
                     out.database)) {
    return urlError("the database name has a bad %-escape");
  }
  if (out.database.empty()) return urlError("the database name is missing (/database)");
  if (hasControlChars(out.database) || out.database.find('/') != std::string::npos) {
    return urlError("the database name must not contain '/' or control characters");
  }
  if (query_at != std::string_view::npos && tail[query_at] == '#') {
    return urlError("a #fragment is not allowed");
  }

  static const std::set<std::string> kAllowed = {
      "sslmode",         "sslrootcert",     "sslcert", "sslkey", "ssl_min_protocol_version",
      "connect_timeout", "application_name"};
  if (query_at != std::string_view::npos) {
    std::string_view query = tail.substr(query_at + 1);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (pair.empty()) continue;
      size_t eq = pair.find('=');
      std::string key, value;
      if (eq == std::string_view::npos || !percentDecode(pair.substr(0, eq), key) ||
          !percentDecode(pair.substr(eq + 1), value)) {
        return urlError("query parameters must be name=value");
      }
      if (kAllowed.count(key) == 0) {
        return urlError("the parameter \"" + scrubbed(key, out.password) +
                        "\" is not supported (allowed: sslmode, sslrootcert, sslcert, sslkey, "
                        "ssl_min_protocol_version, connect_timeout, application_name)");
      }
      if (hasControlChars(value)) return urlError("parameter " + key + " has control characters");
      if (!out.params.emplace(key, value).second) {
        return urlError("the parameter " + key + " is given twice");
      }
    }
  }
  if (auto t = out.params.find("connect_timeout"); t != out.params.end()) {
    const std::string& v = t->second;
    bool digits = !v.empty() && v.size() <= 4 &&
                  std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoi(v) < 1) {
      return urlError("connect_timeout must be a whole number of seconds from 1 to 9999");
    }
  }
  // The kernel's TLS client policy (kernel/tls/policy.h): nothing older than TLS 1.2.
  if (auto v = out.params.find("ssl_min_protocol_version"); v != out.params.end()) {
    if (v->second != "TLSv1.2" && v->second != "TLSv1.3") {
      return urlError("ssl_min_protocol_version must be TLSv1.2 or TLSv1.3, not \"" +
                      scrubbed(v->second, out.password) + "\"");
    }
  }
  return out;
}

std::string PostgresUrl::endpoint() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string PostgresUrl::redacted() const {
  std::string out =
      "postgresql://" + user + (password.empty() ? "" : ":***") + "@" + endpoint() + "/" + database;
  char sep = '?';
  for (const auto& [k, v] : params) {
    out += sep + k + "=" + v;
    sep = '&';
  }
  return out;
}

std::string PostgresUrl::conninfo() const {
  std::string out = "host=" + conninfoValue(host) + " port=" + std::to_string(port) +
                    " dbname=" + conninfoValue(database) + " user=" + conninfoValue(user);
  if (!password.empty()) out += " password=" + conninfoValue(password);
  if (params.count("connect_timeout") == 0) {
    out += " connect_timeout=" + std::to_string(kDefaultConnectTimeoutSeconds);
  }
  if (params.count("application_name") == 0) out += " application_name=trellisd";
  // libpq makes its own TLS context; this is how it gets the kernel's floor of TLS 1.2
  // whatever its build's default. Certificates: sslmode=verify-full and sslrootcert.
  if (params.count("ssl_min_protocol_version") == 0) out += " ssl_min_protocol_version=TLSv1.2";
  for (const auto& [k, v] : params) out += " " + k + "=" + conninfoValue(v);
  // A server that vanishes without closing the connection (host down, network split)
  // must fail calls within seconds, not after TCP's retransmissions give up (~15 min).
  out += " keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3";
  out += " tcp_user_timeout=15000";
  // Every Trellis table is in schema trellis; pinning search_path also keeps objects
  // other roles create in public from shadowing ours. Our transactions never wait on
  // anything outside the database, so one left idle for a minute belongs to a host that
  // froze mid-call: the server ends it and releases the row locks it holds.
  out += " options=" +
         conninfoValue("-c search_path=trellis -c idle_in_transaction_session_timeout=60000");
  return out;
}

std::string scrubbed(std::string text, const std::string& secret) {
  if (!secret.empty()) {
    for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
      text.replace(at, secret.size(), "***");
    }
  }
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
    if (space) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// ---- sessions ---------------------------------------------------------------------------

bool isHealthyPostgresSession(soci::session& sql) {
  PGconn* conn = rawConnection(sql);
  return conn != nullptr && PQstatus(conn) == CONNECTION_OK &&
         PQtransactionStatus(conn) == PQTRANS_IDLE;
}

void connectPostgres(soci::session& sql, const PostgresUrl& url) {
  sql.open(soci::postgresql, url.conninfo());
}

// ---- pool -------------------------------------------------------------------------------

PostgresPool::PostgresPool(PostgresUrl url, Options options)
    : url_(std::move(url)), options_(options), slots_(options.size), busy_(options.size, false) {}

PostgresPool::~PostgresPool() = default;

Result<std::shared_ptr<PostgresPool>> PostgresPool::open(const PostgresUrl& url, Options options) {
  if (options.size == 0) return Status::invalid("the PostgreSQL pool needs at least 1 session");
  std::shared_ptr<PostgresPool> pool(new PostgresPool(url, options));
  auto first = pool->acquire();
  if (!first) return first.status();
  return pool;
}

Status PostgresPool::unavailable(const std::string& what, const std::exception& e) const {
  return Status::unavailable(what + " failed: PostgreSQL at " + url_.endpoint() + ": " +
                             scrubbed(e.what(), url_.password));
}

Result<PostgresPool::Lease> PostgresPool::acquire() {
  size_t slot = 0;
  {
    std::unique_lock lock(mu_);
    auto free_slot = [&] { return std::find(busy_.begin(), busy_.end(), false) != busy_.end(); };
    if (!freed_.wait_for(lock, options_.acquire_timeout, free_slot)) {
      return Status::unavailable(
          "all " + std::to_string(slots_.size()) + " PostgreSQL sessions to " + url_.endpoint() +
          " stayed busy for " + std::to_string(options_.acquire_timeout.count()) + " ms");
    }
    slot = static_cast<size_t>(std::find(busy_.begin(), busy_.end(), false) - busy_.begin());
    busy_[slot] = true;
  }
  // The slot is ours alone now: (re)connecting happens outside the lock.
  auto& session = slots_[slot];
  if (!session || !isHealthyPostgresSession(*session)) {
    try {
      session.reset();
      auto fresh = std::make_unique<soci::session>();
      connectPostgres(*fresh, url_);
      session = std::move(fresh);
    } catch (const std::exception& e) {
      release(slot, false);
      return Status::unavailable("cannot connect to PostgreSQL at " + url_.endpoint() +
                                 " (database " + url_.database + ", user " + url_.user +
                                 "): " + scrubbed(e.what(), url_.password));
    }
  }
  return Lease(this, slot, session.get());
}

void PostgresPool::release(size_t slot, bool keep) {
  // A session left broken or inside a transaction (a failed ROLLBACK) is not reused.
  if (!keep || !slots_[slot] || !isHealthyPostgresSession(*slots_[slot])) slots_[slot].reset();
  {
    std::lock_guard lock(mu_);
    busy_[slot] = false;
  }
  freed_.notify_one();
}

Status PostgresPool::transaction(const std::string& what, const std::string& tenant,
                                 const std::function<Status(soci::session&)>& body) {
  bool stale_replaced = false;
  for (int attempt = 1;; ++attempt) {
    auto lease = acquire();
    if (!lease) return Status::unavailable(what + " failed: " + lease.status().message());
    soci::session& sql = lease->session();
    std::optional<sql::WriteTransaction> tx;
    try {
      tx.emplace(sql, "BEGIN");
      // Local to the transaction (true): it ends with COMMIT or ROLLBACK, so the session
      // never carries this tenant to its next user.
      if (!tenant.empty()) {
        sql::Query(sql, "SELECT set_config('trellis.tenant', :t, true)").use(tenant).run();
      }
    } catch (const std::exception& e) {
      // Nothing ran yet, so trying again on a fresh session is safe; the lease drops the
      // dead one when it goes out of scope.
      if (!stale_replaced && !isHealthyPostgresSession(sql)) {
        stale_replaced = true;
        continue;
      }
      return unavailable(what, e);
    }
    try {
      if (Status s = body(sql); !s) return s;  // `tx` rolls back
      tx->commit();
      return Status::ok();
    } catch (const soci::postgresql_soci_error& e) {
      const std::string state = e.sqlstate();
      const bool retryable = state == "40001" || state == "40P01" || state == "23505";
      if (retryable && attempt < kMaxTransactionAttempts) continue;
      return unavailable(what, e);
    } catch (const std::exception& e) {
      return unavailable(what, e);
    }
  }
}

PostgresPool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), slot_(other.slot_), session_(other.session_) {}

PostgresPool::Lease::~Lease() {
  if (pool_) pool_->release(slot_, true);
}

}  // namespace trellis::tenants
