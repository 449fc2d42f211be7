// Registry tokens (header X-Registry-Token): the operator's admin token, whose SHA-256 is
// in the config, and publish tokens the admin creates. A publish token is shown once; only
// its SHA-256 is stored ("tok/<sha256>"), it is scoped to one namespace and it expires.
//
//   auto caller = tokens.authenticate(store, header_value, now);   // PERMISSION_DENIED
//   if (auto s = caller->mayActFor("acme"); !s) refuse(s);
#pragma once

#include <Poco/JSON/Object.h>

#include <optional>
#include <string>
#include <string_view>

#include "store.h"
#include "trellis/marketplace/index.h"
#include "trellis/status.hpp"

namespace trellis::registry {

using marketplace::UnixSeconds;

struct Caller {
  bool admin = false;
  std::string ns;        // publish token: its namespace
  std::string token_id;  // publish token: first 16 hex of its SHA-256

  // PERMISSION_DENIED unless the admin or a publish token of `ns`.
  Status mayActFor(std::string_view ns) const;
  Status mustBeAdmin() const;
};

class Tokens {
 public:
  explicit Tokens(std::string admin_token_sha256) : admin_sha256_(std::move(admin_token_sha256)) {}

  // PERMISSION_DENIED for an unknown, revoked or expired token (the message never quotes it).
  Result<Caller> authenticate(const Store& store, std::string_view token, UnixSeconds now) const;

  // A new token for `ns`; the result holds the secret ("token") to show once.
  Result<Poco::JSON::Object::Ptr> create(const Store& store, const std::string& ns,
                                         int64_t ttl_seconds, const std::string& description,
                                         UnixSeconds now) const;
  Result<Poco::JSON::Object::Ptr> list(const Store& store, UnixSeconds now) const;
  // NOT_FOUND if no token has this id.
  Status revoke(const Store& store, std::string_view id) const;

 private:
  std::string admin_sha256_;
};

}  // namespace trellis::registry
