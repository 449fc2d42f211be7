// The transit routes' fast read of a one-member body: it answers only where the value is
// the raw text between the quotes, and leaves every other body to the full JSON parser.
#include "http/sole_member.h"

#include <gtest/gtest.h>

#include <string>

namespace trellis::secrets::http {
namespace {

TEST(SoleStringMemberTest, ReadsTheOneMemberOfTheCommonBody) {
  EXPECT_EQ(soleStringMember(R"({"plaintext":"aGVsbG8="})", "plaintext"), "aGVsbG8=");
  EXPECT_EQ(soleStringMember(" {\n\t\"plaintext\" :\r \"aGVsbG8=\" }\n", "plaintext"), "aGVsbG8=");
  EXPECT_EQ(soleStringMember(R"({"ciphertext":"trellis:v2:QUJD"})", "ciphertext"),
            "trellis:v2:QUJD");
  EXPECT_EQ(soleStringMember(R"({"plaintext":""})", "plaintext"), "")
      << "an empty value is a value (the engine decides what it means)";
  const std::string big = "{\"plaintext\":\"" + std::string(300000, 'A') + "\"}";
  EXPECT_EQ(soleStringMember(big, "plaintext")->size(), 300000u);
}

TEST(SoleStringMemberTest, LeavesEveryOtherShapeToTheFullParser) {
  const char* others[] = {
      "",
      "{}",
      "[]",
      R"({"plaintext":1})",
      R"({"plaintext":null})",
      R"({"plaintext":["a"]})",
      R"({"plaintext":"a","context":"b"})",    // another member
      R"({"context":"b","plaintext":"a"})",    // another member first
      R"({"plaintext":"a","plaintext":"b"})",  // a duplicate: the parser decides
      R"({"plaintextx":"a"})",
      R"({"plain":"a"})",
      R"({"Plaintext":"a"})",
      R"({"plain\u0074ext":"a"})",  // an escaped name
      R"({"plaintext":"a\"b"})",    // an escape in the value
      R"({"plaintext":"a\\b"})",
      R"({"plaintext":"a\/b"})",
      "{\"plaintext\":\"a\tb\"}",         // a control character
      "{\"plaintext\":\"caf\xc3\xa9\"}",  // non-ASCII
      R"({"plaintext":"a")",              // unterminated object
      R"({"plaintext":"a)",               // unterminated string
      R"({"plaintext":"a"}})",            // trailing junk
      R"({"plaintext":"a"} x)",
      R"({"plaintext" "a"})",
      R"({plaintext:"a"})",
      R"("plaintext":"a")",
      R"({"batch_input":[{"plaintext":"a"}]})",
  };
  for (const char* body : others) {
    EXPECT_EQ(soleStringMember(body, "plaintext"), std::nullopt) << body;
  }
  const std::string with_nul("{\"plaintext\":\"a\0b\"}", 19);
  EXPECT_EQ(soleStringMember(with_nul, "plaintext"), std::nullopt);
}

}  // namespace
}  // namespace trellis::secrets::http
