// The RFC 6962 tree against the certificate-transparency reference vectors (the eight
// leaves of the CT reference implementation's merkle_tree_test: roots for sizes 1..8,
// inclusion and consistency proofs), cross-checked against a naive recursive MTH/PATH/PROOF
// written straight from RFC 6962 §2.1 for every size up to 40, plus the negative cases.
#include "core/merkle.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace trellis::audit {
namespace {

const std::vector<std::string> kLeaves = {
    std::string(),
    std::string("\x00", 1),
    "\x10",
    "\x20\x21",
    "\x30\x31",
    "\x40\x41\x42\x43",
    "\x50\x51\x52\x53\x54\x55\x56\x57",
    "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"};

const char* kRoots[] = {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
                        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
                        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
                        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
                        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};

Hash h(const char* hex) {
  return *hashFromHex(hex);
}
std::vector<Hash> hs(std::initializer_list<const char*> hexes) {
  std::vector<Hash> out;
  for (const char* x : hexes) out.push_back(h(x));
  return out;
}

MerkleTree ctTree() {
  MerkleTree t;
  for (const auto& l : kLeaves) t.append(l);
  return t;
}

struct InclusionVector {
  uint64_t index, size;
  std::vector<Hash> path;
};
const std::vector<InclusionVector>& inclusionVectors() {
  static const std::vector<InclusionVector> v = {
      {0, 1, {}},
      {0, 8,
       hs({"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
           "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
           "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"})},
      {5, 8,
       hs({"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
           "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
           "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"})},
      {2, 3, hs({"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"})},
      {1, 5,
       hs({"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
           "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
           "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"})},
  };
  return v;
}

struct ConsistencyVector {
  uint64_t first, second;
  std::vector<Hash> proof;
};
const std::vector<ConsistencyVector>& consistencyVectors() {
  static const std::vector<ConsistencyVector> v = {
      {1, 1, {}},
      {1, 8,
       hs({"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
           "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
           "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"})},
      {6, 8,
       hs({"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
           "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
           "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"})},
      {2, 5,
       hs({"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
           "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"})},
  };
  return v;
}

// RFC 6962 §2.1, literally: MTH, PATH and PROOF over a list of leaf inputs.
uint64_t k(uint64_t n) {
  uint64_t p = 1;
  while (p * 2 < n) p *= 2;
  return p;
}
Hash naiveMth(const std::vector<std::string>& d, size_t lo, size_t hi) {
  if (hi == lo) return emptyRoot();
  if (hi - lo == 1) return leafHash(d[lo]);
  const size_t s = lo + k(hi - lo);
  return nodeHash(naiveMth(d, lo, s), naiveMth(d, s, hi));
}
std::vector<Hash> naivePath(const std::vector<std::string>& d, uint64_t m, size_t lo, size_t hi) {
  if (hi - lo <= 1) return {};
  const size_t s = lo + k(hi - lo);
  std::vector<Hash> out;
  if (m < s - lo) {
    out = naivePath(d, m, lo, s);
    out.push_back(naiveMth(d, s, hi));
  } else {
    out = naivePath(d, m - (s - lo), s, hi);
    out.push_back(naiveMth(d, lo, s));
  }
  return out;
}
std::vector<Hash> naiveSubproof(const std::vector<std::string>& d, uint64_t m, size_t lo, size_t hi,
                                bool b) {
  if (m == hi - lo) return b ? std::vector<Hash>{} : std::vector<Hash>{naiveMth(d, lo, hi)};
  const size_t s = lo + k(hi - lo);
  std::vector<Hash> out;
  if (m <= s - lo) {
    out = naiveSubproof(d, m, lo, s, b);
    out.push_back(naiveMth(d, s, hi));
  } else {
    out = naiveSubproof(d, m - (s - lo), s, hi, false);
    out.push_back(naiveMth(d, lo, s));
  }
  return out;
}

TEST(AuditMerkleTest, RootsMatchTheCertificateTransparencyVectors) {
  MerkleTree t = ctTree();
  EXPECT_EQ(toHex(*t.root(0)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  for (uint64_t n = 1; n <= 8; ++n) EXPECT_EQ(toHex(*t.root(n)), kRoots[n - 1]) << "size " << n;
  // Built one leaf at a time, the root at each size is the same.
  MerkleTree grown;
  for (uint64_t n = 1; n <= 8; ++n) {
    grown.append(kLeaves[n - 1]);
    EXPECT_EQ(toHex(*grown.root(grown.size())), kRoots[n - 1]);
  }
}

TEST(AuditMerkleTest, InclusionProofsMatchAndVerify) {
  MerkleTree t = ctTree();
  for (const auto& v : inclusionVectors()) {
    auto proof = t.inclusionProof(v.index, v.size);
    ASSERT_TRUE(proof) << proof.status().message();
    EXPECT_EQ(*proof, v.path) << "leaf " << v.index << " size " << v.size;
    EXPECT_TRUE(verifyInclusion(v.index, v.size, leafHash(kLeaves[v.index]), v.path,
                                h(kRoots[v.size - 1])));
  }
}

TEST(AuditMerkleTest, ConsistencyProofsMatchAndVerify) {
  MerkleTree t = ctTree();
  for (const auto& v : consistencyVectors()) {
    auto proof = t.consistencyProof(v.first, v.second);
    ASSERT_TRUE(proof) << proof.status().message();
    EXPECT_EQ(*proof, v.proof) << v.first << " -> " << v.second;
    EXPECT_TRUE(verifyConsistency(v.first, v.second, v.proof, h(kRoots[v.first - 1]),
                                  h(kRoots[v.second - 1])));
  }
}

TEST(AuditMerkleTest, InclusionProofsFailForTheWrongSizeIndexNodeOrLength) {
  const auto& v = inclusionVectors()[2];  // leaf 5 of 8
  const Hash leaf = leafHash(kLeaves[5]);
  const Hash root = h(kRoots[7]);
  ASSERT_TRUE(verifyInclusion(5, 8, leaf, v.path, root));
  EXPECT_FALSE(verifyInclusion(5, 6, leaf, v.path, root));  // wrong tree size
  EXPECT_FALSE(verifyInclusion(5, 9, leaf, v.path, root));  // wrong tree size
  EXPECT_FALSE(verifyInclusion(4, 8, leaf, v.path, root));  // wrong leaf index
  EXPECT_FALSE(verifyInclusion(8, 8, leaf, v.path, root));  // index outside the tree
  EXPECT_FALSE(verifyInclusion(5, 8, leafHash(kLeaves[4]), v.path, root));  // wrong leaf
  EXPECT_FALSE(verifyInclusion(5, 8, leaf, v.path, h(kRoots[6])));          // wrong root
  for (size_t i = 0; i < v.path.size(); ++i) {
    auto tampered = v.path;
    tampered[i][0] ^= 1;
    EXPECT_FALSE(verifyInclusion(5, 8, leaf, tampered, root)) << "node " << i;
  }
  auto longer = v.path;
  longer.push_back(leaf);
  EXPECT_FALSE(verifyInclusion(5, 8, leaf, longer, root));  // proof too long
  auto shorter = v.path;
  shorter.pop_back();
  EXPECT_FALSE(verifyInclusion(5, 8, leaf, shorter, root));  // proof too short
  EXPECT_FALSE(verifyInclusion(5, 8, leaf, {}, root));
  // Generation refuses what it cannot prove.
  MerkleTree t = ctTree();
  EXPECT_FALSE(t.inclusionProof(8, 8));
  EXPECT_FALSE(t.inclusionProof(0, 9));
}

TEST(AuditMerkleTest, ConsistencyProofsFailForTheWrongSizesNodeRootOrLength) {
  const auto& v = consistencyVectors()[2];  // 6 -> 8
  const Hash r6 = h(kRoots[5]), r8 = h(kRoots[7]);
  ASSERT_TRUE(verifyConsistency(6, 8, v.proof, r6, r8));
  EXPECT_FALSE(verifyConsistency(5, 8, v.proof, r6, r8));
  EXPECT_FALSE(verifyConsistency(6, 9, v.proof, r6, r8));
  EXPECT_FALSE(verifyConsistency(4, 8, v.proof, r6, r8));
  EXPECT_FALSE(verifyConsistency(8, 6, v.proof, r8, r6));
  EXPECT_FALSE(verifyConsistency(6, 8, v.proof, h(kRoots[4]), r8));  // old root forged
  EXPECT_FALSE(verifyConsistency(6, 8, v.proof, r6, h(kRoots[6])));  // new root forged
  for (size_t i = 0; i < v.proof.size(); ++i) {
    auto tampered = v.proof;
    tampered[i][31] ^= 0x80;
    EXPECT_FALSE(verifyConsistency(6, 8, tampered, r6, r8)) << "node " << i;
  }
  auto longer = v.proof;
  longer.push_back(r8);
  EXPECT_FALSE(verifyConsistency(6, 8, longer, r6, r8));
  auto shorter = v.proof;
  shorter.pop_back();
  EXPECT_FALSE(verifyConsistency(6, 8, shorter, r6, r8));
  EXPECT_FALSE(verifyConsistency(6, 8, {}, r6, r8));
  EXPECT_FALSE(verifyConsistency(1, 1, v.proof, h(kRoots[0]), h(kRoots[0])));  // must be empty
  EXPECT_FALSE(verifyConsistency(1, 1, {}, h(kRoots[0]), h(kRoots[1])));
  MerkleTree t = ctTree();
  EXPECT_FALSE(t.consistencyProof(0, 8));
  EXPECT_FALSE(t.consistencyProof(5, 4));
  EXPECT_FALSE(t.consistencyProof(4, 9));
}

TEST(AuditMerkleTest, EveryProofAgreesWithTheNaiveDefinitionUpTo40Leaves) {
  std::vector<std::string> d;
  MerkleTree t;
  for (int i = 0; i < 40; ++i) {
    d.push_back("record " + std::to_string(i));
    t.append(d.back());
  }
  for (uint64_t n = 1; n <= d.size(); ++n) {
    const Hash root = naiveMth(d, 0, n);
    ASSERT_EQ(*t.root(n), root) << "size " << n;
    for (uint64_t m = 0; m < n; ++m) {
      auto path = *t.inclusionProof(m, n);
      ASSERT_EQ(path, naivePath(d, m, 0, n)) << m << " in " << n;
      ASSERT_TRUE(verifyInclusion(m, n, leafHash(d[m]), path, root));
      if (n > 1) {
        ASSERT_FALSE(verifyInclusion(m, n, leafHash(d[(m + 1) % n]), path, root));
      }
    }
    for (uint64_t m = 1; m <= n; ++m) {
      auto proof = *t.consistencyProof(m, n);
      ASSERT_EQ(proof, naiveSubproof(d, m, 0, n, true)) << m << " -> " << n;
      ASSERT_TRUE(verifyConsistency(m, n, proof, naiveMth(d, 0, m), root)) << m << " -> " << n;
      if (m < n) {
        // A different old history (its last leaf changed) is not extended by this tree.
        auto forked = d;
        forked[m - 1] += "!";
        ASSERT_FALSE(verifyConsistency(m, n, proof, naiveMth(forked, 0, m), root));
      }
    }
  }
}

TEST(AuditMerkleTest, ATruncatedTreeIsTheTreeOfItsPrefix) {
  // Every size to truncate to, from every size up to 33: roots and proofs as if the
  // later leaves had never been appended, and appending again continues correctly.
  for (uint64_t n = 1; n <= 33; ++n) {
    for (uint64_t keep = 0; keep <= n; ++keep) {
      MerkleTree t, prefix;
      for (uint64_t i = 0; i < n; ++i) t.append("leaf " + std::to_string(i));
      for (uint64_t i = 0; i < keep; ++i) prefix.append("leaf " + std::to_string(i));
      t.truncate(keep);
      ASSERT_EQ(t.size(), keep);
      ASSERT_EQ(*t.root(keep), *prefix.root(keep)) << n << " -> " << keep;
      t.append("again");
      prefix.append("again");
      ASSERT_EQ(*t.root(keep + 1), *prefix.root(keep + 1)) << n << " -> " << keep;
      ASSERT_EQ(*t.inclusionProof(keep, keep + 1), *prefix.inclusionProof(keep, keep + 1));
    }
  }
}

TEST(AuditMerkleTest, AppendRate) {
  // Printed, not asserted: benchmarks never fail on a noisy machine.
  MerkleTree t;
  const std::string record(300, 'x');
  const auto start = std::chrono::steady_clock::now();
  constexpr int kN = 200'000;
  for (int i = 0; i < kN; ++i) t.append(record);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("merkle append (300-byte leaves): %.0f leaves/s; root of %d: %s\n", kN / s, kN,
              toHex(*t.root(t.size())).substr(0, 16).c_str());
  EXPECT_EQ(t.size(), static_cast<uint64_t>(kN));
}

}  // namespace
}  // namespace trellis::audit
