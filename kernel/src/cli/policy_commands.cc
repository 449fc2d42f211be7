#include "cli/policy_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/output.h"
#include "trellis/kernel/config/config.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/kernel/lua/policy_store.h"
#include "trellis/kernel/storage/kv_store.h"

namespace trellis::cli {
namespace {

using Poco::JSON::Object;
namespace klua = kernel::lua;
namespace bhttp = boost::beast::http;

std::string readWhole(const std::string& file, const char* what) {
  std::ifstream in(file, std::ios::binary);
  if (!in) AdminClient::die(std::string("cannot read ") + what + " " + file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string stringify(const Poco::Dynamic::Var& v) {
  std::ostringstream out;
  Poco::JSON::Stringifier::stringify(v, out);
  return out.str();
}

// The "kv" of a dry-run input: {"plugin/id": {"key": "value"}} for the input's tenant.
class InputKv : public kernel::storage::KvStore {
 public:
  explicit InputKv(Object::Ptr kv) : kv_(std::move(kv)) {}
  Result<kernel::storage::KvEntry> get(const kernel::storage::Scope& scope,
                                       std::string_view key) override {
    if (!kv_ || !kv_->has(scope.plugin)) return Status::notFound("absent");
    auto plugin = kv_->getObject(scope.plugin);
    std::string k(key);
    if (!plugin || !plugin->has(k)) return Status::notFound("absent");
    return kernel::storage::KvEntry{k, plugin->get(k).toString(), 1};
  }
  Result<uint64_t> put(const kernel::storage::Scope&, std::string_view, std::string_view,
                       uint64_t) override {
    return Status::unimplemented("read-only");
  }
  void putAsync(const kernel::storage::Scope&, std::string_view, std::string_view, uint64_t,
                PutDone done) override {
    done(Status::unimplemented("read-only"));
  }
  Status remove(const kernel::storage::Scope&, std::string_view, uint64_t) override {
    return Status::unimplemented("read-only");
  }
  Result<std::vector<kernel::storage::KvEntry>> list(const kernel::storage::Scope&,
                                                     std::string_view, std::string_view,
                                                     uint32_t) override {
    return Status::unimplemented("read-only");
  }
  Result<uint64_t> storageBytes(std::string_view) override { return uint64_t{0}; }
  Status removeTenant(std::string_view) override { return Status::ok(); }

 private:
  Object::Ptr kv_;
};

std::string optString(const Object::Ptr& o, const std::string& name, const std::string& def) {
  return o && o->has(name) ? o->get(name).toString() : def;
}

void readHeaders(const Object::Ptr& o, bhttp::fields& fields) {
  if (!o || !o->has("headers")) return;
  auto h = o->getObject("headers");
  if (!h) AdminClient::die("input: headers must be an object of strings");
  for (const auto& name : h->getNames()) fields.set(name, h->get(name).toString());
}

std::string describe(const klua::Verdict& v, klua::Hook hook) {
  std::string out;
  if (hook == klua::Hook::kOnQuotaExceeded) {
    out = "refuse with status " + (v.status ? std::to_string(v.status) : "(default)") +
          ", message " + (v.reason.empty() ? "(default)" : "\"" + v.reason + "\"");
    for (const auto& e : v.headers) {
      out += e.value ? "; set " + e.name + ": " + *e.value : "; remove " + e.name;
    }
    return out;
  }
  switch (v.action) {
    case klua::Verdict::Action::kAllow: out = "allow"; break;
    case klua::Verdict::Action::kDeny:
      out = "deny " + std::to_string(v.status) + " \"" + v.reason + "\"";
      break;
    case klua::Verdict::Action::kModify: out = "modify"; break;
  }
  for (const auto& e : v.headers) {
    out += e.value ? "; set " + e.name + ": " + *e.value : "; remove " + e.name;
  }
  return out;
}

}  // namespace

PolicyCommands::PolicyCommands(CLI::App& app, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  auto* policy = app.add_subcommand("policy", "Manage admin Lua policies");
  policy->require_subcommand(1);
  auto* test = policy->add_subcommand("test", "Dry-run a policy file locally on an input");
  test->add_option("file", file_, "Policy file (.lua)")->required();
  test->add_option("--input", input_, "Input JSON: tenant, request, response, quota, manifest")
      ->required();
  test->add_option("--hook", hook_, "Hook to run")
      ->check(
          CLI::IsMember({"on_request", "on_response", "on_quota_exceeded", "on_plugin_install"}))
      ->capture_default_str();
  test->add_option("--config", config_, "trellis.yaml whose policy budgets to use");
  auto* apply = policy->add_subcommand("apply", "Apply a policy file as the next version");
  apply->add_option("file", file_, "Policy file (.lua)")->required();
  apply->add_option("--tenant", tenant_, "Apply to this tenant only (overrides the global)");
  auto* rollback = policy->add_subcommand("rollback", "Re-activate the version before");
  rollback->add_option("--tenant", tenant_, "The tenant's policy instead of the global one");
  auto* remove = policy->add_subcommand("remove", "Remove a policy (rollback restores it)");
  remove->add_option("--tenant", tenant_, "The tenant's policy (it falls back to the global)");
  commands_["remove"] = remove;
  commands_["test"] = test;
  commands_["apply"] = apply;
  commands_["rollback"] = rollback;
  commands_["list"] = policy->add_subcommand("list", "List the active policies");
}

bool PolicyCommands::run() {
  const std::string scope_path =
      tenant_.empty() ? "/v1/policies/global" : "/v1/policies/tenants/" + tenant_;
  auto printInfo = [&](const std::string& body, const char* verb) {
    if (json_) {
      printStructured(body);
      return;
    }
    auto o = parseObject(body);
    std::string hooks;
    auto list = o->getArray("hooks");
    for (size_t i = 0; i < list->size(); ++i) {
      hooks += (i ? ", " : "") + list->getElement<std::string>(static_cast<unsigned>(i));
    }
    std::printf("policy %s %s v%s (%s): hooks %s\n", o->getValue<std::string>("scope").c_str(),
                verb, o->get("version").toString().c_str(),
                o->getValue<std::string>("name").c_str(), hooks.c_str());
  };
  if (commands_.at("test")->parsed()) std::exit(test());
  if (commands_.at("apply")->parsed()) {
    Object body;
    body.set("name", std::filesystem::path(file_).filename().string());
    body.set("source", readWhole(file_, "policy file"));
    std::ostringstream out;
    body.stringify(out);
    printInfo(admin_.call("PUT", scope_path, out.str()), "applied:");
    return true;
  }
  if (commands_.at("rollback")->parsed()) {
    printInfo(admin_.call("POST", scope_path + "/rollback"), "rolled back to");
    return true;
  }
  if (commands_.at("remove")->parsed()) {
    admin_.call("DELETE", scope_path);
    if (!json_) {
      std::printf("policy %s removed\n",
                  tenant_.empty() ? "global" : ("tenant:" + tenant_).c_str());
    }
    return true;
  }
  if (commands_.at("list")->parsed()) {
    std::string body = admin_.call("GET", "/v1/policies");
    if (json_) {
      printStructured(body);
      return true;
    }
    auto list = parseObject(body)->getArray("policies");
    if (list->size() == 0) std::printf("no policies applied\n");
    for (size_t i = 0; i < list->size(); ++i) {
      printInfo(stringify(list->getObject(static_cast<unsigned>(i))), "active:");
    }
    return true;
  }
  return false;
}

int PolicyCommands::test() const {
  spdlog::set_level(spdlog::level::warn);  // the report is the output, not the engine's log
  const std::string source = readWhole(file_, "policy file");
  Object::Ptr input;
  const std::string text = readWhole(input_, "input file");
  try {
    auto parsed = Poco::JSON::Parser().parse(text);
    if (parsed.type() == typeid(Object::Ptr)) input = parsed.extract<Object::Ptr>();
  } catch (const Poco::Exception& e) {
    AdminClient::die("input " + input_ + " is not valid JSON: " + e.displayText());
  }
  if (!input) AdminClient::die("input " + input_ + " must be a JSON object (see docs/policies.md)");
  klua::PolicyOptions options;
  if (!config_.empty()) {
    try {
      auto cfg = kernel::config::Config::load(config_);
      options.budget = {cfg.policy.instructions, cfg.policy.memory_bytes, cfg.policy.wall_time};
      for (const auto& [hook, open] : cfg.policy.fail_open) {
        if (auto h = klua::hookFromName(hook)) {
          options.fail[static_cast<size_t>(*h)] =
              open ? klua::FailMode::kOpen : klua::FailMode::kClosed;
        }
      }
    } catch (const kernel::config::ConfigError& e) {
      AdminClient::die(e.what());
    }
  }
  InputKv kv(input->getObject("kv"));
  klua::PolicyEngine engine(options, nullptr, &kv, nullptr);
  const std::string name = std::filesystem::path(file_).filename().string();
  auto applied = engine.apply("", name, source);
  if (!applied) AdminClient::die(applied.status().message());

  tenants::TenantView tenant;
  auto t = input->getObject("tenant");
  tenant.id = optString(t, "id", "demo");
  tenant.plan = optString(t, "plan", "default");
  if (t && t->has("labels")) {
    auto labels = t->getObject("labels");
    for (const auto& k : labels->getNames()) tenant.labels[k] = labels->get(k).toString();
  }
  auto r = input->getObject("request");
  // The data plane's principals are always "key:<key id>".
  const std::string principal = optString(input, "principal", "key:dryrun0");
  if (!principal.starts_with("key:") || principal.size() == 4) {
    AdminClient::die("input " + input_ + ": principal \"" + principal +
                     "\" must be key:<key id>, as the data plane shows it");
  }
  const std::string route = optString(input, "route", optString(r, "path", "/"));
  const std::string remote = optString(r, "remote_addr", "127.0.0.1");
  kernel::http::Request req;
  req.method_string(optString(r, "method", "GET"));
  std::string target = optString(r, "path", "/");
  if (r && r->has("query")) target += "?" + r->get("query").toString();
  req.target(target);
  readHeaders(r, req.base());
  req.body() = std::string(r ? static_cast<size_t>(r->optValue<int>("body_size", 0)) : 0, 'x');
  klua::RequestContext rc{&tenant, std::string_view(principal).substr(4), route, remote, nullptr};

  klua::Verdict v;
  switch (*klua::hookFromName(hook_)) {
    case klua::Hook::kOnRequest: v = engine.onRequest(rc, req); break;
    case klua::Hook::kOnResponse: {
      auto o = input->getObject("response");
      kernel::http::Response res;
      res.result(static_cast<unsigned>(o ? o->optValue<int>("status", 200) : 200));
      readHeaders(o, res.base());
      v = engine.onResponse(rc, req, res);
      break;
    }
    case klua::Hook::kOnQuotaExceeded: {
      auto q = input->getObject("quota");
      tenants::Rejection rej;
      rej.quota = optString(q, "quota", "requests_per_second");
      rej.limit = q ? q->optValue<uint64_t>("limit", 10) : 10;
      rej.reset_seconds = q ? q->optValue<uint64_t>("reset_seconds", 1) : 1;
      rej.http_status = q ? q->optValue<unsigned>("status", 429) : 429;
      rej.decision_id = "dry-run";
      v = engine.onQuotaExceeded(rc, rej);
      break;
    }
    case klua::Hook::kOnPluginInstall: {
      auto m = input->getObject("manifest");
      klua::PluginInstall install;
      install.id = optString(m, "id", "");
      install.version = optString(m, "version", "");
      install.publisher = optString(m, "publisher", "");
      install.source = optString(m, "source", "");
      if (m && m->has("capabilities")) {
        auto caps = m->getArray("capabilities");
        for (size_t i = 0; i < caps->size(); ++i) {
          install.capabilities.push_back(caps->get(static_cast<unsigned>(i)).toString());
        }
      }
      install.tenant = optString(input->getObject("tenant"), "id", "");
      install.principal = principal;
      v = engine.onPluginInstall(install);
      break;
    }
  }
  const auto& b = options.budget;
  if (json_) {
    Object o(Poco::JSON_PRESERVE_KEY_ORDER);
    o.set("hook", hook_);
    o.set("evaluated", v.evaluated);
    o.set("decision", describe(v, *klua::hookFromName(hook_)));
    o.set("outcome", std::string(klua::outcomeName(v.eval.outcome)));
    if (!v.eval.error.empty()) o.set("error", v.eval.error);
    o.set("instructions", v.eval.usage.instructions);
    o.set("peak_memory_bytes", static_cast<uint64_t>(v.eval.usage.peak_memory_bytes));
    o.set("wall_us", static_cast<int64_t>(v.eval.usage.wall_time.count()));
    std::ostringstream text;
    o.stringify(text);
    printStructured(text.str());
  } else {
    std::printf("hook:         %s\n", hook_.c_str());
    if (!v.evaluated) {
      std::printf("decision:     allow (%s defines no %s)\n", name.c_str(), hook_.c_str());
      return 0;
    }
    if (v.failed) {
      std::printf("failed:       %s: %s\n", std::string(klua::outcomeName(v.eval.outcome)).c_str(),
                  v.eval.error.c_str());
    }
    std::printf("decision:     %s%s\n", describe(v, *klua::hookFromName(hook_)).c_str(),
                v.failed ? " (the hook's fail mode)" : "");
    // The hook counts in steps of 100 instructions.
    const auto used = v.eval.usage.instructions;
    std::printf("instructions: %s%llu of %llu\n", used < 100 ? "< " : "",
                static_cast<unsigned long long>(used < 100 ? 100 : used),
                static_cast<unsigned long long>(b.instructions));
    std::printf("peak memory:  %zu of %zu bytes\n", v.eval.usage.peak_memory_bytes, b.memory_bytes);
    std::printf("wall time:    %lld of %lld us\n",
                static_cast<long long>(v.eval.usage.wall_time.count()),
                static_cast<long long>(b.wall_time.count()));
  }
  return v.failed ? 1 : 0;
}

}  // namespace trellis::cli
