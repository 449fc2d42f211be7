// The one-pass record reader against Poco's reading, which every stored log was made with:
// the same acceptance and the same bytes, over hand-picked edge cases and over many
// generated records (random nesting, whitespace, escapes, unicode, numbers, duplicate and
// sensitive members, members of unexpected types) and byte-mutated copies of them.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "../record_differential.h"
#include "core/canonical_json.h"
#include "core/record.h"

namespace trellis::audit {
namespace {

using testing::recordDifference;

TEST(AuditRecordReaderTest, EdgeCasesMatchPoco) {
  const char* cases[] = {
      R"({})",
      R"({"tenant":"acme","action":"a","parameters":{"email":"x@y","b":{"ip":"1.2.3.4"}}})",
      R"({"parameters":{"a":"\u00e9\u20ac\ud83d\ude00\/\b\f\n\r\t\"\\","é":1,"\u0001":2}})",
      R"({"parameters":{"a":"x\u0000y"}})",
      R"({"parameters":{"n":[0,-0,1,-1,9223372036854775807,-9223372036854775808]}})",
      R"({"parameters":{"n":[9223372036854775808,18446744073709551615,18446744073709551616]}})",
      R"({"parameters":{"n":[-9223372036854775809,100000000000000000000000]}})",
      R"({"parameters":{"n":[-46744073709551615,-9007199254740993,-9007199254740992]}})",
      R"({"seq":-46744073709551615,"status":-9007199254740993})",
      R"({"parameters":{"f":[0.1,1.5,-0.0,1e10,1E-5,1.0,0e0,123.456e7,1.7976931348623157e308]}})",
      R"({"parameters":{"f":[1e400,1e-400,5e-324,2.2250738585072011e-308,1.8e308]}})",
      R"({"parameters":{"f":[123456789012345678901.0,12345678901234567890.0,1e22,1e21]}})",
      R"({"parameters":{"z":1,"a":2,"m":{"y":[{"b":1,"a":2}],"x":null}}})",
      R"({"parameters":{"a":1,"a":2},"tenant":"x","tenant":"y"})",
      R"({"parameters":{"email":null,"ip":{"v":4,"a":"1.2.3.4"},"b":[{"email":"e"}]}})",
      R"({"parameters":{"email":["x",{"ip":"y"}]}})",
      R"({"parameters":"a string","resource":"r"})",
      R"({"parameters":[1,{"email":"x"}]})",
      R"({"parameters":null,"actor":null})",
      R"({"actor":{"name":"n","principal":"p","role":"r","extra":[1]},"actor":{"name":"m"}})",
      R"({"actor":"not an object","seq":null,"status":null})",
      R"({"action":5})",
      R"({"action":1.5,"tenant":true})",
      R"({"tenant":{"a":1}})",
      R"({"seq":"12","status":1.9})",
      R"({"seq":18446744073709551615})",
      R"({"seq":-5,"status":404})",
      R"({"actor":{"name":7}})",
      R"({"a\u0000b":1})",
      R"({"parameters":{"a\u0000b":1}})",
      R"({"\u0074enant":"escaped name"})",
      " \t\r\n{ \"tenant\" : \"acme\" , \"parameters\" : { \"b\" : [ 1 , 2 ] } } \n",
      // Refused by both.
      "",
      " ",
      "[1]",
      "\"str\"",
      "1",
      "null",
      "{",
      "}",
      R"({"a":1}x)",
      R"({"a":1}{})",
      R"({"a":01})",
      R"({"a":1.})",
      R"({"a":.5})",
      R"({"a":-})",
      R"({"a":1e})",
      R"({"a":+1})",
      R"({"a":[1,]})",
      R"({"a":1,})",
      R"({"a":tru})",
      R"({"a":NaN})",
      R"({"a":"\x"})",
      R"({"a":"\ud800"})",
      R"({"a":"\udc00"})",
      R"({"a":"\ud800\u0041"})",
      R"({"a":"\u12"})",
      "{\"a\":\"\xff\"}",
      "{\"a\":\"\xc3\"}",
      "{\"a\":\"\xed\xa0\x80\"}",
      "{\"a\":\"\xc0\xaf\"}",
      "{\"a\":\"\xf4\x90\x80\x80\"}",
      "{\"a\":\"x\ty\"}",
      "\xef\xbb\xbf{}",
      "{}\x0c",
      "{} \xff",
      "{}\xffjunk",
      "{\"a\":1\xff}",
      "{\"a\":\"\xff\"}",
      R"({'a':1})",
      R"({a:1})",
      "/*c*/{}",
      R"({"a" 1})",
      R"({"a":1 "b":2})",
  };
  for (const char* json : cases) {
    EXPECT_EQ(recordDifference(json), "") << json;
  }
}

