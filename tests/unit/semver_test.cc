#include "trellis/kernel/plugin/semver.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace trellis::kernel::plugin {
namespace {

Version v(const std::string& text) {
  auto parsed = Version::parse(text);
  EXPECT_TRUE(parsed.isOk()) << text << ": " << parsed.status().message();
  return parsed.isOk() ? *parsed : Version{};
}

VersionRange range(const std::string& text) {
  auto parsed = VersionRange::parse(text);
  EXPECT_TRUE(parsed.isOk()) << text << ": " << parsed.status().message();
  return parsed.isOk() ? *parsed : *VersionRange::parse("<0.0.0-0");
}

TEST(SemverTest, ParsesValidVersions) {
  Version a = v("1.2.3");
  EXPECT_EQ(a.major, 1u);
  EXPECT_EQ(a.minor, 2u);
  EXPECT_EQ(a.patch, 3u);
  EXPECT_TRUE(a.prerelease.empty());
  EXPECT_TRUE(a.build.empty());

  Version b = v("10.20.30-alpha.1.x-y-z.--+build.007.sha-5114f85");
  EXPECT_EQ(b.prerelease, (std::vector<std::string>{"alpha", "1", "x-y-z", "--"}));
  EXPECT_EQ(b.build, "build.007.sha-5114f85");

  EXPECT_EQ(v("0.0.0").toString(), "0.0.0");
  EXPECT_EQ(v("1.0.0-0A.is.legal").toString(), "1.0.0-0A.is.legal");
  EXPECT_EQ(v("1.0.0+0.build.1-rc.10000aaa-kk-0.1").build, "0.build.1-rc.10000aaa-kk-0.1");
  EXPECT_EQ(v("18446744073709551615.0.0").major, 18446744073709551615ull);
}

TEST(SemverTest, ToStringRoundTrips) {
  for (const char* text : {"1.2.3", "1.2.3-rc.1", "1.2.3+b.5", "1.2.3-x.7.z.92+exp.sha.5114f85"}) {
    EXPECT_EQ(v(text).toString(), text);
  }
}

TEST(SemverTest, RefusesInvalidVersionsQuotingThem) {
  const char* bad[] = {"",
                       "1",
                       "1.2",
                       "1.2.3.4",
                       "01.2.3",
                       "1.02.3",
                       "1.2.03",
                       "v1.2.3",
                       " 1.2.3",
                       "1.2.3 ",
                       "1.2.3-",
                       "1.2.3+",
                       "1.2.3-01",
                       "1.2.3-a..b",
                       "1.2.3-a_b",
                       "1.2.3+a+b",
                       "1.2.-3",
                       "a.b.c",
                       "1.2.3-α",
                       "1..3",
                       "-1.2.3",
                       "1.2.x",
                       "18446744073709551616.0.0"};
  for (const char* text : bad) {
    auto parsed = Version::parse(text);
    ASSERT_FALSE(parsed.isOk()) << "accepted " << text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalid);
    if (*text != '\0') {
      EXPECT_NE(parsed.status().message().find(std::string("\"") + text + "\""), std::string::npos)
          << parsed.status().message();
    }
  }
}

TEST(SemverTest, ExplainsWhyAVersionIsInvalid) {
  EXPECT_EQ(Version::parse("1.02.3").status().message(),
            "\"1.02.3\" is not a valid semantic version: minor \"02\" has a leading zero");
  EXPECT_EQ(Version::parse("1.2").status().message(),
            "\"1.2\" is not a valid semantic version: expected MAJOR.MINOR.PATCH");
  EXPECT_EQ(Version::parse("1.2.3-01").status().message(),
            "\"1.2.3-01\" is not a valid semantic version: prerelease identifier \"01\" has a "
            "leading zero");
  EXPECT_NE(Version::parse(std::string(300, '1')).status().message().find("longer than 256"),
            std::string::npos);
}

