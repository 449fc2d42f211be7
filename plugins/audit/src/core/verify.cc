#include "core/verify.h"

#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "core/ed25519.h"
#include "core/merkle.h"
#include "core/record.h"
#include "core/retention.h"
#include "core/tar.h"

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
                            const std::optional<std::string>& client_checkpoint,
                            const std::optional<std::string>& purged_json) {
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

  // What retention purged: records 1..purged.through are represented by their leaf hashes.
  PurgedPrefix purged;
  if (purged_json) {
    auto p = PurgedPrefix::fromJson(*purged_json, true);
    if (!p) return fail(VerifyCode::kBadPack, "purged.json: " + p.status().message());
    purged = std::move(*p);
  }
  const uint64_t base = purged.through;

  // 3. Sequence numbers: base+1, base+2 … in order, none twice, none missing.
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
      const bool contiguous = !first_line.empty() && first_line.begin()->first == base + 1 &&
                              first_line.rbegin()->first == base + parsed.size();
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
    if (parsed[i].seq != base + i + 1) {
      const bool purge_unknown = i == 0 && base == 0 && parsed[i].seq > 1;
      return fail(VerifyCode::kDeleted,
                  "record seq " + std::to_string(base + i + 1) + " is missing (line " +
                      std::to_string(i + 1) + " holds seq " + std::to_string(parsed[i].seq) +
                      "): a record was deleted" +
                      (purge_unknown ? " (if retention purged the log's first records, put "
                                       "the log's purged.json in the pack)"
                                     : ""));
    }
  }
  if (base > 0) {
    notes.push_back("records 1.." + std::to_string(base) + " purged by retention; their " +
                    std::to_string(base) + " leaf hashes come from purged.json");
  }
  notes.push_back(std::to_string(records.size()) + " record(s) numbered " +
                  std::to_string(base + 1) + ".." + std::to_string(base + records.size()) +
                  " in order");

  // 4. The hash chain: every record names the SHA-256 of the one before it.
  std::vector<Hash> line_hash(records.size());
  for (size_t i = 0; i < records.size(); ++i) line_hash[i] = sha256(records[i]);
  for (size_t i = 0; i < records.size(); ++i) {
    const Hash expected = i == 0 ? purged.chain : line_hash[i - 1];
    if (parsed[i].prev == toHex(expected)) continue;
    // The record before this one was slipped in: this one still links past it.
    const Hash before = i == 1 ? purged.chain : line_hash[i >= 2 ? i - 2 : 0];
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
  for (const Hash& leaf : purged.leaves) tree.appendLeafHash(leaf);
  for (const auto& r : records) tree.append(r);
  if (!cps.empty()) {
    const Checkpoint& newest = cps.back();
    if (newest.size < base) {
      return fail(VerifyCode::kBadPack, "purged.json covers " + std::to_string(base) +
                                            " records, more than any checkpoint signs (" +
                                            std::to_string(newest.size) + ")");
    }
    if (newest.size > tree.size()) {
      return fail(VerifyCode::kTruncated, "the log holds " + std::to_string(tree.size()) +
                                              " records but a signed checkpoint covers " +
                                              std::to_string(newest.size) +
                                              ": records at the end were removed");
    }
    // Chain heads inside the purged prefix are gone: those checkpoints check by root only.
    auto matches = [&](const Checkpoint& cp) {
      if (*tree.root(cp.size) != cp.root) return false;
      if (cp.size < base) return true;
      const Hash chain = cp.size == base ? purged.chain : line_hash[cp.size - base - 1];
      return chain == cp.chain;
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

VerifyReport readPack(const std::filesystem::path& path, PackFiles& files) {
  auto slurp = [](const std::filesystem::path& p) -> std::optional<std::string> {
    std::ifstream in(p, std::ios::binary);
    if (!in) return std::nullopt;
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    for (const char* name : {"records.jsonl", "checkpoints.jsonl", "public-key.pem", "purged.json",
                             "proofs.jsonl", "manifest.json", "verification.txt"}) {
      if (auto bytes = slurp(path / name)) files[name] = std::move(*bytes);
    }
    return {};
  }
  std::optional<std::string> bytes;
  if (path == "-") {  // an archive piped in: trellis x trellis/audit GET …/evidence | …
    std::stringstream text;
    text << std::cin.rdbuf();
    bytes = text.str();
  } else if (std::filesystem::is_regular_file(path, ec)) {
    bytes = slurp(path);
  }
  if (!bytes) return fail(VerifyCode::kBadPack, "missing or unreadable " + path.string());
  auto archive = readTar(*bytes);
  if (!archive)
    return fail(VerifyCode::kBadPack, path.string() + ": " + archive.status().message());
  files = std::move(*archive);
  return {};
}

namespace {

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(std::move(line));
  }
  return out;
}

// manifest.json: {"files": {"<name>": "<sha-256 hex>"}, …}. Every file it names must be
// in the pack with that digest (a pack damaged or edited in transit).
std::optional<VerifyReport> checkManifest(const PackFiles& files) {
  auto it = files.find("manifest.json");
  if (it == files.end()) return std::nullopt;
  try {
    auto o = Poco::JSON::Parser().parse(it->second).extract<Poco::JSON::Object::Ptr>();
    auto listed = o->getObject("files");
    if (!listed) return fail(VerifyCode::kBadPack, "manifest.json: no \"files\" object");
    for (const auto& [name, digest] : *listed) {
      auto file = files.find(name);
      if (file == files.end()) {
        return fail(VerifyCode::kBadPack, "manifest.json lists " + name + ", which is missing");
      }
      if (toHex(sha256(file->second)) != digest.toString()) {
        return fail(VerifyCode::kBadPack, name + " does not match its SHA-256 in manifest.json");
      }
    }
  } catch (const Poco::Exception& e) {
    return fail(VerifyCode::kBadPack, "manifest.json: " + e.displayText());
  } catch (const std::exception& e) {
    return fail(VerifyCode::kBadPack, std::string("manifest.json: ") + e.what());
  }
  return std::nullopt;
}

// proofs.jsonl: {"from","to","from_root","to_root","proof":[…]} per line. Each must be a
// valid RFC 6962 consistency proof between two checkpoints the pack's key signed.
std::optional<VerifyReport> checkProofs(const PackFiles& files, const std::vector<std::string>& cps,
                                        std::string_view key) {
  auto it = files.find("proofs.jsonl");
  if (it == files.end()) return std::nullopt;
  std::map<uint64_t, Hash> signed_roots;
  for (const auto& line : cps) {
    if (auto cp = Checkpoint::fromJson(line); cp && verifyCheckpoint(*cp, key)) {
      signed_roots[cp->size] = cp->root;
    }
  }
  const auto lines = splitLines(it->second);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = "proofs.jsonl line " + std::to_string(i + 1);
    try {
      auto o = Poco::JSON::Parser().parse(lines[i]).extract<Poco::JSON::Object::Ptr>();
      const auto from = o->getValue<uint64_t>("from");
      const auto to = o->getValue<uint64_t>("to");
      std::vector<Hash> proof;
      auto list = o->getArray("proof");
      for (size_t j = 0; list && j < list->size(); ++j) {
        auto h = hashFromHex(list->getElement<std::string>(static_cast<unsigned>(j)));
        if (!h) return fail(VerifyCode::kBadPack, where + ": a proof hash is not hex");
        proof.push_back(*h);
      }
      auto a = signed_roots.find(from), b = signed_roots.find(to);
      if (a == signed_roots.end() || b == signed_roots.end()) {
        return fail(VerifyCode::kBadPack, where + ": no signed checkpoint at size " +
                                              std::to_string(from) + " or " + std::to_string(to));
      }
      if (!verifyConsistency(from, to, proof, a->second, b->second)) {
        return fail(VerifyCode::kFork, where + ": the checkpoint at size " + std::to_string(to) +
                                           " does not extend the one at size " +
                                           std::to_string(from) + ": the log forked");
      }
    } catch (const Poco::Exception& e) {
      return fail(VerifyCode::kBadPack, where + ": " + e.displayText());
    }
  }
  return std::nullopt;
}

}  // namespace

