// An RFC 6962 (RFC 9162 §2.1) Merkle tree: leaf = SHA-256(0x00 || d), node =
// SHA-256(0x01 || left || right), the root of any prefix of the log, and inclusion and
// consistency proofs, generated and verified by the algorithms of the RFCs.
//
//   MerkleTree tree;
//   tree.append(record_bytes);                       // one leaf per record
//   Hash root = tree.root(tree.size());
//   auto path = tree.inclusionProof(3, tree.size()); // Result<std::vector<Hash>>
//   bool ok = verifyInclusion(3, tree.size(), leafHash(record_bytes), *path, root);
//
// The tree keeps every complete subtree's hash (about two hashes per leaf), so appending is
// amortised O(1) and the root of any size costs O(log n) hashes.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/hash.h"
#include "trellis/status.hpp"

namespace trellis::audit {

Hash leafHash(std::string_view data);
Hash nodeHash(const Hash& left, const Hash& right);
// The root of the empty tree: SHA-256 of nothing.
Hash emptyRoot();

class MerkleTree {
 public:
  void append(std::string_view data) { appendLeafHash(leafHash(data)); }
  void appendLeafHash(const Hash& leaf);
  // Forgets the leaves from `size` on (size <= size()): undoes appends not yet stored.
  void truncate(uint64_t size);
  uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  const Hash& leaf(uint64_t index) const { return levels_[0][index]; }

  // MTH(D[0:size]); INVALID past the tree's size.
  Result<Hash> root(uint64_t size) const;
  // PATH(index, D[0:size]) of RFC 6962 §2.1.1.
  Result<std::vector<Hash>> inclusionProof(uint64_t index, uint64_t size) const;
  // PROOF(first, D[0:second]) of RFC 6962 §2.1.2; 0 < first <= second <= size().
  Result<std::vector<Hash>> consistencyProof(uint64_t first, uint64_t second) const;

 private:
  // MTH of the `count` leaves starting at `start`.
  Hash rangeHash(uint64_t start, uint64_t count) const;
  void path(uint64_t index, uint64_t start, uint64_t count, std::vector<Hash>& out) const;
  void subproof(uint64_t m, uint64_t start, uint64_t count, bool whole,
                std::vector<Hash>& out) const;

  // levels_[h][i]: the hash of the complete subtree of 2^h leaves starting at leaf i * 2^h.
  std::vector<std::vector<Hash>> levels_;
};

// RFC 9162 §2.1.3.2. False for an index outside the tree, a path of the wrong length or
// any hash that does not lead to `root`.
bool verifyInclusion(uint64_t index, uint64_t size, const Hash& leaf,
                     const std::vector<Hash>& proof, const Hash& root);
// RFC 9162 §2.1.4.2: the tree of `second` leaves with root `second_root` extends the one of
// `first` leaves with root `first_root`. Equal sizes need an empty proof and equal roots.
bool verifyConsistency(uint64_t first, uint64_t second, const std::vector<Hash>& proof,
                       const Hash& first_root, const Hash& second_root);

}  // namespace trellis::audit