TEST(SemverTest, PrecedenceFollowsSemverOrgExample) {
  // semver.org §11.4's example chain, in increasing precedence.
  const std::vector<std::string> chain = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                          "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                                          "1.0.0-rc.1",  "1.0.0"};
  for (size_t i = 0; i < chain.size(); ++i) {
    for (size_t j = 0; j < chain.size(); ++j) {
      int expected = i < j ? -1 : (i > j ? 1 : 0);
      EXPECT_EQ(compare(v(chain[i]), v(chain[j])), expected) << chain[i] << " vs " << chain[j];
    }
  }
}

TEST(SemverTest, PrecedenceOfNumbersAndIdentifiers) {
  EXPECT_LT(v("1.0.0"), v("2.0.0"));
  EXPECT_LT(v("2.0.0"), v("2.1.0"));
  EXPECT_LT(v("2.1.0"), v("2.1.1"));
  EXPECT_LT(v("1.9.0"), v("1.10.0"));  // numeric, not lexical
  EXPECT_LT(v("1.0.0-2"), v("1.0.0-10"));
  EXPECT_LT(v("1.0.0-99"), v("1.0.0-a"));  // numeric identifiers sort first
  EXPECT_LT(v("1.0.0-B"), v("1.0.0-a"));   // ASCII order
  EXPECT_LT(v("1.0.0-rc.1"), v("1.0.0"));
  EXPECT_LT(v("1.0.0-99999999999999999999999"), v("1.0.0-100000000000000000000000"));
  EXPECT_EQ(v("1.0.0+a"), v("1.0.0+b"));  // build metadata is ignored
  EXPECT_GE(v("1.0.0"), v("1.0.0"));
  EXPECT_GT(v("1.0.1"), v("1.0.0"));
  EXPECT_LE(v("1.0.0-1"), v("1.0.0-1"));
}

struct RangeCase {
  const char* range;
  const char* version;
  bool expected;
};

