#include "runtime/config_admin.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <memory>

#include "runtime/responses.h"
#include "trellis/kernel/config/config.h"

namespace trellis::kernel::runtime {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr size_t kPlan = 0;
constexpr size_t kApply = 1;

std::string scopeName(const std::string& tenant) {
  return tenant.empty() ? "policy global" : "policy of tenant \"" + tenant + "\"";
}

tenants::DesiredState desiredState(const config::StateFile& state) {
  tenants::DesiredState d;
  d.plans = state.plans;
  for (const auto& t : state.tenants) {
    tenants::DesiredTenant dt;
    dt.record.id = t.id;
    dt.record.plan = t.plan;
    dt.record.labels = t.labels;
    dt.record.plugins = t.plugins;
    dt.record.grants = t.grants;
    dt.record.overrides = t.quotas;
    for (const auto& k : t.keys) dt.key_hashes.push_back(k.sha256_hex);
    dt.plugin_config = t.plugin_config;
    d.tenants.push_back(std::move(dt));
  }
  return d;
}

Object::Ptr planJson(const tenants::StatePlan& plan, bool applied) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("applied", applied);
  Array::Ptr changes = new Array;
  for (const auto& c : plan.changes) {
    Object::Ptr change = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    change->set("action", c.action);
    change->set("object", c.object);
    Array::Ptr details = new Array;
    for (const auto& d : c.details) details->add(d);
    change->set("details", details);
    changes->add(change);
  }
  o->set("changes", changes);
  Array::Ptr drift = new Array;
  for (const auto& d : plan.drift) {
    Object::Ptr item = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    item->set("tenant", d.tenant);
    item->set("detail", d.detail);
    drift->add(item);
  }
  o->set("drift", drift);
  return o;
}

}  // namespace

ConfigAdmin::ConfigAdmin(tenants::TenantRegistry& registry, const PluginManager& plugins,
                         lua::PolicyEngine& policies)
    : registry_(registry), plugins_(plugins), policies_(policies) {
  Status plan = router_.add("POST", "/v1/config/plan", kPlan);
  Status apply = router_.add("POST", "/v1/config/apply", kApply);
  assert(plan.isOk() && apply.isOk() && "admin routes are constant");
  (void)plan;
  (void)apply;
}

bool ConfigAdmin::handle(const http::Request& req, std::string_view path,
                         const http::Respond& respond) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return respondNotMatched(router_, req, path, respond);
  const bool apply = m->target == kApply;
  // The file and the plugins it names are checked here, on the admin listener's thread like
  // the other readers of the plugin list; the policies (Lua) and the registry on the worker.
  auto state = std::make_shared<config::StateFile>();
  try {
    *state = config::StateFile::parse(req.body());
  } catch (const config::ConfigError& e) {
    respond(failureResponse(req, Status::invalid(e.what())));
    return true;
  }
  if (Status s = checkPlugins(*state); !s) {
    respond(failureResponse(req, s));
    return true;
  }
  // The request stays alive and untouched until respond is called (http::RequestHandler).
  if (!worker_.trySubmit(
          [this, apply, &req, state, respond] { respond(run(req, apply, *state)); })) {
    respond(failureResponse(req, Status::unavailable("a configuration change is running; retry")));
  }
  return true;
}

http::Response ConfigAdmin::run(const http::Request& req, bool apply,
                                const config::StateFile& state) {
  if (Status s = checkPolicies(state); !s) return failureResponse(req, s);
  const tenants::DesiredState desired = desiredState(state);
  // The registry's part runs once and is rolled back, so an apply fails here (an unknown
  // plan, a plan still in use, another tenant's key) before any policy changes.
  auto planned = registry_.applyState(desired, /*dry_run=*/true);
  if (!planned) return failureResponse(req, planned.status());
  auto policy_changes = policyChanges(state);
  if (!apply) {
    planned->changes.insert(planned->changes.end(), policy_changes.begin(), policy_changes.end());
    return jsonResponse(req, 200, planJson(*planned, false));
  }
  std::vector<PolicyUndo> undo;
  if (Status s = applyPolicies(state, undo); !s) {
    undoPolicies(undo);
    return failureResponse(req, s);
  }
  auto applied = registry_.applyState(desired, /*dry_run=*/false);
  if (!applied) {
    undoPolicies(undo);
    return failureResponse(req, applied.status());
  }
  applied->changes.insert(applied->changes.end(), policy_changes.begin(), policy_changes.end());
  spdlog::info("admin: configuration applied: {} changes", applied->changes.size());
  return jsonResponse(req, 200, planJson(*applied, true));
}

