// The crypto core alone: AES-256-GCM against the NIST SP 800-38D (GCM specification)
// AES-256 test cases, tamper detection, and Shamir split/combine over GF(2^8).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "crypto/aead.h"
#include "crypto/encoding.h"
#include "crypto/secure_buffer.h"
#include "crypto/shamir.h"

namespace trellis::secrets {
namespace {

std::string unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

struct Vector {
  const char* name;
  const char* key;
  const char* nonce;
  const char* plaintext;
  const char* aad;
  const char* ciphertext;
  const char* tag;
};

// Test cases 13-16 of the GCM specification, the AES-256 ones SP 800-38D validates against.
const Vector kVectors[] = {
    {"case13", "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    {"case14", "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"case15", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e24"
     "49a6b525b16aedf5aa0de657ba637b391aafd255",
     "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
     "56828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"case16", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e24"
     "49a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
     "56828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

TEST(SecretsAeadTest, MatchesTheNistAes256GcmVectorsBothWays) {
  for (const Vector& v : kVectors) {
    SCOPED_TRACE(v.name);
    SecureBuffer key(unhex(v.key));
    auto sealed = aead::encryptWithNonce(key, unhex(v.nonce), unhex(v.plaintext), unhex(v.aad));
    ASSERT_TRUE(sealed) << sealed.status().toString();
    EXPECT_EQ(hex(*sealed), std::string(v.ciphertext) + v.tag);
    auto opened = aead::decryptWithNonce(key, unhex(v.nonce), *sealed, unhex(v.aad));
    ASSERT_TRUE(opened) << opened.status().toString();
    EXPECT_EQ(hex(opened->view()), v.plaintext);
  }
}

TEST(SecretsAeadTest, EveryFlippedBitOfNonceCiphertextTagOrAadFails) {
  SecureBuffer key = randomBytes(aead::kKeyBytes);
  const std::string aad = "tenant=acme|path=db/password|version=3|kek=1";
  auto box = aead::seal(key, "correct horse battery staple", aad);
  ASSERT_TRUE(box);
  ASSERT_EQ(box->size(), aead::kOverhead + 28);
  for (size_t bit = 0; bit < box->size() * 8; ++bit) {
    std::string bad = *box;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    auto opened = aead::open(key, bad, aad);
    ASSERT_FALSE(opened) << "flipping bit " << bit << " went unnoticed";
    EXPECT_EQ(opened.status().code(), StatusCode::kInvalid);
    EXPECT_NE(opened.status().message().find("does not authenticate"), std::string::npos);
  }
  for (size_t bit = 0; bit < aad.size() * 8; ++bit) {
    std::string bad = aad;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_FALSE(aead::open(key, *box, bad)) << "flipping AAD bit " << bit << " went unnoticed";
  }
  auto good = aead::open(key, *box, aad);
  ASSERT_TRUE(good);
  EXPECT_EQ(good->view(), "correct horse battery staple");
}

TEST(SecretsAeadTest, AnotherKeyTruncationOrAShortKeyIsRefused) {
  SecureBuffer key = randomBytes(aead::kKeyBytes);
  auto box = aead::seal(key, "value", "ctx");
  ASSERT_TRUE(box);
  EXPECT_FALSE(aead::open(randomBytes(aead::kKeyBytes), *box, "ctx"));
  EXPECT_FALSE(aead::open(key, box->substr(0, box->size() - 1), "ctx"));
  EXPECT_FALSE(aead::open(key, box->substr(0, aead::kOverhead - 1), "ctx"));
  auto short_key = aead::seal(SecureBuffer(std::string(16, 'k')), "value", "ctx");
  ASSERT_FALSE(short_key);
  EXPECT_EQ(short_key.status().message(), "an AES-256 key is 32 bytes");
}

TEST(SecretsAeadTest, SealingTwiceUsesFreshNonces) {
  SecureBuffer key = randomBytes(aead::kKeyBytes);
  auto a = aead::seal(key, "same", "ctx");
  auto b = aead::seal(key, "same", "ctx");
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->substr(0, aead::kNonceBytes), b->substr(0, aead::kNonceBytes));
}

// Nonces come from per-thread pools refilled from the DRBG: across threads, across many
// refills, and in a forked child (which inherits its parent's pool), none repeats.
TEST(SecretsAeadTest, NoncesNeverRepeatAcrossThreadsRefillsOrAFork) {
  SecureBuffer key = randomBytes(aead::kKeyBytes);
  auto nonces = [&](int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i)
      out.push_back(aead::seal(key, "x", "ctx")->substr(0, aead::kNonceBytes));
    return out;
  };
  std::vector<std::string> all = nonces(10);  // this thread's pool is in use now
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    for (const std::string& n : nonces(10)) (void)!::write(pipe_fds[1], n.data(), n.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string from_child;
  char buf[256];
  for (ssize_t got; (got = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) from_child.append(buf, got);
  ::close(pipe_fds[0]);
  ::waitpid(child, nullptr, 0);
  ASSERT_EQ(from_child.size(), 10 * aead::kNonceBytes);
  for (size_t i = 0; i < from_child.size(); i += aead::kNonceBytes) {
    all.push_back(from_child.substr(i, aead::kNonceBytes));
  }
  std::vector<std::vector<std::string>> per_thread(4);
  std::vector<std::thread> threads;
  for (auto& out : per_thread) threads.emplace_back([&] { out = nonces(2000); });
  for (auto& t : threads) t.join();
  for (auto& out : per_thread) all.insert(all.end(), out.begin(), out.end());
  std::vector<std::string> more = nonces(1000);  // past this thread's first refill
  all.insert(all.end(), more.begin(), more.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "a nonce repeated";
}

// A KeyedAead reuses contexts set up with its key: its boxes open with the key alone and the
// other way round, a box that fails to open (and so a context that is thrown away) leaves
// the next message unharmed, and threads sharing one key all get their own plaintexts back.
TEST(SecretsAeadTest, AKeyedAeadIsInterchangeableWithSealAndOpenAcrossThreadsAndFailures) {
  SecureBuffer key = randomBytes(aead::kKeyBytes);
  const aead::KeyedAead keyed(key.clone());
  auto box = keyed.seal("kept contexts", "ctx");
  ASSERT_TRUE(box);
  EXPECT_EQ(aead::open(key, *box, "ctx")->view(), "kept contexts");
  auto other = aead::seal(key, "fresh context", "ctx");
  EXPECT_EQ(keyed.open(*other, "ctx")->view(), "fresh context");
  std::string altered = *box;
  altered[aead::kNonceBytes] ^= 1;
  EXPECT_EQ(keyed.open(altered, "ctx").status().code(), StatusCode::kInvalid);
  EXPECT_FALSE(keyed.open(*box, "another ctx"));
  EXPECT_FALSE(keyed.open(box->substr(0, aead::kOverhead - 1), "ctx"));
  EXPECT_EQ(keyed.open(*box, "ctx")->view(), "kept contexts");
  EXPECT_EQ(keyed.seal("", "")->size(), aead::kOverhead);

  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const std::string plain = "thread " + std::to_string(t) + " message " + std::to_string(i);
        const std::string aad = "aad " + std::to_string(i % 7);
        auto sealed = keyed.seal(plain, aad);
        auto opened = sealed ? keyed.open(*sealed, aad) : Result<SecureBuffer>(sealed.status());
        if (!opened || opened->view() != plain) ++wrong[t];
        if (i % 50 == 0 && keyed.open(*sealed, aad + "x")) ++wrong[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

// RFC 4648's test vectors, then every length up to three whole quads of every byte value.
TEST(SecretsBase64Test, RoundTripsRfc4648VectorsAndEveryByteAtEveryLength) {
  const std::pair<std::string, std::string> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, text] : vectors) {
    EXPECT_EQ(toBase64(plain), text);
    EXPECT_EQ(fromBase64(text), plain) << text;
  }
  std::string bytes(256, '\0');
  std::iota(bytes.begin(), bytes.end(), 0);
  for (size_t len = 0; len <= bytes.size(); ++len) {
    const std::string plain = bytes.substr(bytes.size() - len);
    EXPECT_EQ(fromBase64(toBase64(plain)), plain) << len;
  }
}

TEST(SecretsBase64Test, RefusesWhatIsNotStrictPaddedBase64) {
  for (const std::string& text : std::vector<std::string>{
           "Zg=", "Zm9", "Zm9vY", "Zg", "Zm 9v", "Zm9v\n", "Zm-v", "Zm_v", "Zm9v\"", "=m9v", "Z=9v",
           "Zm=v", "Zg==Zm9v", "Zm9v====", "Z===", "====", std::string("Zm9\0", 4), "Zm9\xc3"}) {
    EXPECT_EQ(fromBase64(text), std::nullopt) << text;
  }
}

TEST(SecretsSecureBufferTest, WipeEmptiesAndMovesLeaveNothingBehind) {
  SecureBuffer key = randomBytes(32);
  ASSERT_EQ(key.size(), 32u);
  SecureBuffer moved = std::move(key);
  EXPECT_TRUE(key.empty());  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(moved.size(), 32u);
  moved.wipe();
  EXPECT_TRUE(moved.empty());
}

TEST(SecretsShamirTest, FieldInverseIsAnInverse) {
  for (int a = 1; a < 256; ++a) {
    EXPECT_EQ(shamir::mul(static_cast<uint8_t>(a), shamir::inverse(static_cast<uint8_t>(a))), 1)
        << a;
  }
  EXPECT_EQ(shamir::mul(0x57, 0x83), 0xc1);  // the worked example of FIPS-197, 4.2
}

// Every subset of exactly `threshold` shares (by bitmask) gives the secret back.
TEST(SecretsShamirTest, EveryThresholdSubsetRoundTripsUpToTenSharesThresholdSeven) {
  for (int n = 2; n <= 10; ++n) {
    for (int t = 2; t <= std::min(n, 7); ++t) {
      SecureBuffer secret = randomBytes(32);
      auto shares = shamir::split(secret, n, t);
      ASSERT_TRUE(shares) << shares.status().toString();
      ASSERT_EQ(shares->size(), static_cast<size_t>(n));
      for (unsigned mask = 0; mask < (1u << n); ++mask) {
        if (__builtin_popcount(mask) != t) continue;
        std::vector<shamir::Share> subset;
        for (int i = 0; i < n; ++i) {
          if (mask & (1u << i)) subset.push_back({(*shares)[i].x, (*shares)[i].y.clone()});
        }
        auto back = shamir::combine(subset);
        ASSERT_TRUE(back);
        ASSERT_EQ(back->view(), secret.view()) << "n=" << n << " t=" << t << " mask=" << mask;
      }
    }
  }
}

TEST(SecretsShamirTest, FewerThanThresholdSharesGiveAWrongKey) {
  for (int t = 2; t <= 7; ++t) {
    SecureBuffer secret = randomBytes(32);
    auto shares = shamir::split(secret, 10, t);
    ASSERT_TRUE(shares);
    std::vector<shamir::Share> subset;
    for (int i = 0; i < t - 1; ++i) subset.push_back({(*shares)[i].x, (*shares)[i].y.clone()});
    auto back = shamir::combine(subset);
    ASSERT_TRUE(back);
    EXPECT_NE(back->view(), secret.view()) << "t=" << t;
  }
}

TEST(SecretsShamirTest, DuplicateZeroOrMismatchedSharesAreRefused) {
  SecureBuffer secret = randomBytes(32);
  auto shares = shamir::split(secret, 5, 3);
  ASSERT_TRUE(shares);
  std::vector<shamir::Share> dup;
  dup.push_back({(*shares)[0].x, (*shares)[0].y.clone()});
  dup.push_back({(*shares)[0].x, (*shares)[0].y.clone()});
  dup.push_back({(*shares)[1].x, (*shares)[1].y.clone()});
  auto r = shamir::combine(dup);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(), "share 1 was given twice");

  std::vector<shamir::Share> zero;
  zero.push_back({0, (*shares)[0].y.clone()});
  EXPECT_FALSE(shamir::combine(zero));

  std::vector<shamir::Share> lengths;
  lengths.push_back({1, SecureBuffer(std::string(32, 'a'))});
  lengths.push_back({2, SecureBuffer(std::string(16, 'a'))});
  EXPECT_FALSE(shamir::combine(lengths));
  EXPECT_FALSE(shamir::combine({}));
}

TEST(SecretsShamirTest, BadSplitParametersNameTheProblem) {
  SecureBuffer secret = randomBytes(32);
  EXPECT_EQ(shamir::split(secret, 5, 1).status().message(), "threshold must be at least 2");
  EXPECT_EQ(shamir::split(secret, 2, 3).status().message(),
            "shares (2) must be at least the threshold (3)");
  EXPECT_EQ(shamir::split(secret, 256, 3).status().message(), "at most 255 shares");
  EXPECT_FALSE(shamir::split(SecureBuffer(), 3, 2));
}

}  // namespace
}  // namespace trellis::secrets