// Expectations match node-semver (npm) with includePrerelease off.
const RangeCase kRangeCases[] = {
    // comparators
    {"1.2.3", "1.2.3", true},
    {"=1.2.3", "1.2.3", true},
    {"1.2.3", "1.2.4", false},
    {">1.2.3", "1.2.4", true},
    {">1.2.3", "1.2.3", false},
    {">=1.2.3", "1.2.3", true},
    {"<1.2.3", "1.2.2", true},
    {"<1.2.3", "1.2.3", false},
    {"<=1.2.3", "1.2.3", true},
    {">= 1.2.3", "1.5.0", true},
    {">=1.2.3 <2", "1.9.9", true},
    {">=1.2.3 <2", "2.0.0", false},
    {">=0.1.0 <2.0.0", "0.1.0", true},
    // caret
    {"^1.2.3", "1.2.3", true},
    {"^1.2.3", "1.9.0", true},
    {"^1.2.3", "2.0.0", false},
    {"^1.2.3", "1.2.2", false},
    {"^1.2", "1.2.0", true},
    {"^1", "1.99.0", true},
    {"^1.x", "1.0.0", true},
    {"^0.2.3", "0.2.9", true},
    {"^0.2.3", "0.3.0", false},
    {"^0.0.3", "0.0.3", true},
    {"^0.0.3", "0.0.4", false},
    {"^0.0", "0.0.9", true},
    {"^0.0", "0.1.0", false},
    {"^0.0.x", "0.0.5", true},
    {"^0", "0.9.9", true},
    {"^0", "1.0.0", false},
    {"^0.x", "0.5.0", true},
    {"^*", "3.0.0", true},
    {"^ 1.2.3", "1.3.0", true},
    // tilde
    {"~1.2.3", "1.2.9", true},
    {"~1.2.3", "1.3.0", false},
    {"~1.2", "1.2.0", true},
    {"~1.2", "1.3.0", false},
    {"~1", "1.9.0", true},
    {"~1", "2.0.0", false},
    {"~0.2.3", "0.2.5", true},
    {"~>1.2.3", "1.2.4", true},
    // x-ranges and partials
    {"*", "0.0.0", true},
    {"*", "99.0.0", true},
    {"x", "3.1.4", true},
    {"1.x", "1.4.0", true},
    {"1.x", "2.0.0", false},
    {"1.2.x", "1.2.9", true},
    {"1.2.x", "1.3.0", false},
    {"1.2.*", "1.2.0", true},
    {"1.X", "1.0.0", true},
    {"1", "1.0.1", true},
    {"1.2", "1.2.7", true},
    {">1", "1.9.9", false},
    {">1", "2.0.0", true},
    {">1.2", "1.3.0", true},
    {">1.2", "1.2.9", false},
    {"<1.2", "1.1.9", true},
    {"<1.2", "1.2.0", false},
    {"<=1.2", "1.2.9", true},
    {"<=1.2", "1.3.0", false},
    {">=1", "1.0.0", true},
    {"<*", "0.0.0", false},
    {">*", "1.0.0", false},
    {">=*", "1.0.0", true},
    // hyphen ranges
    {"1.2.3 - 2.3.4", "1.2.3", true},
    {"1.2.3 - 2.3.4", "2.3.4", true},
    {"1.2.3 - 2.3.4", "2.3.5", false},
    {"1.2 - 2.3.4", "1.2.0", true},
    {"1.2.3 - 2.3", "2.3.9", true},
    {"1.2.3 - 2.3", "2.4.0", false},
    {"1.2.3 - 2", "2.9.9", true},
    {"1.2.3 - 2", "3.0.0", false},
    {"* - 2", "0.0.1", true},
    // alternatives
    {"^1.2.0 || >=3.0.0 <4", "1.5.0", true},
    {"^1.2.0 || >=3.0.0 <4", "2.0.0", false},
    {"^1.2.0 || >=3.0.0 <4", "3.9.0", true},
    {"1.0.0 || 2.0.0", "2.0.0", true},
    {"1.0.0||2.0.0", "1.0.0", true},
    // prereleases match only when a comparator names the same major.minor.patch
    {"^1.2.0", "1.3.0-alpha", false},
    {"^1.2.0", "1.2.0-alpha", false},
    {"^1.2.3-beta.2", "1.2.3-beta.4", true},
    {"^1.2.3-beta.2", "1.2.3-beta.1", false},
    {"^1.2.3-beta.2", "1.2.4-beta.2", false},
    {"^1.2.3-beta.2", "1.5.0", true},
    {">1.2.3-alpha.3", "1.2.3-alpha.7", true},
    {">1.2.3-alpha.3", "3.4.5-alpha.9", false},
    {">1.2.3-alpha.3", "3.4.5", true},
    {"*", "1.0.0-rc.1", false},
    {"1.x", "1.1.0-rc.1", false},
    {"<2.0.0", "2.0.0-rc.1", false},
    {"<2.0.0", "1.9.0-rc.1", false},
    {"1.0.0-rc.1", "1.0.0-rc.1", true},
    {">=1.0.0-rc.1 <2", "1.0.0", true},
    {"~0.0.1-beta", "0.0.1-beta.1", true},
    {"^0.0.3-beta", "0.0.3-pr.2", true},
    {"^0.0.3-beta", "0.0.4-beta", false},
    {"1.0.0-rc.1 || 2.0.0-rc.1", "2.0.0-rc.1", true},
    {"1.2.3 - 2.0.0-rc.2", "2.0.0-rc.1", true},
    {"1.2.3 - 2.0.0", "2.0.0-rc.1", false},
    // build metadata is ignored when matching
    {"1.2.3", "1.2.3+build.5", true},
    {"^1.0.0+x", "1.1.0", true},
};

TEST(SemverTest, RangesMatchLikeNpm) {
  for (const auto& c : kRangeCases) {
    EXPECT_EQ(range(c.range).contains(v(c.version)), c.expected)
        << "\"" << c.range << "\" contains " << c.version;
  }
}