bool ConfigAdmin::unchanged(const std::string& tenant, const config::StatePolicy& policy) const {
  return policies_.activeSource(tenant) ==
         lua::PolicyEngine::ActiveSource{policy.name, policy.source};
}

Status ConfigAdmin::checkPlugins(const config::StateFile& state) const {
  const auto running = plugins_.read();
  for (const auto& t : state.tenants) {
    const std::string who = "tenant \"" + t.id + "\"";
    for (const auto& id : t.plugins) {
      if (!running.find(id)) {
        return Status::invalid(who + " enables plugin \"" + id +
                               "\", which is not running on this host: add it to trellis.yaml's "
                               "plugins.enabled and restart trellisd first");
      }
    }
    // The parser kept plugin_config to the tenant's plugins, all running (above).
    for (const auto& [id, json] : t.plugin_config) {
      const auto& schema = running.find(id)->manifest().tenant_config;
      if (!schema) {
        return Status::invalid(who + ": plugin " + id +
                               " declares no configuration tenants may override (its manifest "
                               "has no \"tenant_config\")");
      }
      if (Status s = schema->validate(json); !s) {
        return Status::invalid(who + ": the configuration of " + id +
                               " does not fit its tenant_config: " + s.message());
      }
    }
  }
  return Status::ok();
}

Status ConfigAdmin::checkPolicies(const config::StateFile& state) {
  if (!state.policies) return Status::ok();
  for (const auto& [tenant, policy] : *state.policies) {
    const bool declared = std::any_of(state.tenants.begin(), state.tenants.end(),
                                      [&](const config::TenantEntry& t) { return t.id == tenant; });
    if (!tenant.empty() && !declared && !registry_.get(tenant)) {
      return Status::invalid(scopeName(tenant) + ": no such tenant in the registry or the file");
    }
    if (unchanged(tenant, policy)) continue;
    if (Status s = policies_.check(tenant, policy.name, policy.source); !s) {
      return Status::invalid(scopeName(tenant) + ": " + s.message());
    }
  }
  return Status::ok();
}

std::vector<tenants::StateChange> ConfigAdmin::policyChanges(const config::StateFile& state) const {
  std::vector<tenants::StateChange> out;
  if (!state.policies) return out;
  for (const auto& [tenant, policy] : *state.policies) {
    auto active = policies_.activeSource(tenant);
    if (!active) {
      out.push_back({"apply", scopeName(tenant), {policy.name}});
    } else if (active->name != policy.name || active->source != policy.source) {
      out.push_back({"update",
                     scopeName(tenant),
                     {active->name == policy.name ? policy.name + ": source changed"
                                                  : active->name + " -> " + policy.name}});
    }
  }
  for (const auto& info : policies_.list()) {
    if (state.policies->count(info.tenant) == 0) {
      out.push_back({"remove", scopeName(info.tenant), {info.name}});
    }
  }
  return out;
}

Status ConfigAdmin::applyPolicies(const config::StateFile& state, std::vector<PolicyUndo>& undo) {
  if (!state.policies) return Status::ok();
  for (const auto& [tenant, policy] : *state.policies) {
    if (unchanged(tenant, policy)) continue;
    const bool had_one = policies_.activeSource(tenant).has_value();
    auto applied = policies_.apply(tenant, policy.name, policy.source);
    if (!applied) return Status::invalid(scopeName(tenant) + ": " + applied.status().message());
    undo.push_back({tenant, had_one});
  }
  for (const auto& info : policies_.list()) {
    if (state.policies->count(info.tenant) > 0) continue;
    if (Status s = policies_.remove(info.tenant); !s) return s;
    undo.push_back({info.tenant, true});
  }
  return Status::ok();
}

void ConfigAdmin::undoPolicies(const std::vector<PolicyUndo>& undo) {
  for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
    Status s =
        it->rollback ? policies_.rollback(it->tenant).status() : policies_.remove(it->tenant);
    if (!s) {
      spdlog::error("admin: configuration apply failed and {} could not be put back: {}",
                    scopeName(it->tenant), s.toString());
    }
  }
}

}  // namespace trellis::kernel::runtime
