// A logged-in PostgreSQL session over the SDK's egress stream, for one operation: the
// connection URL parsed, the stream opened, the user logged in; Terminate when it goes.
//
//   auto s = openStored(ctx, seal, "main");      // the tenant's stored connection
//   auto r = (*s)->exec("SELECT 1");
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "database/pg_client.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::database {

// "tcp://host:port/database" → the stream URL and the database name.
struct Target {
  std::string stream_url;
  std::string database;
};
Result<Target> parseConnectionUrl(std::string_view url);

class Session {
 public:
  // UNAVAILABLE when the database cannot be reached, PERMISSION_DENIED when egress refuses
  // the address or the server refuses the login, INVALID for a bad URL or protocol garbage;
  // each message names the address or user, never the password.
  static Result<std::unique_ptr<Session>> open(const Context& ctx, std::string_view url,
                                               std::string_view user, std::string_view password);
  ~Session() { pg_.terminate(); }
  Result<pg::QueryResult> exec(std::string_view sql) { return pg_.exec(sql); }

 private:
  explicit Session(Stream s) : transport_(std::move(s)), pg_(transport_) {}
  pg::StreamTransport transport_;
  pg::PgClient pg_;
};

// A session on the tenant's stored connection `db_name` (its password opened under the
// tenant's KEK). NOT_FOUND when there is none.
Result<std::unique_ptr<Session>> openStored(const Context& ctx, const Seal& seal,
                                            std::string_view db_name);

}  // namespace trellis::secrets::database
