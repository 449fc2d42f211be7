#include "runtime/admin_plane.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "admin/admin_gate.h"
#include "admin/admin_tokens_api.h"
#include "admin/plugin_admin_routes.h"
#include "runtime/bearer.h"
#include "runtime/config_admin.h"
#include "runtime/jobs_admin.h"
#include "runtime/openapi_document.h"
#include "runtime/responses.h"
#include "runtime/system_admin.h"
#include "runtime/tenant_config_admin.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/util/file.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
namespace fs = std::filesystem;

namespace {

bool tokenMatches(std::string_view presented, const std::string& token) {
  return presented.size() == token.size() &&
         CRYPTO_memcmp(presented.data(), token.data(), token.size()) == 0;
}

}  // namespace

AdminPlane::AdminPlane(AdminView view, std::string token, std::unique_ptr<TenantAdmin> tenant_admin)
    : view_(std::move(view)), token_(std::move(token)), tenant_admin_(std::move(tenant_admin)) {}

std::optional<http::Response> AdminPlane::screen(const http::Request& req, const http::Peer& peer) {
  // Bodies (policies, plugin uploads) are read only for the token's holder.
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz" || path == "/readyz") return std::nullopt;
  if (view_.gate) return view_.gate->screen(req, peer);
  if (tokenMatches(bearerCredential(req), token_)) return std::nullopt;
  return unauthorized(req);
}

http::Response AdminPlane::unauthorized(const http::Request& req) {
  auto res = http::problem(401, "Unauthorized",
                           "the admin API needs Authorization: Bearer <admin token>", {}, &req);
  res.set(bhttp::field::www_authenticate, "Bearer realm=\"trellis-admin\"");
  return res;
}

void AdminPlane::handle(http::Request& req, const http::Peer& peer, http::Respond respond) {
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz") return respond(healthResponse(req, true));
  if (path == "/readyz") return respond(healthResponse(req, view_.ready->load()));
  if (view_.gate) {
    // A plugin's admin route declares its own role; the gate checks it before the plugin runs.
    std::optional<admin::PluginAdminRoutes::Found> plugin_route;
    if (view_.plugin_routes) plugin_route = view_.plugin_routes->find(req, path);
    auto admitted = view_.gate->admit(
        req, path, peer, std::move(respond),
        plugin_route ? std::optional<admin::Requirement>(plugin_route->need) : std::nullopt);
    if (!admitted) return;  // answered: 401, 403 or 503
    if (plugin_route) {
      return view_.plugin_routes->invoke(std::move(*plugin_route), req, path, std::move(*admitted));
    }
    respond = std::move(admitted->respond);
  } else if (!tokenMatches(bearerCredential(req), token_)) {
    return respond(unauthorized(req));
  }
  if (view_.admin_tokens) {
    if (auto res = view_.admin_tokens->handle(req, path)) return respond(std::move(*res));
  }
  if (view_.tenant_config) {
    if (auto res = view_.tenant_config->handle(req, path)) return respond(std::move(*res));
  }
  if (auto res = tenant_admin_->handle(req, path)) {
    // A deleted tenant's policy goes with it, or a new tenant of that id would inherit it.
    constexpr std::string_view kTenants = "/v1/tenants/";
    if (view_.policies && req.method() == bhttp::verb::delete_ && res->result_int() == 204 &&
        path.starts_with(kTenants) && path.find('/', kTenants.size()) == std::string_view::npos) {
      view_.policies->tenantDeleted(path.substr(kTenants.size()));
    }
    return respond(std::move(*res));
  }
  if (view_.policies) {
    if (view_.policies->handle(req, path, respond)) return;
  }
  if (view_.config) {
    if (view_.config->handle(req, path, respond)) return;
  }
  if (view_.system) {
    if (auto res = view_.system->handle(req, path)) return respond(std::move(*res));
  }
  if (view_.control) {
    if (view_.control->handle(req, path, respond)) return;
  }
  if (view_.jobs) {
    if (auto res = view_.jobs->handle(req, path)) return respond(std::move(*res));
  }
  if (req.method() != bhttp::verb::get) {
    return respond(http::problem(405, "Method Not Allowed",
                                 std::string(req.method_string()) + " is not allowed here", {},
                                 &req));
  }
  if (path == "/v1/status") return respond(status(req));
  if (path == "/v1/openapi.json") {
    http::Response res{bhttp::status::ok, req.version()};
    res.set(bhttp::field::content_type, "application/json");
    res.body() = std::string(adminOpenApiJson());
    res.keep_alive(req.keep_alive());
    return respond(std::move(res));
  }
  if (path == "/v1/plugins") return respond(pluginList(req));
  if (path == "/metrics") {
    http::Response res{bhttp::status::ok, req.version()};
    res.set(bhttp::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = view_.metrics->render() + renderTenantMetrics(*view_.admission, 100);
    res.keep_alive(req.keep_alive());
    return respond(std::move(res));
  }
  respond(http::problem(404, "Not Found", "no admin endpoint " + std::string(path), {}, &req));
}

http::Response AdminPlane::status(const http::Request& req) const {
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("version", TRELLIS_VERSION);
  o->set("abi", std::to_string(TRELLIS_ABI_MAJOR) + "." + std::to_string(TRELLIS_ABI_MINOR));
  o->set("ready", view_.ready->load());
  o->set("uptime_seconds", std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::steady_clock::now() - view_.started_at)
                               .count());
  o->set("data_plane", view_.data_plane_address());
  o->set("in_flight", static_cast<uint64_t>(view_.in_flight()));
  o->set("tenants", static_cast<uint64_t>(view_.tenants()));
  size_t active = 0, failed = 0;
  const auto plugin_list = view_.plugins->read();
  for (const auto* p : plugin_list.plugins()) {
    if (p->state == PluginState::kActive) ++active;
    if (p->state == PluginState::kFailed) ++failed;
  }
  Poco::JSON::Object::Ptr plugins = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  plugins->set("active", static_cast<uint64_t>(active));
  plugins->set("failed", static_cast<uint64_t>(failed));
  plugins->set("broken_packages", static_cast<uint64_t>(view_.plugins->broken().size()));
  o->set("plugins", plugins);
  return jsonResponse(req, 200, o);
}

