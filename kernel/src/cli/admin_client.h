// The CLI's HTTP client for the trellisd admin API. The URL and token come from CliSettings
// (flags, environment, profile, server config); any failure prints one clear line and exits
// with one of the documented codes (docs/operations.md, "Exit codes").
#pragma once

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/URI.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "cli/cli_settings.h"
#include "cli/http_session.h"

namespace trellis::cli {

// Exit codes of the trellis CLI (documented in docs/operations.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // refused or failed: the message says why; nothing half-done
  kExitUsage = 2,        // bad flags or arguments
  kExitUnreachable = 3,  // the admin API or registry cannot be reached, or answered garbage
  kExitAuth = 4,         // a token or key was refused (401/403), or a secret file is unsafe
  kExitChanges = 5,      // `config diff --exit-code`: applying the file would change something
};

struct AdminClient {
  std::string url = "http://127.0.0.1:8081";
  std::string token;
  std::string token_file = "var/admin.token";
  const CliSettings* settings = nullptr;  // when set, the URL and token come from it

  std::string baseUrl() const { return settings ? settings->adminUrl() : url; }

  struct Answer {
    int status = 0;
    std::string body;
  };

  // Sends a request; prints the server's problem detail and exits unless it answers 2xx.
  std::string call(const std::string& method, const std::string& path,
                   const std::string& body = "") const {
    auto answer = tryCall(method, path, body);
    if (!answer) {
      die("cannot reach the admin API at " + baseUrl() +
              ": connection refused (is trellisd running?)",
          kExitUnreachable);
    }
    if (answer->status < 200 || answer->status > 299)
      die(problemDetail(answer->status, answer->body));
    return answer->body;
  }

  // As call(), but any answer is returned, and nullopt means trellisd is not running
  // (connection refused). Other transport errors and a refused token still exit.
  std::optional<Answer> tryCall(const std::string& method, const std::string& path,
                                const std::string& body = "") const {
    const std::optional<std::string> bearer = resolveBearer();
    try {
      Poco::URI uri(baseUrl());
      auto session = openHttpSession(uri, /*present_certificate=*/true);
      // Activation may wait for the old version's in-flight requests to drain.
      session->setTimeout(Poco::Timespan(60, 0));
      Poco::Net::HTTPRequest req(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
      if (bearer) req.set("Authorization", "Bearer " + *bearer);
      if (!body.empty()) {
        req.setContentType("application/json");
        req.setContentLength(static_cast<std::streamsize>(body.size()));
      }
      session->sendRequest(req) << body;
      Poco::Net::HTTPResponse res;
      std::istream& in = session->receiveResponse(res);
      std::stringstream answer;
      answer << in.rdbuf();
      int status = res.getStatus();
      if (status == Poco::Net::HTTPResponse::HTTP_UNAUTHORIZED && !bearer) {
        die("the admin API refused the client certificate of " +
                settings->clientCertificate().source + " (" + problemDetail(status, answer.str()) +
                ")",
            kExitAuth);
      }
      if (status == Poco::Net::HTTPResponse::HTTP_UNAUTHORIZED) {
        die("the admin API refused the token (401): check " +
                (settings ? settings->adminTokenSource() : "--token or " + token_file),
            kExitAuth);
      }
      return Answer{status, answer.str()};
    } catch (const Poco::Net::ConnectionRefusedException&) {
      return std::nullopt;
    } catch (const Poco::Exception& e) {
      die("cannot reach the admin API at " + baseUrl() + ": " + describeHttpError(e),
          kExitUnreachable);
    }
  }

  // "404: no tenant \"x\"" from a problem+json body, or the raw body.
  static std::string problemDetail(int status, const std::string& body) {
    try {
      auto o = Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
      if (o->has("detail"))
        return std::to_string(status) + ": " + o->getValue<std::string>("detail");
    } catch (const Poco::Exception&) {
    }
    return "admin API answered " + std::to_string(status) + ": " + body;
  }

  // The bearer token; with a client certificate over https://, none is needed (the
  // certificate may name an admin principal), so a missing one is not an error then.
  std::optional<std::string> resolveBearer() const {
    if (!settings || !baseUrl().starts_with("https://") || settings->clientCertificate().empty()) {
      return resolveToken();
    }
    if (!token.empty()) return token;
    return settings->findAdminToken();
  }

  std::string resolveToken() const {
    if (!token.empty()) return token;
    if (settings) return settings->adminToken();
    if (const char* env = std::getenv("TRELLIS_ADMIN_TOKEN"); env && *env) return env;
    std::ifstream in(token_file);
    std::string t;
    if (!std::getline(in, t) || t.empty()) {
      die("no admin token: pass --token, set TRELLIS_ADMIN_TOKEN, or point --token-file at "
          "the file trellisd wrote (tried " +
          token_file + ")");
    }
    return t;
  }

  [[noreturn]] static void die(const std::string& msg, int code = kExitFailed) {
    std::fprintf(stderr, "trellis: %s\n", msg.c_str());
    std::exit(code);
  }
};

inline Poco::JSON::Object::Ptr parseObject(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

}  // namespace trellis::cli
