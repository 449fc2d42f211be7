// trellis-audit: the auditor's offline verifier.
//
//   trellis-audit verify <pack> [--checkpoint <my-checkpoint.json>] [--public-key <key.pem>]
//                        [--quiet]
//
// <pack> is the tar archive GET …/logs/<log>/evidence exports ("-": read it from stdin, so
// a live log is checked with `trellis x trellis/audit GET logs/acme/evidence | trellis-audit
// verify - --public-key key.pem`), or a directory holding
// records.jsonl, checkpoints.jsonl and public-key.pem of one log (and purged.json if
// retention purged the log's first records). Exit
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
  std::cerr
      << "usage: trellis-audit verify <pack> [--checkpoint <file>] [--public-key <file>]"
         " [--quiet]\n"
         "  <pack>: the tar archive of GET .../logs/<log>/evidence (- for stdin), or a\n"
         "          directory with records.jsonl, checkpoints.jsonl, public-key.pem\n"
         "          (and purged.json)\n"
         "  --checkpoint: a checkpoint you kept earlier; the pack must extend it\n"
         "  --public-key: your own copy of the log's public key, used instead of the pack's\n";
  return static_cast<int>(trellis::audit::VerifyCode::kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  using trellis::audit::VerifyCode;
  if (argc < 3 || std::string(argv[1]) != "verify") return usage();
  std::string pack = argv[2];
  std::optional<std::string> mine, key;
  bool quiet = false;
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "--checkpoint" || arg == "--public-key") && i + 1 < argc) {
      std::ifstream in(argv[++i], std::ios::binary);
      if (!in) {
        std::cerr << "trellis-audit: cannot read " << argv[i] << "\n";
        return static_cast<int>(VerifyCode::kBadPack);
      }
      std::stringstream text;
      text << in.rdbuf();
      (arg == "--checkpoint" ? mine : key) = text.str();
    } else if (arg == "--quiet") {
      quiet = true;
    } else {
      return usage();
    }
  }
  const auto report = trellis::audit::verifyPack(pack, mine, key);
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