VerifyReport verifyPackFiles(const PackFiles& files,
                             const std::optional<std::string>& client_checkpoint,
                             const std::optional<std::string>& trusted_key) {
  for (const char* required : {"records.jsonl", "checkpoints.jsonl"}) {
    if (!files.count(required))
      return fail(VerifyCode::kBadPack, std::string("missing ") + required);
  }
  if (!trusted_key && !files.count("public-key.pem")) {
    return fail(VerifyCode::kBadPack, "missing public-key.pem (or pass your own copy of the key)");
  }
  if (auto bad = checkManifest(files)) return *bad;
  const auto records = splitLines(files.at("records.jsonl"));
  const auto checkpoints = splitLines(files.at("checkpoints.jsonl"));
  const std::string key_text = trusted_key ? *trusted_key : files.at("public-key.pem");
  std::optional<std::string> purged;
  if (auto it = files.find("purged.json"); it != files.end()) purged = it->second;
  VerifyReport report = verifyEvidence(records, checkpoints, key_text, client_checkpoint, purged);
  if (report.code != VerifyCode::kOk) return report;
  if (auto key = ed25519PublicKeyFromText(key_text)) {
    if (auto bad = checkProofs(files, checkpoints, *key)) return *bad;
    if (files.count("proofs.jsonl"))
      report.notes.push_back("proofs.jsonl: every consistency proof verified");
  }
  if (trusted_key) report.notes.push_back("checked against your copy of the public key");
  return report;
}

VerifyReport verifyPack(const std::filesystem::path& path,
                        const std::optional<std::string>& client_checkpoint,
                        const std::optional<std::string>& trusted_key) {
  PackFiles files;
  if (VerifyReport r = readPack(path, files); r.code != VerifyCode::kOk) return r;
  return verifyPackFiles(files, client_checkpoint, trusted_key);
}

}  // namespace trellis::audit
