#include "cli/job_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdio>
#include <iostream>

#include "cli/output.h"

namespace trellis::cli {

JobCommands::JobCommands(CLI::App& app, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  auto* job = app.add_subcommand("job", "Inspect and drive the jobs plugins scheduled");
  job->require_subcommand(1);
  auto* list = job->add_subcommand("list", "List jobs: runs, failures, last error, next run");
  list->add_option("--tenant", tenant_, "Only this tenant's jobs");
  for (const char* verb : {"run", "cancel"}) {
    auto* c = job->add_subcommand(verb, std::string(verb) == "run"
                                            ? "Fire a job now (a dead-lettered one is retried)"
                                            : "Cancel a job");
    c->add_option("tenant", tenant_, "Tenant id")->required();
    c->add_option("plugin", plugin_, "Plugin id (namespace/name)")->required();
    c->add_option("name", name_, "Job name")->required();
    commands_[verb] = c;
  }
  commands_["list"] = list;
}

std::string JobCommands::path() const {
  if (plugin_.find('/') == std::string::npos) {
    AdminClient::die("plugin must be namespace/name, got " + plugin_);
  }
  return "/v1/jobs/" + tenant_ + "/" + plugin_ + "/" + name_;
}

bool JobCommands::run() {
  if (commands_.at("list")->parsed()) {
    std::string body =
        admin_.call("GET", "/v1/jobs" + (tenant_.empty() ? "" : "?tenant=" + tenant_));
    if (json_) {
      printStructured(body);
      return true;
    }
    auto jobs = parseObject(body)->getArray("jobs");
    std::printf("%-12s %-24s %-20s %-10s %6s %8s  %-20s %s\n", "TENANT", "PLUGIN", "JOB", "STATE",
                "RUNS", "FAILURES", "NEXT RUN", "LAST ERROR");
    for (size_t i = 0; i < jobs->size(); ++i) {
      auto j = jobs->getObject(static_cast<unsigned>(i));
      std::string next = j->has("next_run_ms") ? utcTime(j->getValue<int64_t>("next_run_ms")) : "-";
      std::printf(
          "%-12s %-24s %-20s %-10s %6s %8s  %-20s %s\n", j->getValue<std::string>("tenant").c_str(),
          j->getValue<std::string>("plugin").c_str(), j->getValue<std::string>("name").c_str(),
          j->getValue<std::string>("state").c_str(), j->get("runs").toString().c_str(),
          j->get("failures").toString().c_str(), next.c_str(),
          j->has("last_error") ? j->getValue<std::string>("last_error").c_str() : "");
    }
    return true;
  }
  if (commands_.at("run")->parsed()) {
    admin_.call("POST", path() + "/run");
    if (!json_)
      std::printf("job %s of %s for %s fired\n", name_.c_str(), plugin_.c_str(), tenant_.c_str());
    return true;
  }
  if (commands_.at("cancel")->parsed()) {
    admin_.call("DELETE", path());
    if (!json_)
      std::printf("job %s of %s for %s cancelled\n", name_.c_str(), plugin_.c_str(),
                  tenant_.c_str());
    return true;
  }
  return false;
}

}  // namespace trellis::cli
