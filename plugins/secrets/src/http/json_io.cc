#include "http/json_io.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>

#include <sstream>

namespace trellis::secrets::http {

Result<Object::Ptr> parseObject(std::string_view body) {
  if (body.empty()) return Object::Ptr(new Object);
  try {
    Poco::Dynamic::Var v = Poco::JSON::Parser().parse(std::string(body));
    if (v.type() != typeid(Object::Ptr)) return Status::invalid("the body must be a JSON object");
    return v.extract<Object::Ptr>();
  } catch (const Poco::Exception&) {
    return Status::invalid("the body is not valid JSON");
  }
}

Result<std::optional<uint64_t>> optionalUint(const Object::Ptr& o, const std::string& name,
                                             uint64_t max) {
  if (!o->has(name) || o->isNull(name)) return std::optional<uint64_t>();
  Poco::Dynamic::Var v = o->get(name);
  const std::string wanted =
      "\"" + name + "\" must be a whole number from 0 to " + std::to_string(max);
  if (!v.isNumeric() || v.isBoolean()) return Status::invalid(wanted);
  double d = v.convert<double>();
  if (d < 0 || d > static_cast<double>(max) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    return Status::invalid(wanted);
  }
  return std::optional<uint64_t>(static_cast<uint64_t>(d));
}

Result<std::optional<bool>> optionalBool(const Object::Ptr& o, const std::string& name) {
  if (!o->has(name) || o->isNull(name)) return std::optional<bool>();
  Poco::Dynamic::Var v = o->get(name);
  if (!v.isBoolean()) return Status::invalid("\"" + name + "\" must be true or false");
  return std::optional<bool>(v.convert<bool>());
}

std::string stringify(const Object::Ptr& o) {
  std::ostringstream out;
  o->stringify(out);
  return out.str();
}

Status sendJson(Response& res, int code, const Object::Ptr& o) {
  std::string body = stringify(o);
  return res.json(code, body);
}

Status sendProblem(Response& res, const Status& s) {
  int code = 500;
  switch (s.code()) {
    case StatusCode::kInvalid: code = 400; break;
    case StatusCode::kNotFound: code = 404; break;
    case StatusCode::kPermissionDenied: code = 403; break;
    case StatusCode::kConflict: code = 409; break;
    case StatusCode::kQuotaExceeded: code = 413; break;
    case StatusCode::kUnavailable: code = 503; break;
    case StatusCode::kTimeout: code = 504; break;
    default: break;
  }
  return res.problem(code, s.message());
}

Status internalError(Context& ctx, Response& res, const Status& s) {
  ctx.error("secrets: " + s.toString());
  return res.problem(500, "the secrets store failed to handle the request; see the host log");
}

Status answerFailure(Context& ctx, Response& res, const Status& s) {
  if (s.code() == StatusCode::kInternal) return internalError(ctx, res, s);
  return sendProblem(res, s);
}

}  // namespace trellis::secrets::http