TEST(AuditRecordReaderTest, NestingLimitMatchesPoco) {
  for (int n : {126, 127, 128, 129, 400}) {
    const std::string arrays =
        R"({"parameters":)" + std::string(n, '[') + std::string(n, ']') + "}";
    EXPECT_EQ(recordDifference(arrays), "") << n;
    std::string objects = R"({"parameters":)";
    for (int i = 0; i < n; ++i) objects += R"({"a":)";
    objects += "1" + std::string(n, '}') + "}";
    EXPECT_EQ(recordDifference(objects), "") << n;
  }
}

TEST(AuditRecordReaderTest, WellTypedRecordsTakeTheOnePassPath) {
  bool fast = false;
  EXPECT_EQ(recordDifference(R"({"type":"admin.request","action":"PUT /v1/tenants/{id}",)"
                             R"("tenant":"acme","seq":3,"status":0,"actor":{"name":"ops"},)"
                             R"("parameters":{"email":"carol@example.com","n":[1.5,-2]}})",
                             &fast),
            "");
  EXPECT_TRUE(fast);
  EXPECT_EQ(recordDifference(R"({"action":5})", &fast), "");
  EXPECT_FALSE(fast);  // an unexpected type: Poco's reading decides, as before
}

TEST(AuditRecordReaderTest, RefusalsNameTheProblemAndWhere) {
  auto bad = IncomingRecord::parse(R"({"tenant":"acme","parameters":{"a":[1,]}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("unexpected byte ']' at byte 38"), std::string::npos)
      << bad.status().message();
  bad = IncomingRecord::parse("{\"a\":\"\xff\"}");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("invalid UTF-8 at byte 6"), std::string::npos)
      << bad.status().message();
  bad = IncomingRecord::parse(R"({"a":1} x)");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("more after the record's end at byte 8"), std::string::npos)
      << bad.status().message();
  bad = IncomingRecord::parse("[1]");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message(), "an audit record is a JSON object");
}

