#include "runtime/jobs_admin.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cassert>

#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

enum Endpoint : size_t { kList, kRun, kCancel };

Object::Ptr jobJson(const services::Job& j) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("tenant", j.key.tenant);
  o->set("plugin", j.key.plugin);
  o->set("name", j.key.name);
  o->set("kind", std::string(services::jobKindName(j.kind)));
  if (j.kind == services::JobKind::kEvery) o->set("interval_ms", j.interval_ms);
  if (j.kind == services::JobKind::kCron) o->set("cron", j.cron);
  o->set("durable", j.durable);
  o->set("state", std::string(services::jobStateName(j.state)));
  if (j.next_run_ms >= 0) o->set("next_run_ms", j.next_run_ms);
  if (j.last_run_ms > 0) o->set("last_run_ms", j.last_run_ms);
  o->set("runs", j.runs);
  o->set("failures", j.failures);
  o->set("attempts", j.attempts);
  o->set("max_attempts", j.max_attempts);
  if (!j.last_error.empty()) o->set("last_error", j.last_error);
  if (!j.running_on.empty()) o->set("running_on", j.running_on);
  if (j.overruns) o->set("overruns", j.overruns);
  return o;
}

}  // namespace

JobsAdmin::JobsAdmin(services::JobScheduler& jobs) : jobs_(jobs) {
  const std::tuple<const char*, const char*, Endpoint> routes[] = {
      {"GET", "/v1/jobs", kList},
      {"POST", "/v1/jobs/{tenant}/{ns}/{plugin}/{job}/run", kRun},
      {"DELETE", "/v1/jobs/{tenant}/{ns}/{plugin}/{job}", kCancel}};
  for (const auto& [method, pattern, endpoint] : routes) {
    Status s = router_.add(method, pattern, endpoint);
    assert(s.isOk() && "admin routes are constant");
    (void)s;
  }
}

std::optional<http::Response> JobsAdmin::handle(const http::Request& req, std::string_view path) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return notMatched(router_, req, path);
  if (m->target == kList) {
    std::string_view target = req.target();
    size_t q = target.find('?');
    auto tenant = q == std::string_view::npos ? std::nullopt
                                              : http::queryParam(target.substr(q + 1), "tenant");
    Array::Ptr list = new Array;
    for (const auto& job : jobs_.list()) {
      if (!tenant || job.key.tenant == *tenant) list->add(jobJson(job));
    }
    Object::Ptr body = new Object;
    body->set("jobs", list);
    return jsonResponse(req, 200, body);
  }
  services::JobKey key{
      std::string(m->param("tenant").value_or("")),
      std::string(m->param("ns").value_or("")) + "/" + std::string(m->param("plugin").value_or("")),
      std::string(m->param("job").value_or(""))};
  Status s = m->target == kRun ? jobs_.runNow(key) : jobs_.cancel(key);
  if (!s) {
    unsigned code = httpStatusFor(s.toC());
    return http::problem(code, bhttp::obsolete_reason(static_cast<bhttp::status>(code)),
                         s.message(), {}, &req);
  }
  if (m->target == kCancel) {
    http::Response res{bhttp::status::no_content, req.version()};
    return res;
  }
  Object::Ptr body = new Object;
  body->set("fired", true);
  return jsonResponse(req, 202, body);
}

}  // namespace trellis::kernel::runtime
