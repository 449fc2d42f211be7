// Canonical JSON (the signed bytes), the encodings around it, and Ed25519 keys.
#include <Poco/JSON/Object.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <vector>

#include "support/test_support.h"
#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/encoding.h"

namespace {

using namespace trellis::marketplace;
using trellis::StatusCode;
using trellis::test::TempDir;
namespace fs = std::filesystem;

std::string canon(const std::string& text) {
  auto r = canonicalizeJsonText(text);
  return r ? *r : "ERROR: " + r.status().message();
}

TEST(CanonicalJsonTest, SortsKeysByBytesAndDropsWhitespace) {
  EXPECT_EQ(canon(R"( { "b" : 1, "a" : [ true, false, null ], "A": {} } )"),
            R"({"A":{},"a":[true,false,null],"b":1})");
  // Byte order, not locale order: 'Z' (0x5a) < '_' (0x5f) < 'a' (0x61) < 'é' (0xc3 0xa9).
  EXPECT_EQ(canon(R"({"é":1,"a":2,"_":3,"Z":4})"), R"({"Z":4,"_":3,"a":2,"é":1})");
  EXPECT_EQ(canon(R"({"z":{"y":1,"x":[{"b":1,"a":2}]}})"), R"({"z":{"x":[{"a":2,"b":1}],"y":1}})");
}

TEST(CanonicalJsonTest, EscapesOnlyWhatJsonRequires) {
  EXPECT_EQ(canon(R"(["a\"b\\c", "\/", "\u00e9", "\u0001\n\t\b\f\r", "\u007f"])"),
            "[\"a\\\"b\\\\c\",\"/\",\"\xc3\xa9\",\"\\u0001\\n\\t\\b\\f\\r\",\"\x7f\"]");
}

TEST(CanonicalJsonTest, WritesIntegersPlainly) {
  EXPECT_EQ(canon(R"([0, -1, 42, 9223372036854775807, -9223372036854775808,
                      18446744073709551615])"),
            "[0,-1,42,9223372036854775807,-9223372036854775808,18446744073709551615]");
}

TEST(CanonicalJsonTest, RefusesFloatsNamingThePath) {
  auto r = canonicalizeJsonText(R"({"a":{"b":[1, 2.5]}})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(),
            "a.b[1]: floating-point numbers are not allowed in signed JSON (use integers)");
  EXPECT_FALSE(canonicalizeJsonText("[1e3]"));
}

TEST(CanonicalJsonTest, RefusesDuplicateKeysAndInvalidJson) {
  auto dup = canonicalizeJsonText(R"({"a":1,"a":2})");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.status().message().find("duplicate key \"a\""), std::string::npos);
  EXPECT_FALSE(canonicalizeJsonText("{\"a\":"));
  EXPECT_FALSE(canonicalizeJsonText("{\"a\":1} trailing"));
}

TEST(CanonicalJsonTest, RefusesInvalidUtf8) {
  EXPECT_FALSE(canonicalizeJsonText("[\"\xff\"]"));  // the parser already refuses it
  // Values built in code (not parsed) are checked by the writer itself.
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("name", std::string("caf\xc3"));
  auto r = canonicalJson(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(), "name: string is not valid UTF-8 (byte 3)");
}

TEST(CanonicalJsonTest, SameValueSameBytesWhateverTheLayout) {
  EXPECT_EQ(canon("{\"files\":{\"b.so\":\"x\",\"a.lua\":\"y\"},\"id\":\"acme/x\"}"),
            canon("{\n  \"id\": \"acme/x\",\n  \"files\": {\"a.lua\": \"y\", \"b.so\": \"x\"}\n}"));
}

TEST(EncodingTest, Sha256MatchesKnownVector) {
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(isSha256Hex(sha256Hex("")));
  EXPECT_FALSE(isSha256Hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
}

TEST(EncodingTest, Base64RoundTripsAndRefusesNonCanonicalSpellings) {
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba",
                                                       "foobar", std::string("\0\xff", 2)}) {
    auto back = base64Decode(base64Encode(s));
    ASSERT_TRUE(back) << back.status().message();
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_FALSE(base64Decode("Zm9vYmF"));    // length
  EXPECT_FALSE(base64Decode("Zm9v YmE="));  // character
  EXPECT_FALSE(base64Decode("Zm9=YmFy"));   // padding in the middle
  EXPECT_FALSE(base64Decode("Zh=="));       // non-zero bits after the last byte
}

