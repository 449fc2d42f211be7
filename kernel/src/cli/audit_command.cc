#include "cli/audit_command.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <sstream>

namespace trellis::cli {
namespace {

constexpr const char* kAuditTool = "trellis-audit";

bool isExecutableFile(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

}  // namespace

std::filesystem::path findCompanionTool(const std::string& tool, const char* path_env,
                                        std::vector<std::string>& looked) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = self.parent_path() / tool;
    looked.push_back(beside.parent_path().string());
    if (isExecutableFile(beside)) return beside;
  }
  std::stringstream dirs(path_env ? path_env : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) dir = ".";  // an empty PATH entry means the current directory
    if (std::find(looked.begin(), looked.end(), dir) != looked.end()) continue;
    looked.push_back(dir);
    const auto candidate = std::filesystem::path(dir) / tool;
    if (isExecutableFile(candidate)) return candidate;
  }
  return {};
}

AuditCommand::AuditCommand(CLI::App& app) {
  audit_ = app.add_subcommand(
      "audit",
      "Run the audit log verifier trellis-audit with these arguments (trellis audit verify "
      "<pack> …; plugins/audit/README.md)");
  // Everything after `audit` is trellis-audit's, its --help included.
  audit_->prefix_command();
  audit_->allow_extras();
  audit_->fallthrough(false);  // none of them is the parent's to parse
  audit_->set_help_flag();
}

bool AuditCommand::run() {
  if (!audit_->parsed()) return false;
  std::vector<std::string> looked;
  const auto tool = findCompanionTool(kAuditTool, std::getenv("PATH"), looked);
  if (tool.empty()) {
    std::string where;
    for (const auto& dir : looked) where += (where.empty() ? "" : ", ") + dir;
    std::cerr << "trellis audit: " << kAuditTool << " not found (looked beside trellis and on "
              << "PATH: " << where << "); install it with the trellis/audit plugin, or put it "
              << "on PATH\n";
    std::exit(kExitToolNotFound);
  }
  std::vector<std::string> args = audit_->remaining();
  std::vector<char*> argv;
  std::string name = tool.string();
  argv.push_back(name.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::cout.flush();
  ::execv(name.c_str(), argv.data());
  std::cerr << "trellis audit: cannot run " << name << ": " << std::strerror(errno) << "\n";
  std::exit(kExitToolNotFound);
}

}  // namespace trellis::cli