// Random JSON of the shapes records have, with every token form the grammar allows.
class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  std::string record() {
    std::string out = "{";
    const int n = pick(12);
    static const char* kTop[] = {"tenant",     "type",       "action",   "resource", "outcome",
                                 "status",     "request_id", "trace_id", "seq",      "actor",
                                 "parameters", "time_ms",    "other"};
    for (int i = 0; i < n; ++i) {
      if (i) out += sep(',');
      const std::string name = kTop[pick(13)];
      out += quoted(name) + sep(':');
      if (pick(12) == 0) {
        out += value(0);  // any type at all
      } else if (name == "seq" || name == "status" || name == "time_ms") {
        out += pick(6) == 0 ? "null" : std::to_string(static_cast<int64_t>(rng_()) - (1u << 31));
      } else if (name == "actor") {
        out += object(1, {"name", "principal", "role", "x"});
      } else if (name == "parameters") {
        out += pick(10) == 0 ? value(1) : object(1, {});
      } else {
        out += pick(8) == 0 ? "null" : string();
      }
    }
    return ws() + out + sep('}') + ws();
  }

  std::string value(int depth) {
    switch (depth > 4 ? pick(4) : pick(7)) {
      case 0: return number();
      case 1: return string();
      case 2: return pick(3) == 0 ? "null" : pick(2) ? "true" : "false";
      case 3: return number();
      case 4:
      case 5: return object(depth + 1, {});
      default: {
        std::string out = "[";
        const int n = pick(4);
        for (int i = 0; i < n; ++i) out += (i ? sep(',') : ws()) + value(depth + 1);
        return out + sep(']');
      }
    }
  }

  std::string object(int depth, std::vector<std::string> names) {
    if (names.empty())
      names = {"email", "ip", "resource",    "a",      "b", "B", "é",
               "a b",   "",   "\\u0065mail", "e\\\"q", "z", "ip"};
    std::string out = "{";
    const int n = pick(6);
    for (int i = 0; i < n; ++i) {
      out += (i ? sep(',') : ws()) + "\"" + names[pick(static_cast<int>(names.size()))] + "\"" +
             sep(':') + value(depth);
    }
    return out + sep('}');
  }

  std::string number() {
    static const char* kFixed[] = {"-46744073709551615",
                                   "-9007199254740993",
                                   "-9007199254740992",
                                   "0",
                                   "-0",
                                   "1",
                                   "-1",
                                   "9223372036854775807",
                                   "-9223372036854775808",
                                   "9223372036854775808",
                                   "18446744073709551615",
                                   "18446744073709551616",
                                   "0.1",
                                   "-0.0",
                                   "1e400",
                                   "1e-400",
                                   "5e-324",
                                   "1E+2",
                                   "2.5e-3",
                                   "1.0"};
    if (pick(4) == 0) return kFixed[pick(20)];
    std::string out = pick(3) == 0 ? "-" : "";
    out += std::to_string(rng_() % 1000000);
    if (pick(2)) out += "." + std::to_string(rng_() % 100000);
    if (pick(3) == 0) {
      out += pick(2) ? "e" : "E";
      const int e = pick(3);
      out += e == 0 ? "" : e == 1 ? "+" : "-";
      out += std::to_string(pick(330));
    }
    return out;
  }

  std::string string() {
    static const char* kPieces[] = {"a",       "Zq ",     "\\n",     "\\\"",    "\\\\",
                                    "\\/",     "\\b",     "\\f",     "\\r",     "\\t",
                                    "\\u0000", "\\u001f", "\\u00e9", "\\u20AC", "\\ud83d\\ude00",
                                    "é",       "€",       "😀",       "\x7f",    "carol@example.com",
                                    "\\u0022", "\\u005c", "<>&'",    "\\uFFFF", "\\uDBFF\\uDFFF"};
    std::string out = "\"";
    const int n = pick(6);
    for (int i = 0; i < n; ++i) out += kPieces[pick(25)];
    return out + "\"";
  }

  // Mutates one to three bytes: flipped, inserted or deleted.
  std::string mutate(std::string s) {
    static const char kBytes[] = "{}[]:,\"\\ 0-1.eE+nultrfa\x01\xc3\xa9\xff\xed";
    const int n = 1 + pick(3);
    for (int i = 0; i < n && !s.empty(); ++i) {
      const size_t at = rng_() % s.size();
      const char b = kBytes[pick(sizeof kBytes - 1)];
      switch (pick(3)) {
        case 0: s[at] = b; break;
        case 1: s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), b); break;
        default: s.erase(at, 1);
      }
    }
    return s;
  }

 private:
  int pick(int n) { return static_cast<int>(rng_() % static_cast<uint32_t>(n)); }
  std::string ws() {
    static const char* kWs[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    return kWs[pick(7)];
  }
  std::string sep(char c) { return ws() + c + ws(); }
  std::string quoted(const std::string& s) { return "\"" + s + "\""; }

  std::mt19937 rng_;
};

TEST(AuditRecordReaderTest, GeneratedRecordsMatchPoco) {
  Generator gen(20261206);
  int fast = 0, accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string json = gen.record();
    bool f = false;
    const std::string diff = recordDifference(json, &f);
    ASSERT_EQ(diff, "") << json;
    accepted += IncomingRecord::parseReference(json).isOk();
    fast += f;
  }
  // Most generated records are well typed (some hold numbers beyond a double, which both
  // refuse): the one-pass path is what was compared.
  EXPECT_GT(accepted, 15000);
  EXPECT_GT(fast, 10000);
}

TEST(AuditRecordReaderTest, MutatedRecordsMatchPoco) {
  Generator gen(7);
  int refused = 0;
  for (int i = 0; i < 30000; ++i) {
    const std::string json = gen.mutate(gen.record());
    ASSERT_EQ(recordDifference(json), "") << json;
    refused += !IncomingRecord::parse(json).isOk();
  }
  EXPECT_GT(refused, 1000);  // the mutations reach the error paths
}

TEST(AuditRecordReaderTest, CanonicalJsonOfTextMatchesPoco) {
  Generator gen(99);
  for (int i = 0; i < 5000; ++i) {
    const std::string json = i % 2 ? gen.value(0) : gen.mutate(gen.value(0));
    auto fast = canonicalJson(json);
    auto ref = canonicalJsonReference(json);
    ASSERT_EQ(fast.isOk(), ref.isOk()) << json << " " << fast.status().message();
    if (fast) {
      ASSERT_EQ(*fast, *ref) << json;
    }
  }
}

}  // namespace
}  // namespace trellis::audit