TEST(Ed25519Test, SignsAndVerifies) {
  auto key = PrivateKey::generate();
  ASSERT_TRUE(key) << key.status().message();
  auto sig = key->sign("canonical bytes");
  ASSERT_TRUE(sig);
  EXPECT_EQ(sig->size(), 64u);
  EXPECT_TRUE(verifySignature(key->publicKey(), "canonical bytes", *sig));
  EXPECT_EQ(key->keyId().size(), 16u);
  EXPECT_EQ(key->keyId(), sha256Hex(key->publicKey().raw).substr(0, 16));
}

TEST(Ed25519Test, RefusesTamperedMessageWrongKeyAndMalformedSignature) {
  auto key = PrivateKey::generate();
  auto other = PrivateKey::generate();
  auto sig = key->sign("canonical bytes");
  auto tampered = verifySignature(key->publicKey(), "canonical bytez", *sig);
  EXPECT_FALSE(tampered);
  EXPECT_NE(tampered.message().find("does not verify with key " + key->keyId()), std::string::npos);
  EXPECT_FALSE(verifySignature(other->publicKey(), "canonical bytes", *sig));
  auto short_sig = verifySignature(key->publicKey(), "canonical bytes", sig->substr(0, 63));
  EXPECT_EQ(short_sig.message(), "malformed signature: an Ed25519 signature is 64 bytes, got 63");
  std::string flipped = *sig;
  flipped[10] ^= 1;
  EXPECT_FALSE(verifySignature(key->publicKey(), "canonical bytes", flipped));
}

TEST(Ed25519Test, PublicKeyFromBase64ChecksLength) {
  auto key = PrivateKey::generate();
  auto back = PublicKey::fromBase64(key->publicKey().base64());
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, key->publicKey());
  auto bad = PublicKey::fromBase64(base64Encode("short"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message(), "public key: an Ed25519 public key is 32 bytes, got 5");
}

TEST(Ed25519Test, PemIsWrittenPrivatelyOnceAndLoadsBack) {
  TempDir dir;
  auto key = PrivateKey::generate();
  fs::path pem = dir / "acme.pem";
  ASSERT_TRUE(key->writePem(pem));
  struct stat st {};
  ASSERT_EQ(::stat(pem.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = PrivateKey::loadPem(pem);
  ASSERT_TRUE(loaded) << loaded.status().message();
  EXPECT_EQ(loaded->publicKey(), key->publicKey());

  // A second key never replaces the first.
  auto other = PrivateKey::generate();
  auto again = other->writePem(pem);
  EXPECT_EQ(again.code(), StatusCode::kConflict);
  EXPECT_EQ(PrivateKey::loadPem(pem)->publicKey(), key->publicKey());
  // No temp file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Ed25519Test, LoadRefusesKeysOthersCanReadAndNonKeys) {
  TempDir dir;
  auto key = PrivateKey::generate();
  fs::path pem = dir / "k.pem";
  ASSERT_TRUE(key->writePem(pem));
  ::chmod(pem.c_str(), 0644);
  auto open = PrivateKey::loadPem(pem);
  ASSERT_FALSE(open);
  EXPECT_NE(open.status().message().find("readable by others (mode 0644)"), std::string::npos);

  trellis::test::writeFile(dir / "junk.pem", "hello");
  ::chmod((dir / "junk.pem").c_str(), 0600);
  auto junk = PrivateKey::loadPem(dir / "junk.pem");
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.status().message().find("not a PEM private key"), std::string::npos);
  EXPECT_EQ(PrivateKey::loadPem(dir / "missing.pem").status().code(), StatusCode::kNotFound);
  // Encrypted keys are refused up front instead of prompting for a passphrase.
  auto encrypted = PrivateKey::fromPem(
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAc\n"
      "-----END ENCRYPTED PRIVATE KEY-----\n");
  EXPECT_NE(encrypted.status().message().find("encrypted private keys are not supported"),
            std::string::npos);
}

}  // namespace
