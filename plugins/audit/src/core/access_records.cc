#include "core/access_records.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <sstream>

namespace trellis::audit {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::string_view kMethods[] = {"GET",    "HEAD",  "POST",   "PUT",
                                         "DELETE", "PATCH", "OPTIONS"};

bool isMethod(std::string_view word) {
  for (auto m : kMethods) {
    if (m == word) return true;
  }
  return false;
}

}  // namespace

Result<AccessRules> AccessRules::parse(std::string_view json) {
  AccessRules out;
  Object::Ptr tenants;
  try {
    auto v = Poco::JSON::Parser().parse(std::string(json));
    if (v.type() != typeid(Object::Ptr)) {
      return Status::invalid("config access is a map of tenant to a list of routes");
    }
    tenants = v.extract<Object::Ptr>();
  } catch (const Poco::Exception&) {
    return Status::invalid("config access is a map of tenant to a list of routes");
  }
  for (const auto& tenant : tenants->getNames()) {
    Array::Ptr list = tenants->getArray(tenant);
    if (!list) return Status::invalid("config access." + tenant + " is a list of routes");
    auto& rules = out.rules_[tenant];
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string where = "config access." + tenant + "[" + std::to_string(i) + "]";
      const auto item = list->get(static_cast<unsigned>(i));
      if (!item.isString()) return Status::invalid(where + " is a string");
      std::string text = item.extract<std::string>();
      Rule rule;
      if (const size_t space = text.find(' '); space != std::string::npos) {
        rule.method = text.substr(0, space);
        if (!isMethod(rule.method)) {
          return Status::invalid(where + " starts with \"" + rule.method +
                                 "\", which is not an HTTP method in capitals");
        }
        text = text.substr(space + 1);
      }
      if (!text.empty() && text.back() == '*') {
        rule.prefix = true;
        text.pop_back();
      }
      if (!rule.prefix && (text.empty() || text.front() != '/')) {
        return Status::invalid(where + " is \"*\", or a route pattern starting with /");
      }
      rule.route = std::move(text);
      rules.push_back(std::move(rule));
    }
  }
  return out;
}

bool AccessRules::matches(std::string_view tenant, std::string_view method,
                          std::string_view route) const {
  auto it = rules_.find(tenant);
  if (it == rules_.end()) return false;
  for (const Rule& r : it->second) {
    if (!r.method.empty() && r.method != method) continue;
    if (r.prefix ? route.starts_with(r.route) : route == r.route) return true;
  }
  return false;
}

Result<std::optional<std::string>> accessRecord(const AccessRules& rules,
                                                std::string_view usage_line) {
  Object::Ptr u;
  try {
    u = Poco::JSON::Parser().parse(std::string(usage_line)).extract<Object::Ptr>();
  } catch (const std::exception&) {
    return Status::invalid("a usage record is not a JSON object");
  }
  if (u->optValue<std::string>("kind", "") != "request") return std::optional<std::string>();
  const auto tenant = u->optValue<std::string>("tenant", "");
  const auto method = u->optValue<std::string>("method", "");
  const auto route = u->optValue<std::string>("route", "");
  if (!rules.matches(tenant, method, route)) return std::optional<std::string>();

  const auto status = u->optValue<int>("status", 0);
  const auto key_id = u->optValue<std::string>("key_id", "");
  Object::Ptr actor = new Object;
  actor->set("name", key_id);
  actor->set("principal", key_id.empty() ? std::string() : "key:" + key_id);
  actor->set("role", "tenant");
  Object::Ptr parameters = new Object;
  parameters->set("plugin", u->optValue<std::string>("plugin", ""));
  // The usage record it came from: a redelivered batch can repeat a record, and this tells.
  parameters->set("usage_event_id", u->optValue<std::string>("event_id", ""));
  Object::Ptr r = new Object;
  r->set("type", "data.access");
  r->set("tenant", tenant);
  r->set("action", method + " " + route);
  r->set("resource", route);
  r->set("outcome", status > 0 && status < 400 ? "success" : "failure");
  r->set("status", status);
  r->set("actor", actor);
  r->set("parameters", parameters);
  r->set("request_id", u->optValue<std::string>("request_id", ""));
  r->set("trace_id", u->optValue<std::string>("trace_id", ""));
  std::ostringstream out;
  r->stringify(out);
  return std::optional<std::string>(out.str());
}

}  // namespace trellis::audit
