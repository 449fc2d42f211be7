#include "core/merkle.h"

#include <bit>

namespace trellis::audit {
namespace {

// The largest power of two strictly below n (n >= 2).
uint64_t splitPoint(uint64_t n) {
  return std::bit_floor(n - 1);
}

}  // namespace

Hash leafHash(std::string_view data) {
  return sha256(std::string_view("\0", 1), data);
}

Hash nodeHash(const Hash& left, const Hash& right) {
  char buf[65];
  buf[0] = 1;
  std::copy(left.begin(), left.end(), buf + 1);
  std::copy(right.begin(), right.end(), buf + 33);
  return sha256(std::string_view(buf, sizeof buf));
}

Hash emptyRoot() {
  return sha256(std::string_view());
}

void MerkleTree::appendLeafHash(const Hash& leaf) {
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(leaf);
  // Complete every subtree this leaf closes: one per trailing one-bit of the new size.
  for (size_t h = 0; levels_[h].size() % 2 == 0; ++h) {
    if (levels_.size() == h + 1) levels_.emplace_back();
    const auto& below = levels_[h];
    levels_[h + 1].push_back(nodeHash(below[below.size() - 2], below.back()));
  }
}

void MerkleTree::truncate(uint64_t size) {
  // A complete subtree of 2^h leaves survives iff it ends within the first `size` leaves.
  for (size_t h = 0; h < levels_.size(); ++h) levels_[h].resize(size >> h);
  while (!levels_.empty() && levels_.back().empty()) levels_.pop_back();
}

Hash MerkleTree::rangeHash(uint64_t start, uint64_t count) const {
  if (count == 0) return emptyRoot();
  if (std::has_single_bit(count) && start % count == 0) {
    return levels_[std::countr_zero(count)][start / count];
  }
  const uint64_t k = splitPoint(count);
  return nodeHash(rangeHash(start, k), rangeHash(start + k, count - k));
}

Result<Hash> MerkleTree::root(uint64_t n) const {
  if (n > size()) {
    return Status::invalid("tree size " + std::to_string(n) + " is past the log's " +
                           std::to_string(size()) + " records");
  }
  return rangeHash(0, n);
}

void MerkleTree::path(uint64_t index, uint64_t start, uint64_t count,
                      std::vector<Hash>& out) const {
  if (count <= 1) return;
  const uint64_t k = splitPoint(count);
  if (index < k) {
    path(index, start, k, out);
    out.push_back(rangeHash(start + k, count - k));
  } else {
    path(index - k, start + k, count - k, out);
    out.push_back(rangeHash(start, k));
  }
}

Result<std::vector<Hash>> MerkleTree::inclusionProof(uint64_t index, uint64_t n) const {
  if (n > size()) {
    return Status::invalid("tree size " + std::to_string(n) + " is past the log's " +
                           std::to_string(size()) + " records");
  }
  if (index >= n) {
    return Status::invalid("leaf " + std::to_string(index) + " is not in a tree of " +
                           std::to_string(n) + " records");
  }
  std::vector<Hash> out;
  path(index, 0, n, out);
  return out;
}

void MerkleTree::subproof(uint64_t m, uint64_t start, uint64_t count, bool whole,
                          std::vector<Hash>& out) const {
  if (m == count) {
    if (!whole) out.push_back(rangeHash(start, count));
    return;
  }
  const uint64_t k = splitPoint(count);
  if (m <= k) {
    subproof(m, start, k, whole, out);
    out.push_back(rangeHash(start + k, count - k));
  } else {
    subproof(m - k, start + k, count - k, false, out);
    out.push_back(rangeHash(start, k));
  }
}

Result<std::vector<Hash>> MerkleTree::consistencyProof(uint64_t first, uint64_t second) const {
  if (second > size()) {
    return Status::invalid("tree size " + std::to_string(second) + " is past the log's " +
                           std::to_string(size()) + " records");
  }
  if (first == 0 || first > second) {
    return Status::invalid("no consistency proof from size " + std::to_string(first) + " to " +
                           std::to_string(second) + " (need 0 < first <= second)");
  }
  std::vector<Hash> out;
  subproof(first, 0, second, true, out);
  return out;
}

bool verifyInclusion(uint64_t index, uint64_t size, const Hash& leaf,
                     const std::vector<Hash>& proof, const Hash& root) {
  if (index >= size) return false;
  uint64_t fn = index, sn = size - 1;
  Hash r = leaf;
  for (const Hash& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      r = nodeHash(p, r);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool verifyConsistency(uint64_t first, uint64_t second, const std::vector<Hash>& proof,
                       const Hash& first_root, const Hash& second_root) {
  if (first > second) return false;
  if (first == second) return proof.empty() && first_root == second_root;
  if (first == 0) return proof.empty();  // every tree extends the empty one
  if (proof.empty()) return false;
  std::vector<Hash> path;
  path.reserve(proof.size() + 1);
  if (std::has_single_bit(first)) path.push_back(first_root);
  path.insert(path.end(), proof.begin(), proof.end());
  uint64_t fn = first - 1, sn = second - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const Hash& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == first_root && sr == second_root && sn == 0;
}

}  // namespace trellis::audit
