#include "cli/registry_client.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/URI.h>

#include <istream>
#include <sstream>

#include "cli/http_session.h"

namespace trellis::cli {
namespace {

// Answers are JSON of a few KiB; anything far larger is not a registry talking.
constexpr std::streamsize kMaxAnswerBytes = 4 << 20;

std::string snippet(const std::string& body) {
  std::string s = body.substr(0, 80);
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return body.size() > 80 ? s + "…" : s;
}

}  // namespace

StatusCode statusCodeOf(int http_status) {
  switch (http_status) {
    case 400:
    case 413:
    case 422: return StatusCode::kInvalid;
    case 401:
    case 403: return StatusCode::kPermissionDenied;
    case 404: return StatusCode::kNotFound;
    case 409: return StatusCode::kConflict;
    case 503: return StatusCode::kUnavailable;
    default: return StatusCode::kInternal;
  }
}

Result<Poco::JSON::Object::Ptr> RegistryClient::Answer::json() const {
  Poco::JSON::Object::Ptr parsed;
  try {
    parsed = Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
  } catch (const Poco::Exception&) {
  }
  if (status >= 200 && status <= 299) {
    if (!parsed) {
      return Status::unavailable(what + ": the registry answered " + std::to_string(status) +
                                 " with something that is not JSON (\"" + snippet(body) +
                                 "\"); is this URL a Trellis registry?");
    }
    return parsed;
  }
  std::string detail;
  if (parsed && parsed->has("detail") && parsed->get("detail").isString()) {
    detail = parsed->getValue<std::string>("detail");
  } else if (status == 404) {
    // Not a problem+json 404: the route itself is missing.
    detail = "no such route; is this URL a Trellis registry, with the registry plugin enabled?";
  } else {
    detail = "\"" + snippet(body) + "\"";
  }
  return Status(statusCodeOf(status),
                "the registry refused (" + std::to_string(status) + "): " + detail);
}

Result<RegistryClient> RegistryClient::open(const std::string& url, std::string tenant_key,
                                            std::string token) {
  if (url.empty()) {
    return Status::invalid(
        "no registry: pass --registry URL, set TRELLIS_REGISTRY, or put registry: in your "
        "profile (trellis login)");
  }
  auto parsed = parseHttpUrl("--registry", url);
  if (!parsed) return parsed.status();
  try {
    Poco::URI uri = *parsed;
    std::string path = uri.getPath();
    while (!path.empty() && path.back() == '/') path.pop_back();
    const std::string api = "/registry/v1";
    if (path.size() < api.size() || path.compare(path.size() - api.size(), api.size(), api) != 0) {
      path += api;
    }
    uri.setPath(path);
    return RegistryClient(uri.toString(), std::move(tenant_key), std::move(token));
  } catch (const Poco::Exception& e) {
    return Status::invalid("--registry " + url + ": " + e.displayText());
  }
}

Result<RegistryClient::Answer> RegistryClient::send(const std::string& method,
                                                    const std::string& path,
                                                    const std::string& body) const {
  Answer answer;
  answer.what = method + " " + base_ + path;
  try {
    Poco::URI uri(base_ + path);
    auto session = openHttpSession(uri);
    session->setTimeout(Poco::Timespan(60, 0));
    Poco::Net::HTTPRequest req(method, uri.getPathAndQuery(), Poco::Net::HTTPMessage::HTTP_1_1);
    if (!key_.empty()) req.set("Authorization", "Bearer " + key_);
    if (!token_.empty()) req.set("X-Registry-Token", token_);
    if (!body.empty() || method == "POST") {
      req.setContentType("application/json");
      req.setContentLength(static_cast<std::streamsize>(body.size()));
    }
    session->sendRequest(req) << body;
    Poco::Net::HTTPResponse res;
    std::istream& in = session->receiveResponse(res);
    std::string buf(64 * 1024, '\0');
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      answer.body.append(buf.data(), static_cast<size_t>(in.gcount()));
      if (static_cast<std::streamsize>(answer.body.size()) > kMaxAnswerBytes) {
        return Status::unavailable(answer.what +
                                   ": the answer is larger than 4 MiB; is this URL "
                                   "a Trellis registry?");
      }
    }
    answer.status = static_cast<int>(res.getStatus());
    if (answer.status == 401 && key_.empty()) {
      return Status::permissionDenied(
          answer.what +
          ": the registry wants its tenant's key: set TRELLIS_REGISTRY_KEY or "
          "--registry-key-file");
    }
    return answer;
  } catch (const Poco::Exception& e) {
    return Status::unavailable("cannot reach the registry at " + base_ + ": " +
                               describeHttpError(e));
  }
}

}  // namespace trellis::cli
