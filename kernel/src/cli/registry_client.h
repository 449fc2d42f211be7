// The CLI's client for a registry's write API (marketplace/registry, "Registry HTTP API" in
// docs/marketplace.md): publish, publisher keys, publish tokens, yank. Reads that the
// installer verifies go through install::Source instead.
//
// Two secrets travel with each request and neither is ever printed: the registry tenant's
// key (Authorization: Bearer) and a registry token (X-Registry-Token: the operator's admin
// token or a namespace's publish token).
//
//   auto reg = RegistryClient::open("http://registry.internal:8080", key, token);
//   auto answer = reg->send("POST", "/packages?tags=demo", archive_bytes);
//   if (!answer) ...                       // unreachable: UNAVAILABLE naming the URL
//   auto body = answer->json();            // 2xx JSON, or the problem detail as a Status
#pragma once

#include <Poco/JSON/Object.h>

#include <string>

#include "trellis/status.hpp"

namespace trellis::cli {

class RegistryClient {
 public:
  struct Answer {
    int status = 0;
    std::string body;
    std::string what;  // "POST http://…/registry/v1/packages", for messages

    // The body of a 2xx answer as a JSON object. Otherwise a Status whose message names
    // the request and the registry's problem detail (or says the answer was not JSON).
    Result<Poco::JSON::Object::Ptr> json() const;
  };

  // `url` is the registry's trellisd (http:// or https://host:port); "/registry/v1" is added
  // unless the path already ends so. INVALID for other URLs. https:// is verified
  // (http_session.h).
  static Result<RegistryClient> open(const std::string& url, std::string tenant_key,
                                     std::string token);

  // One request; UNAVAILABLE if the registry cannot be reached or stops answering.
  Result<Answer> send(const std::string& method, const std::string& path,
                      const std::string& body = "") const;

  // The public URL of an API path (for "published at …").
  std::string urlOf(const std::string& path) const { return base_ + path; }
  bool hasToken() const { return !token_.empty(); }

 private:
  RegistryClient(std::string base, std::string key, std::string token)
      : base_(std::move(base)), key_(std::move(key)), token_(std::move(token)) {}

  std::string base_;  // http://host:port/registry/v1
  std::string key_;
  std::string token_;
};

// A status code's StatusCode, so callers can tell "refused" from "down".
StatusCode statusCodeOf(int http_status);

}  // namespace trellis::cli
