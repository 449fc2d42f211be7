// A small PostgreSQL client over a byte transport (in the plugin: an SDK egress stream):
// startup, password authentication (SCRAM-SHA-256, md5 or cleartext, whichever the server
// asks for; anything else is refused naming it), the simple query protocol and Terminate.
// Server errors come back as a Status carrying the SQLSTATE and message (never detail or
// the statement); the password never appears in one.
//
//   StreamTransport t(std::move(*stream));
//   PgClient pg(t);
//   if (Status s = pg.login("vault", "postgres", password); !s) return s;
//   auto r = pg.exec("CREATE ROLE \"v-acme-app-x\" LOGIN ...");   // one implicit transaction
//   pg.terminate();
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/secure_buffer.h"
#include "database/pg_wire.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::pg {

// Bytes in and out. write() sends all or fails; read() returns at least one byte, 0 at EOF.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual Status write(std::string_view bytes) = 0;
  virtual Result<size_t> read(char* buf, size_t cap) = 0;
};

class StreamTransport : public Transport {
 public:
  explicit StreamTransport(Stream s) : stream_(std::move(s)) {}
  Status write(std::string_view bytes) override { return stream_.write(bytes); }
  Result<size_t> read(char* buf, size_t cap) override { return stream_.read(buf, cap); }

 private:
  Stream stream_;
};

struct QueryResult {
  std::vector<std::string> tags;  // one CommandComplete tag per statement
  std::vector<std::vector<std::optional<std::string>>> rows;
};

// A server error as a Status: PERMISSION_DENIED for SQLSTATE class 28 (authentication),
// INVALID otherwise; the message reads "<severity> <sqlstate>: <message>".
Status serverErrorStatus(const ServerError& e);

class PgClient {
 public:
  static constexpr size_t kMaxRows = 10'000;
  static constexpr size_t kMaxResultBytes = 8 << 20;

  explicit PgClient(Transport& t) : t_(t) {}

  // Startup and authentication, up to the first ReadyForQuery.
  Status login(std::string_view user, std::string_view database, std::string_view password);
  // Runs `sql` (one or more statements: one implicit transaction) and reads up to
  // ReadyForQuery, so the connection stays usable after a server error.
  Result<QueryResult> exec(std::string_view sql);
  // Terminate, best effort.
  void terminate();

 private:
  Result<Frame> nextFrame();
  // `s` with every occurrence of the password replaced: whatever a server sends back (an
  // error, a SCRAM refusal) is repeated to the client, and a hostile server may echo it.
  Status redacted(Status s) const;
  Result<QueryResult> execSteps(std::string_view sql);
  Status loginSteps(std::string_view user, std::string_view database, std::string_view password);
  Status authenticate(const AuthRequest& first, std::string_view user, std::string_view password);

  Transport& t_;
  FrameReader in_;
  bool ready_ = false;
  SecureBuffer password_;  // for redacted()
};

}  // namespace trellis::secrets::pg
