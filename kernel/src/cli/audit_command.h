// `trellis audit …` runs the auditor's verifier `trellis-audit …` with the same arguments, the
// way git runs git-foo: the `trellis-audit` next to the `trellis` executable, else the first on
// PATH, exec'd in place of this process (execv, no shell), so its standard streams and exit
// code are the command's own. Not found: a message naming where it looked, exit 127 (a shell's
// "command not found").
//
//   trellis audit verify pack.tar --public-key key.pem   ==   trellis-audit verify pack.tar …
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <vector>

namespace trellis::cli {

inline constexpr int kExitToolNotFound = 127;

class AuditCommand {
 public:
  explicit AuditCommand(CLI::App& app);
  // Runs `trellis-audit` if our subcommand was parsed (does not return then); false if not.
  bool run();

 private:
  CLI::App* audit_ = nullptr;
};

// Where `trellis audit` looks for `tool`, in order: beside the running executable, then each
// directory of `path_env` (PATH). Returns the first that is an executable file, or empty;
// `looked` gets every place tried, for the message.
std::filesystem::path findCompanionTool(const std::string& tool, const char* path_env,
                                        std::vector<std::string>& looked);

}  // namespace trellis::cli