namespace {

// Each worker of a plugin in isolation: process, as `trellis plugin list` shows it.
Poco::JSON::Array::Ptr workerReportJson(const std::vector<worker::WorkerReport>& reports) {
  Poco::JSON::Array::Ptr out = new Poco::JSON::Array;
  for (const auto& r : reports) {
    Poco::JSON::Object::Ptr w = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    w->set("tenant", r.tenant.empty() ? "*" : r.tenant);
    w->set("state", r.state);
    if (r.pid) w->set("pid", r.pid);
    w->set("restarts", r.restarts);
    w->set("crashes", r.crashes);
    if (!r.last_crash.empty()) w->set("last_crash", r.last_crash);
    if (r.backoff_seconds > 0) w->set("backoff_seconds", r.backoff_seconds);
    w->set("landlock", r.landlock);
    out->add(w);
  }
  return out;
}

}  // namespace

http::Response AdminPlane::pluginList(const http::Request& req) const {
  Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
  const auto plugin_list = view_.plugins->read();
  for (const auto* p : plugin_list.plugins()) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("id", p->id());
    o->set("version", p->manifest().version.toString());
    o->set("state", std::string(pluginStateName(p->state)));
    o->set("runtime", p->manifest().runtime);
    o->set("scope", std::string(plugin::pluginScopeName(p->manifest().scope)));
    o->set("system", p->state == PluginState::kActive && p->isSystemPlugin());
    o->set("path", p->dir().string());
    Poco::JSON::Array::Ptr routes = new Poco::JSON::Array;
    for (const auto& r : p->routes) {
      routes->add(r.method + " " + r.pattern + (r.blocking ? " (blocking)" : ""));
    }
    o->set("routes", routes);
    Poco::JSON::Array::Ptr caps = new Poco::JSON::Array;
    for (const auto& c : p->manifest().capabilities) caps->add(c);
    o->set("capabilities", caps);
    o->set("denied_calls", p->denied_calls.load());
    if (!p->error.empty()) o->set("error", p->error);
    // A Lua plugin in trellisd runs in its Lua sandbox, which has no isolation to name.
    if (p->manifest().runtime != "lua" || p->worker) {
      o->set("isolation", p->worker ? "process" : "in-process");
      // An admin's choice at run time, which trellis.yaml replaces at the next start.
      o->set("isolation_set_at_runtime", p->isolation_set_at_runtime);
    }
    if (p->worker) o->set("workers", workerReportJson(p->worker->report()));
    list->add(o);
  }
  Poco::JSON::Array::Ptr broken = new Poco::JSON::Array;
  for (const auto& b : view_.plugins->broken()) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("path", b.dir.string());
    o->set("error", b.error);
    broken->add(o);
  }
  Poco::JSON::Object::Ptr body = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  body->set("plugins", list);
  body->set("broken_packages", broken);
  return jsonResponse(req, 200, body);
}

