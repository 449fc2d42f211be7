// The offline verifier behind `trellis-audit verify`: checks an evidence pack (the
// records of one log, its checkpoints and the log's public key) without trusting the
// operator, and names the first kind of tampering it finds with its own exit code.
//
//   VerifyReport r = verifyPackDir("/tmp/pack", client_checkpoint_json);
//   std::cout << r.message; return static_cast<int>(r.code);
#pragma once

#include <filesystem>
#include <map>
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
// `purged`: purged.json of a log whose first records retention purged (core/retention.h):
// the records then start after it, and its leaf hashes stand in for the purged ones.
VerifyReport verifyEvidence(const std::vector<std::string>& records,
                            const std::vector<std::string>& checkpoints,
                            const std::string& public_key,
                            const std::optional<std::string>& client_checkpoint,
                            const std::optional<std::string>& purged = std::nullopt);

// An evidence pack: records.jsonl, checkpoints.jsonl and public-key.pem of one log;
// purged.json after a retention purge; as exported (GET …/evidence) also proofs.jsonl
// (consistency proofs between consecutive checkpoints), manifest.json (each file's
// SHA-256) and verification.txt (what the server's own run of this verifier said).
using PackFiles = std::map<std::string, std::string>;

// The pack's files from a directory or a tar archive (core/tar.h; "-": from stdin);
// kBadPack on failure.
VerifyReport readPack(const std::filesystem::path& path, PackFiles& files);
// Checks the manifest's digests and the proofs, then verifyEvidence(). `trusted_key`, if
// given, is the auditor's own copy of the public key and replaces the pack's.
VerifyReport verifyPackFiles(const PackFiles& files,
                             const std::optional<std::string>& client_checkpoint,
                             const std::optional<std::string>& trusted_key = std::nullopt);
// readPack() then verifyPackFiles().
VerifyReport verifyPack(const std::filesystem::path& path,
                        const std::optional<std::string>& client_checkpoint,
                        const std::optional<std::string>& trusted_key = std::nullopt);

}  // namespace trellis::audit
