// The offline verifier behind `trellis-audit verify`: checks an evidence pack (the
// records of one log, its checkpoints and the log's public key) without trusting the
// operator, and names the first kind of tampering it finds with its own exit code.
//
//   VerifyReport r = verifyPackDir("/tmp/pack", client_checkpoint_json);
//   std::cout << r.message; return static_cast<int>(r.code);
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace trellis::audit {

enum class VerifyCode : int {
  kOk = 0,
  kUsage = 2,          // bad arguments
  kBadPack = 3,        // a file missing or unreadable, a checkpoint or key that is not one
  kModified = 10,      // a record's bytes differ from what the chain or a checkpoint signed
  kDeleted = 11,       // a sequence number is missing
  kInserted = 12,      // a record that was never in the log
  kReordered = 13,     // records out of order
  kTruncated = 14,     // fewer records than a signed checkpoint covers
  kBadSignature = 15,  // a checkpoint the log's key did not sign
  kFork = 16,          // two signed checkpoints that cannot both describe one log
  kInconsistent = 17,  // the client's own checkpoint is not a prefix of the newest one
};

struct VerifyReport {
  VerifyCode code = VerifyCode::kOk;
  std::string message;             // one line, for the auditor
  std::vector<std::string> notes;  // what was checked
};

std::string_view codeName(VerifyCode code);

// `records` and `checkpoints`: the JSONL lines (no newlines); `public_key`: PEM or hex.
// `client_checkpoint`: a checkpoint the auditor kept earlier (JSON), if any.
VerifyReport verifyEvidence(const std::vector<std::string>& records,
                            const std::vector<std::string>& checkpoints,
                            const std::string& public_key,
                            const std::optional<std::string>& client_checkpoint);

// Reads records.jsonl, checkpoints.jsonl and public-key.pem from `dir`.
VerifyReport verifyPackDir(const std::filesystem::path& dir,
                           const std::optional<std::string>& client_checkpoint);

}  // namespace trellis::audit
