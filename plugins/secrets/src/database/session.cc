#include "database/session.h"

#include "database/records.h"
#include "keys/envelope.h"
#include "keys/keyring.h"

namespace trellis::secrets::database {

Result<Target> parseConnectionUrl(std::string_view url) {
  const std::string wanted =
      "\"connection_url\" must read tcp://host:port/database or tls://host:port/database";
  if (!url.starts_with("tcp://") && !url.starts_with("tls://")) return Status::invalid(wanted);
  if (url.size() > 512) return Status::invalid("\"connection_url\" is longer than 512 bytes");
  const size_t slash = url.find('/', 6);
  if (slash == std::string_view::npos || slash + 1 >= url.size()) return Status::invalid(wanted);
  Target t{std::string(url.substr(0, slash)), std::string(url.substr(slash + 1))};
  const std::string_view authority = url.substr(6, slash - 6);
  if (authority.empty() || authority.find('@') != std::string_view::npos ||
      authority.rfind(':') == std::string_view::npos) {
    return Status::invalid(wanted);
  }
  for (char c : t.database) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '/' || c == '?') {
      return Status::invalid(
          "the database name in \"connection_url\" holds a character not allowed");
    }
  }
  return t;
}

Result<std::unique_ptr<Session>> Session::open(const Context& ctx, std::string_view url,
                                               std::string_view user, std::string_view password) {
  auto target = parseConnectionUrl(url);
  if (!target) return target.status();
  auto stream = ctx.connect({.url = target->stream_url});
  if (!stream) {
    return Status(
        stream.status().code() == StatusCode::kPermissionDenied ? StatusCode::kPermissionDenied
                                                                : StatusCode::kUnavailable,
        "cannot reach the database at " + target->stream_url + ": " + stream.status().message());
  }
  auto s = std::unique_ptr<Session>(new Session(std::move(*stream)));
  if (Status st = s->pg_.login(user, target->database, password); !st) {
    return Status(st.code(), "logging in to the database as \"" + std::string(user) +
                                 "\" failed: " + st.message());
  }
  return s;
}

Result<std::unique_ptr<Session>> openStored(const Context& ctx, const Seal& seal,
                                            std::string_view db_name) {
  auto entry = ctx.kv().get(std::string(DatabaseEngine::kConfigPrefix) + std::string(db_name));
  if (!entry) {
    if (entry.status().code() != StatusCode::kNotFound) return entry.status();
    return Status::notFound("no database connection \"" + std::string(db_name) + "\"");
  }
  auto cfg = parseConfig(db_name, entry->value);
  if (!cfg) return cfg.status();
  auto ring = Keyring::open(ctx, seal, /*create=*/false);
  if (!ring) return ring.status();
  auto password = envelope::open(*ring, cfg->password, passwordAad(ctx.tenant(), db_name));
  if (!password) return Status::internal("the connection password does not open");
  return Session::open(ctx, cfg->view.connection_url, cfg->view.username, password->view());
}

}  // namespace trellis::secrets::database
