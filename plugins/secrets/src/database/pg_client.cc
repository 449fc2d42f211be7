#include "database/pg_client.h"

#include <algorithm>

#include "crypto/secure_buffer.h"
#include "database/scram.h"

namespace trellis::secrets::pg {
namespace {

constexpr std::string_view kScram = "SCRAM-SHA-256";

Status unexpected(char type, std::string_view when) {
  return Status::invalid("the database sent an unexpected message '" + std::string(1, type) + "' " +
                         std::string(when));
}

}  // namespace

Status serverErrorStatus(const ServerError& e) {
  if (e.sqlstate.starts_with("28")) return Status::permissionDenied(e.toString());
  return Status::invalid(e.toString());
}

Result<Frame> PgClient::nextFrame() {
  char buf[16 * 1024];
  while (true) {
    auto f = in_.next();
    if (!f) return f.status();
    if (*f) return std::move(**f);
    auto n = t_.read(buf, sizeof buf);
    if (!n) return Status::unavailable("reading from the database failed: " + n.status().message());
    if (*n == 0) return Status::unavailable("the database closed the connection");
    in_.feed(std::string_view(buf, *n));
  }
}

Status PgClient::redacted(Status s) const {
  const std::string_view pw = password_.view();
  if (s || pw.empty()) return s;
  std::string m = s.message();
  for (size_t at = m.find(pw); at != std::string::npos; at = m.find(pw, at)) {
    m.replace(at, pw.size(), "[redacted]");
  }
  return Status(s.code(), std::move(m));
}

Status PgClient::login(std::string_view user, std::string_view database,
                       std::string_view password) {
  password_ = SecureBuffer(password);
  return redacted(loginSteps(user, database, password));
}

Status PgClient::loginSteps(std::string_view user, std::string_view database,
                            std::string_view password) {
  auto startup = startupMessage(user, database);
  if (!startup) return startup.status();
  if (Status s = t_.write(*startup); !s) {
    return Status::unavailable("writing to the database failed: " + s.message());
  }
  auto first = nextFrame();
  if (!first) return first.status();
  if (first->type == 'E') {
    auto e = parseError(first->body);
    return e ? serverErrorStatus(*e) : e.status();
  }
  if (first->type != 'R') return unexpected(first->type, "instead of an authentication request");
  auto auth = parseAuth(first->body);
  if (!auth) return auth.status();
  if (Status s = authenticate(*auth, user, password); !s) return s;
  // ParameterStatus, BackendKeyData, notices, then ReadyForQuery.
  while (true) {
    auto f = nextFrame();
    if (!f) return f.status();
    switch (f->type) {
      case 'S':
      case 'K':
      case 'N':
      case 'v': continue;
      case 'E': {
        auto e = parseError(f->body);
        return e ? serverErrorStatus(*e) : e.status();
      }
      case 'Z': ready_ = true; return Status::ok();
      default: return unexpected(f->type, "before the session was ready");
    }
  }
}

Status PgClient::authenticate(const AuthRequest& first, std::string_view user,
                              std::string_view password) {
  AuthRequest req = first;
  bool scram_verified = false;
  std::optional<ScramClient> scram;
  for (int step = 0; step < 4; ++step) {
    switch (req.code) {
      case 0:
        if (scram && !scram_verified) {
          return Status::permissionDenied("the database skipped the end of SCRAM; refused");
        }
        return Status::ok();
      case 3: {
        if (step > 0) return Status::invalid("the database asked for a second password");
        auto m = passwordMessage(password);
        if (!m) return m.status();
        Status s = t_.write(*m);
        cleanse(*m);
        if (!s) return Status::unavailable("writing to the database failed: " + s.message());
        break;
      }
      case 5: {
        if (step > 0) return Status::invalid("the database asked for a second password");
        std::string answer = md5PasswordAnswer(password, user, req.data);
        auto m = passwordMessage(answer);
        cleanse(answer);
        if (!m) return m.status();
        Status s = t_.write(*m);
        if (!s) return Status::unavailable("writing to the database failed: " + s.message());
        break;
      }
      case 10: {
        if (scram) return Status::invalid("the database restarted SASL");
        if (std::find(req.mechanisms.begin(), req.mechanisms.end(), kScram) ==
            req.mechanisms.end()) {
          std::string offered;
          for (const auto& m : req.mechanisms)
            offered += (offered.empty() ? "" : ", ") + m.substr(0, 40);
          return Status::unimplemented("the database offers SASL mechanisms [" + offered +
                                       "]; only SCRAM-SHA-256 is supported");
        }
        scram.emplace(password, "");
        if (Status s = t_.write(saslInitialResponse(kScram, scram->clientFirst())); !s) {
          return Status::unavailable("writing to the database failed: " + s.message());
        }
        break;
      }
      case 11: {
        if (!scram) return Status::invalid("the database continued SASL it never started");
        auto final = scram->clientFinal(req.data);
        if (!final) return final.status();
        Status s = t_.write(saslResponse(*final));
        cleanse(*final);
        if (!s) return Status::unavailable("writing to the database failed: " + s.message());
        break;
      }
      case 12: {
        if (!scram) return Status::invalid("the database ended SASL it never started");
        if (Status s = scram->verifyServerFinal(req.data); !s) return s;
        scram_verified = true;
        break;
      }
      default:
        return Status::unimplemented(
            "the database asks for authentication method " + std::to_string(req.code) +
            " (Kerberos, GSSAPI, SSPI or other); use scram-sha-256, md5 or password in "
            "pg_hba.conf for this user");
    }
    auto f = nextFrame();
    if (!f) return f.status();
    if (f->type == 'E') {
      auto e = parseError(f->body);
      return e ? serverErrorStatus(*e) : e.status();
    }
    if (f->type != 'R') return unexpected(f->type, "during authentication");
    auto next = parseAuth(f->body);
    if (!next) return next.status();
    req = std::move(*next);
  }
  return Status::invalid("the database's authentication exchange did not end");
}

Result<QueryResult> PgClient::exec(std::string_view sql) {
  auto r = execSteps(sql);
  if (!r) return redacted(r.status());
  return r;
}

Result<QueryResult> PgClient::execSteps(std::string_view sql) {
  if (!ready_) return Status::unavailable("the database session is not ready");
  auto q = queryMessage(sql);
  if (!q) return q.status();
  ready_ = false;
  if (Status s = t_.write(*q); !s) {
    return Status::unavailable("writing to the database failed: " + s.message());
  }
  QueryResult out;
  std::optional<Status> error;
  size_t bytes = 0;
  while (true) {
    auto f = nextFrame();
    if (!f) return f.status();
    switch (f->type) {
      case 'T':
      case 'I':
      case 'N':
      case 'S':
      case 'A': break;
      case 'D': {
        bytes += f->body.size();
        if (out.rows.size() >= kMaxRows || bytes > kMaxResultBytes) {
          if (!error)
            error = Status::quotaExceeded("the database answered more rows than the plugin reads");
          break;
        }
        auto row = parseDataRow(f->body);
        if (!row) return row.status();
        out.rows.push_back(std::move(*row));
        break;
      }
      case 'C': {
        auto tag = parseCommandComplete(f->body);
        if (!tag) return tag.status();
        out.tags.push_back(std::move(*tag));
        break;
      }
      case 'E': {
        auto e = parseError(f->body);
        if (!e) return e.status();
        if (!error) error = serverErrorStatus(*e);
        break;
      }
      case 'Z':
        ready_ = true;
        if (error) return *error;
        return out;
      default: return unexpected(f->type, "in a query's answer");
    }
  }
}

void PgClient::terminate() {
  (void)t_.write(terminateMessage());
  ready_ = false;
}

}  // namespace trellis::secrets::pg
