#include "core/verify.h"

#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/ed25519.h"
#include "core/merkle.h"
#include "core/record.h"

namespace trellis::audit {
namespace {

VerifyReport fail(VerifyCode code, std::string message, std::vector<std::string> notes = {}) {
  return {code, std::move(message), std::move(notes)};
}

struct Parsed {
  uint64_t seq = 0;
  std::string prev;
};

std::string shortHex(const Hash& h) {
  return toHex(h).substr(0, 16);
}

}  // namespace

std::string_view codeName(VerifyCode code) {
  switch (code) {
    case VerifyCode::kOk: return "ok";
    case VerifyCode::kUsage: return "usage";
    case VerifyCode::kBadPack: return "bad-pack";
    case VerifyCode::kModified: return "modified";
    case VerifyCode::kDeleted: return "deleted";
    case VerifyCode::kInserted: return "inserted";
    case VerifyCode::kReordered: return "reordered";
    case VerifyCode::kTruncated: return "truncated";
    case VerifyCode::kBadSignature: return "bad-signature";
    case VerifyCode::kFork: return "fork";
    case VerifyCode::kInconsistent: return "inconsistent";
  }
  return "unknown";
}

VerifyReport verifyEvidence(const std::vector<std::string>& records,
                            const std::vector<std::string>& checkpoint_lines,
                            const std::string& public_key_text,
                            const std::optional<std::string>& client_checkpoint) {
  std::vector<std::string> notes;
  auto key = ed25519PublicKeyFromText(public_key_text);
  if (!key) return fail(VerifyCode::kBadPack, "public key: " + key.status().message());
  const std::string kid = keyId(*key);

  // 1. Checkpoints: each parses and carries the log key's signature.
  std::vector<Checkpoint> cps;
  for (size_t i = 0; i < checkpoint_lines.size(); ++i) {
    auto cp = Checkpoint::fromJson(checkpoint_lines[i]);
    if (!cp) {
      return fail(VerifyCode::kBadPack,
                  "checkpoints.jsonl line " + std::to_string(i + 1) + ": " + cp.status().message());
    }
    if (!verifyCheckpoint(*cp, *key)) {
      return fail(VerifyCode::kBadSignature,
                  "checkpoint at size " + std::to_string(cp->size) + " (checkpoints.jsonl line " +
                      std::to_string(i + 1) + ") is not signed by key " + kid);
    }
    if (!cps.empty() && cp->origin != cps.front().origin) {
      return fail(VerifyCode::kBadPack, "checkpoints of two logs in one pack: " +
                                            cps.front().origin + " and " + cp->origin);
    }
    cps.push_back(std::move(*cp));
  }
  notes.push_back(std::to_string(cps.size()) + " checkpoint signature(s) valid (key " + kid + ")");
  std::stable_sort(cps.begin(), cps.end(),
                   [](const Checkpoint& a, const Checkpoint& b) { return a.size < b.size; });
  // 2. Two signed statements about the same size must agree.
  for (size_t i = 1; i < cps.size(); ++i) {
    if (cps[i].size == cps[i - 1].size &&
        (cps[i].root != cps[i - 1].root || cps[i].chain != cps[i - 1].chain)) {
      return fail(VerifyCode::kFork, "two signed checkpoints at size " +
                                         std::to_string(cps[i].size) + " have different roots (" +
                                         shortHex(cps[i - 1].root) + "…, " + shortHex(cps[i].root) +
                                         "…): the log forked");
    }
  }

  // 3. Sequence numbers: 1, 2, 3 … in order, none twice, none missing.
  std::vector<Parsed> parsed(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    try {
      Poco::JSON::Parser parser;
      auto o = parser.parse(records[i]).extract<Poco::JSON::Object::Ptr>();
      parsed[i].seq = o->getValue<uint64_t>("seq");
      parsed[i].prev = o->getValue<std::string>("prev");
    } catch (const Poco::Exception&) {
      return fail(VerifyCode::kModified, "records.jsonl line " + std::to_string(i + 1) +
                                             " is not an audit record (altered or damaged)");
    }
  }
  std::map<uint64_t, size_t> first_line;
  for (size_t i = 0; i < parsed.size(); ++i) {
    auto [it, fresh] = first_line.emplace(parsed[i].seq, i);
    if (!fresh) {
      return fail(VerifyCode::kInserted, "record seq " + std::to_string(parsed[i].seq) +
                                             " appears twice (lines " +
                                             std::to_string(it->second + 1) + " and " +
                                             std::to_string(i + 1) + "): a record was inserted");
    }
  }
  for (size_t i = 1; i < parsed.size(); ++i) {
    if (parsed[i].seq < parsed[i - 1].seq) {
      // A permutation of 1..n is a reordering; a number that belongs nowhere was added.
      const bool contiguous = !first_line.empty() && first_line.begin()->first == 1 &&
                              first_line.rbegin()->first == parsed.size();
      if (contiguous) {
        return fail(VerifyCode::kReordered,
                    "record seq " + std::to_string(parsed[i].seq) + " (line " +
                        std::to_string(i + 1) + ") comes after seq " +
                        std::to_string(parsed[i - 1].seq) + ": records were reordered");
      }
      return fail(VerifyCode::kInserted, "record seq " + std::to_string(parsed[i - 1].seq) +
                                             " (line " + std::to_string(i) +
                                             ") is out of place: a record was inserted");
    }
  }
  for (size_t i = 0; i < parsed.size(); ++i) {
    if (parsed[i].seq != i + 1) {
      return fail(VerifyCode::kDeleted, "record seq " + std::to_string(i + 1) +
                                            " is missing (line " + std::to_string(i + 1) +
                                            " holds seq " + std::to_string(parsed[i].seq) +
                                            "): a record was deleted");
    }
  }
  notes.push_back(std::to_string(records.size()) + " record(s) numbered 1.." +
                  std::to_string(records.size()) + " in order");

  // 4. The hash chain: every record names the SHA-256 of the one before it.
  std::vector<Hash> line_hash(records.size());
  for (size_t i = 0; i < records.size(); ++i) line_hash[i] = sha256(records[i]);
  for (size_t i = 0; i < records.size(); ++i) {
    const Hash expected = i == 0 ? kZeroHash : line_hash[i - 1];
    if (parsed[i].prev == toHex(expected)) continue;
    // The record before this one was slipped in: this one still links past it.
    const Hash before = i == 1 ? kZeroHash : line_hash[i >= 2 ? i - 2 : 0];
    if (i >= 1 && parsed[i].prev == toHex(before)) {
      return fail(VerifyCode::kInserted, "record seq " + std::to_string(parsed[i - 1].seq) +
                                             " (line " + std::to_string(i) +
                                             ") is not in the chain: a record was inserted");
    }
    const uint64_t culprit = i == 0 ? parsed[i].seq : parsed[i - 1].seq;
    return fail(VerifyCode::kModified, "record seq " + std::to_string(culprit) +
                                           " was modified: the chain link of seq " +
                                           std::to_string(parsed[i].seq) + " no longer matches");
  }
  notes.push_back("hash chain intact");

  // 5. The records against what the checkpoints signed.
  MerkleTree tree;
  for (const auto& r : records) tree.append(r);
  if (!cps.empty()) {
    const Checkpoint& newest = cps.back();
    if (newest.size > tree.size()) {
      return fail(VerifyCode::kTruncated, "the log holds " + std::to_string(tree.size()) +
                                              " records but a signed checkpoint covers " +
                                              std::to_string(newest.size) +
                                              ": records at the end were removed");
    }
    auto matches = [&](const Checkpoint& cp) {
      const Hash chain = cp.size == 0 ? kZeroHash : line_hash[cp.size - 1];
      return *tree.root(cp.size) == cp.root && chain == cp.chain;
    };
    if (!matches(newest)) {
      return fail(VerifyCode::kModified, "the records up to size " + std::to_string(newest.size) +
                                             " do not hash to the signed root " +
                                             shortHex(newest.root) + "…: records were modified");
    }
    for (const auto& cp : cps) {
      if (!matches(cp)) {
        return fail(VerifyCode::kFork, "signed checkpoint at size " + std::to_string(cp.size) +
                                           " (root " + shortHex(cp.root) +
                                           "…) is not a prefix of the log the checkpoint at size " +
                                           std::to_string(newest.size) + " signs: the log forked");
      }
    }
    notes.push_back("records match " + std::to_string(cps.size()) +
                    " checkpoint(s); newest at size " + std::to_string(newest.size));
    if (tree.size() > newest.size) {
      notes.push_back(std::to_string(tree.size() - newest.size) +
                      " record(s) after the newest checkpoint are chained but not yet signed");
    }
  } else {
    notes.push_back("no checkpoints: nothing signed to check the records against");
  }

  // 6. A checkpoint the auditor kept from before: the newest must extend it.
  if (client_checkpoint) {
    auto mine = Checkpoint::fromJson(*client_checkpoint);
    if (!mine) return fail(VerifyCode::kBadPack, "your checkpoint: " + mine.status().message());
    if (!verifyCheckpoint(*mine, *key)) {
      return fail(
          VerifyCode::kBadSignature,
          "your checkpoint at size " + std::to_string(mine->size) + " is not signed by key " + kid);
    }
    if (cps.empty() || mine->size > cps.back().size) {
      return fail(VerifyCode::kTruncated,
                  "your checkpoint covers " + std::to_string(mine->size) +
                      " records, more than the pack's newest checkpoint: records were removed");
    }
    const Checkpoint& newest = cps.back();
    std::vector<Hash> proof;
    if (mine->size > 0 && mine->size < newest.size) {
      proof = *tree.consistencyProof(mine->size, newest.size);
    }
    if (!verifyConsistency(mine->size, newest.size, proof, mine->root, newest.root)) {
      return fail(VerifyCode::kInconsistent,
                  "your checkpoint at size " + std::to_string(mine->size) + " (root " +
                      shortHex(mine->root) + "…) is not a prefix of the newest at size " +
                      std::to_string(newest.size) + ": the log was rewritten");
    }
    notes.push_back("consistency proof from your checkpoint (size " + std::to_string(mine->size) +
                    ") to size " + std::to_string(newest.size) + " verified (" +
                    std::to_string(proof.size()) + " hashes)");
  }
  return {VerifyCode::kOk, "ok: the evidence pack verifies", std::move(notes)};
}

VerifyReport verifyPackDir(const std::filesystem::path& dir,
                           const std::optional<std::string>& client_checkpoint) {
  auto readLines = [](const std::filesystem::path& p, std::vector<std::string>& out) {
    std::ifstream in(p, std::ios::binary);
    if (!in) return false;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) out.push_back(std::move(line));
    }
    return true;
  };
  std::vector<std::string> records, checkpoints;
  if (!readLines(dir / "records.jsonl", records)) {
    return fail(VerifyCode::kBadPack, "missing or unreadable " + (dir / "records.jsonl").string());
  }
  if (!readLines(dir / "checkpoints.jsonl", checkpoints)) {
    return fail(VerifyCode::kBadPack,
                "missing or unreadable " + (dir / "checkpoints.jsonl").string());
  }
  std::ifstream key_in(dir / "public-key.pem", std::ios::binary);
  if (!key_in) {
    return fail(VerifyCode::kBadPack, "missing or unreadable " + (dir / "public-key.pem").string());
  }
  std::stringstream key;
  key << key_in.rdbuf();
  return verifyEvidence(records, checkpoints, key.str(), client_checkpoint);
}

}  // namespace trellis::audit
