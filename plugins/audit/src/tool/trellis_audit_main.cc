// trellis-audit: the auditor's offline verifier.
//
//   trellis-audit verify <pack-dir> [--checkpoint <my-checkpoint.json>] [--quiet]
//
// <pack-dir> holds records.jsonl, checkpoints.jsonl and public-key.pem of one log. Exit
// codes (one per finding; see plugins/audit/README.md):
//   0 ok, 2 usage, 3 bad pack, 10 modified, 11 deleted, 12 inserted, 13 reordered,
//   14 truncated, 15 bad signature, 16 forked checkpoints, 17 your checkpoint inconsistent.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "core/verify.h"

namespace {

int usage() {
  std::cerr << "usage: trellis-audit verify <pack-dir> [--checkpoint <file>] [--quiet]\n"
               "  <pack-dir>: records.jsonl, checkpoints.jsonl, public-key.pem of one log\n"
               "  --checkpoint: a checkpoint you kept earlier; the pack must extend it\n";
  return static_cast<int>(trellis::audit::VerifyCode::kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  using trellis::audit::VerifyCode;
  if (argc < 3 || std::string(argv[1]) != "verify") return usage();
  std::string dir = argv[2];
  std::optional<std::string> mine;
  bool quiet = false;
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--checkpoint" && i + 1 < argc) {
      std::ifstream in(argv[++i], std::ios::binary);
      if (!in) {
        std::cerr << "trellis-audit: cannot read " << argv[i] << "\n";
        return static_cast<int>(VerifyCode::kBadPack);
      }
      std::stringstream text;
      text << in.rdbuf();
      mine = text.str();
    } else if (arg == "--quiet") {
      quiet = true;
    } else {
      return usage();
    }
  }
  const auto report = trellis::audit::verifyPackDir(dir, mine);
  if (!quiet) {
    for (const auto& note : report.notes) std::cout << "  " << note << "\n";
  }
  (report.code == VerifyCode::kOk ? std::cout : std::cerr)
      << (report.code == VerifyCode::kOk ? "" : "FAIL (")
      << (report.code == VerifyCode::kOk
              ? ""
              : std::string(trellis::audit::codeName(report.code)) + "): ")
      << report.message << "\n";
  return static_cast<int>(report.code);
}
