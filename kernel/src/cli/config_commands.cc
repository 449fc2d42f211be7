#include "cli/config_commands.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/output.h"
#include "trellis/kernel/config/config.h"

namespace trellis::cli {
namespace {

namespace fs = std::filesystem;

std::string readFile(const fs::path& path, const std::string& what) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    AdminClient::die(what + " " + path.string() + " is a directory", kExitUsage);
  std::ifstream in(path, std::ios::binary);
  if (!in) AdminClient::die("cannot read " + what + " " + path.string(), kExitUsage);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void printChange(const Poco::JSON::Object::Ptr& c) {
  std::printf("  %-13s %s\n", c->getValue<std::string>("action").c_str(),
              c->getValue<std::string>("object").c_str());
  auto details = c->getArray("details");
  for (size_t i = 0; details && i < details->size(); ++i) {
    std::printf("                  %s\n",
                details->getElement<std::string>(static_cast<unsigned>(i)).c_str());
  }
}

void printPlan(const std::string& body) {
  auto o = parseObject(body);
  const bool applied = o->getValue<bool>("applied");
  auto changes = o->getArray("changes");
  if (changes->size() == 0) {
    std::printf("no changes: the registry and the policies match the file\n");
  } else {
    std::printf("%s %zu change%s:\n", applied ? "applied" : "would apply", changes->size(),
                changes->size() == 1 ? "" : "s");
    for (size_t i = 0; i < changes->size(); ++i) {
      printChange(changes->getObject(static_cast<unsigned>(i)));
    }
  }
  auto drift = o->getArray("drift");
  if (drift->size() > 0) {
    std::printf("drift (in the registry, not in the file; left as it is):\n");
    for (size_t i = 0; i < drift->size(); ++i) {
      auto d = drift->getObject(static_cast<unsigned>(i));
      std::printf("  tenant %s: %s\n", d->getValue<std::string>("tenant").c_str(),
                  d->getValue<std::string>("detail").c_str());
    }
  }
}

}  // namespace

std::string stateWithPolicySources(const std::string& file) {
  const fs::path path = fs::absolute(file).lexically_normal();
  try {
    std::string state = kernel::config::StateFile::inlinePolicyFiles(readFile(path, "state file"),
                                                                     path.parent_path());
    kernel::config::StateFile::parse(state);  // the server checks it again; fail early here
    return state;
  } catch (const kernel::config::ConfigError& e) {
    AdminClient::die(path.string() + ": " + e.what(), kExitUsage);
  }
}

ConfigCommands::ConfigCommands(CLI::App& app, const AdminClient& admin) : admin_(admin) {
  auto* config = app.add_subcommand(
      "config", "Declarative configuration: plans, tenants, keys, grants, plugin config, policies");
  config->require_subcommand(1);
  diff_ = config->add_subcommand("diff", "Show what applying FILE would change, and the drift");
  diff_->add_option("file", file_, "state file (YAML)")->required();
  diff_->add_flag("--exit-code", exit_code_, "exit 5 if applying FILE would change anything");
  apply_ = config->add_subcommand("apply", "Apply FILE: all of it, or nothing");
  apply_->add_option("file", file_, "state file (YAML)")->required();
}

bool ConfigCommands::run() {
  if (!diff_->parsed() && !apply_->parsed()) return false;
  const std::string body = stateWithPolicySources(file_);
  const std::string answer =
      admin_.call("POST", diff_->parsed() ? "/v1/config/plan" : "/v1/config/apply", body);
  currentOutput().print(answer, printPlan);
  if (exit_code_ && parseObject(answer)->getArray("changes")->size() > 0) {
    std::exit(kExitChanges);
  }
  return true;
}

}  // namespace trellis::cli