std::string renderTenantMetrics(const tenants::Admission& admission, size_t max_series) {
  auto all = admission.allUsage();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.second.admitted != b.second.admitted ? a.second.admitted > b.second.admitted
                                                  : a.first < b.first;
  });
  if (all.size() > max_series) {
    tenants::Admission::Usage other;
    for (size_t i = max_series; i < all.size(); ++i) {
      other.in_flight += all[i].second.in_flight;
      other.admitted += all[i].second.admitted;
      other.rejected += all[i].second.rejected;
    }
    all.resize(max_series);
    all.emplace_back("_other", other);  // not a valid tenant id, so never a real tenant
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out =
      "# HELP trellis_tenant_requests_total Requests per tenant by admission outcome (busiest " +
      std::to_string(max_series) +
      " tenants; the rest as tenant=\"_other\")\n"
      "# TYPE trellis_tenant_requests_total counter\n";
  for (const auto& [tenant, u] : all) {
    out += "trellis_tenant_requests_total{tenant=\"" + tenant + "\",outcome=\"admitted\"} " +
           std::to_string(u.admitted) + "\n";
    out += "trellis_tenant_requests_total{tenant=\"" + tenant + "\",outcome=\"rejected\"} " +
           std::to_string(u.rejected) + "\n";
  }
  out +=
      "# HELP trellis_tenant_requests_in_flight Requests per tenant being served now\n"
      "# TYPE trellis_tenant_requests_in_flight gauge\n";
  for (const auto& [tenant, u] : all) {
    out += "trellis_tenant_requests_in_flight{tenant=\"" + tenant + "\"} " +
           std::to_string(u.in_flight) + "\n";
  }
  return out;
}

Result<std::string> loadOrCreateAdminToken(const fs::path& file) {
  std::error_code ec;
  if (fs::exists(file, ec)) {
    std::ifstream in(file);
    std::string token;
    std::getline(in, token);
    if (token.size() < 16) {
      return Status::invalid("admin token in " + file.string() + " is shorter than 16 characters");
    }
    auto perms = fs::status(file, ec).permissions();
    if ((perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none) {
      return Status::permissionDenied("admin token file " + file.string() +
                                      " is readable by others: chmod 600 it");
    }
    return token;
  }
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return Status::internal("no randomness for the token");
  static const char* hex = "0123456789abcdef";
  std::string token;
  for (unsigned char b : raw) {
    token += hex[b >> 4];
    token += hex[b & 15];
  }
  if (Status s = util::writeFileAtomically(file, token + "\n", 0600); !s) return s;
  // Printed once, on purpose not through the logger: tokens never reach a log file.
  std::printf("trellisd: generated an admin token (shown once; stored in %s):\n  %s\n",
              file.c_str(), token.c_str());
  std::fflush(stdout);
  return token;
}

}  // namespace trellis::kernel::runtime