// Found by tests/fuzz/semver_fuzz.cc: bumping the largest number for a range's upper bound
// wrapped to 0, so "^18446744073709551615.0.0" did not contain its own version.
TEST(SemverTest, RangesAtTheLargestNumbersHaveNoUpperBoundToWrap) {
  const std::string max = "18446744073709551615";
  EXPECT_TRUE(range("^" + max + ".0.0").contains(v(max + ".0.0")));
  EXPECT_TRUE(range("^" + max + ".0.0").contains(v(max + "." + max + ".3")));
  EXPECT_TRUE(range(max).contains(v(max + ".1.2")));
  EXPECT_TRUE(range("<=" + max).contains(v(max + "." + max + "." + max)));
  EXPECT_TRUE(range("~1." + max).contains(v("1." + max + ".7")));
  EXPECT_FALSE(range("~1." + max).contains(v("2.0.0")));
  EXPECT_TRUE(range("^0.0." + max).contains(v("0.0." + max)));
  EXPECT_FALSE(range("^0.0." + max).contains(v("0.1.0")));
  EXPECT_TRUE(range("1.0.0 - " + max).contains(v(max + ".9.9")));
  EXPECT_FALSE(range(">" + max).contains(v(max + "." + max + "." + max)));
  EXPECT_TRUE(range(">1." + max).contains(v("2.0.0")));
}

TEST(SemverTest, RangeKeepsItsText) {
  EXPECT_EQ(range("  ^1.2.0 || 3.x ").text(), "^1.2.0 || 3.x");
}

TEST(SemverTest, RefusesGarbageRangesQuotingThem) {
  const char* bad[] = {
      "",          "   ",      "^1..2",     "1.2.3 ||", "|| 1.0.0", "1.0.0 || || 2.0.0",
      ">=",        "~",        "abc",       "1.2.3.4",  ">=01.2.3", "1.x.3",
      "1.2-beta",  "1.2.3 - ", "1 - 2 - 3", "1.2.3 -2", "^v1.2.3",  "=>1.2.3",
      "1.2.3 x y", ">>1",      "1.2.3-",    "^1.2.3+",  "1.*.1",    "!1.2.3",
      "<=>1"};
  for (const char* text : bad) {
    auto parsed = VersionRange::parse(text);
    ASSERT_FALSE(parsed.isOk()) << "accepted \"" << text << "\"";
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalid);
    EXPECT_NE(parsed.status().message().find(std::string("\"") + text +
                                             "\" is not a valid "
                                             "version range"),
              std::string::npos)
        << parsed.status().message();
  }
}

TEST(SemverTest, ExplainsWhyARangeIsInvalid) {
  EXPECT_EQ(VersionRange::parse("^1..2").status().message(),
            "\"^1..2\" is not a valid version range: \"1..2\" is not a valid version: minor is "
            "empty");
  EXPECT_EQ(VersionRange::parse("1.2.3 ||").status().message(),
            "\"1.2.3 ||\" is not a valid version range: an alternative around \"||\" is empty");
  EXPECT_EQ(VersionRange::parse("").status().message(),
            "\"\" is not a valid version range: it is empty (use \"*\" for any version)");
}

TEST(SemverTest, QuotesControlCharactersSafely) {
  auto parsed = VersionRange::parse("^1.0.0\n<script>");
  ASSERT_FALSE(parsed.isOk());
  EXPECT_EQ(parsed.status().message().find('\n'), std::string::npos);
  EXPECT_NE(parsed.status().message().find("\\u000a"), std::string::npos);
}

TEST(SemverTest, RefusesOverlongRanges) {
  std::string text;
  while (text.size() <= 1024) text += "1.0.0 || ";
  text += "1.0.0";
  auto parsed = VersionRange::parse(text);
  ASSERT_FALSE(parsed.isOk());
  EXPECT_NE(parsed.status().message().find("longer than 1024"), std::string::npos);
}

}  // namespace
}  // namespace trellis::kernel::plugin
