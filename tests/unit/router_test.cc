#include "trellis/kernel/http/router.h"

#include <gtest/gtest.h>

namespace trellis::kernel::http {
namespace {

TEST(RouterTest, MatchesLiteralAndParams) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/hello/{name}", 7));
  ASSERT_TRUE(r.add("GET", "/users/{id}/posts/{post}", 8));
  auto m = r.match("GET", "/hello/ann");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->target, 7u);
  EXPECT_EQ(m->param("name"), "ann");
  EXPECT_FALSE(m->param("other"));

  m = r.match("GET", "/users/42/posts/7");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->target, 8u);
  EXPECT_EQ(m->param("id"), "42");
  EXPECT_EQ(m->param("post"), "7");

  EXPECT_FALSE(r.match("GET", "/hello"));
  EXPECT_FALSE(r.match("GET", "/hello/ann/more"));
  EXPECT_FALSE(r.match("POST", "/hello/ann"));
}

TEST(RouterTest, RootPattern) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/", 1));
  EXPECT_EQ(r.match("GET", "/")->target, 1u);
  EXPECT_FALSE(r.match("GET", "/x"));
  EXPECT_FALSE(r.match("GET", ""));
}

TEST(RouterTest, LiteralBeatsParamBeatsRest) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/files/{path...}", 3));
  ASSERT_TRUE(r.add("GET", "/files/{name}", 2));
  ASSERT_TRUE(r.add("GET", "/files/readme", 1));
  EXPECT_EQ(r.match("GET", "/files/readme")->target, 1u);
  EXPECT_EQ(r.match("GET", "/files/other")->target, 2u);
  EXPECT_EQ(r.match("GET", "/files/a/b")->target, 3u);
}

TEST(RouterTest, FirstDifferingSegmentDecides) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/{a}/x", 1));
  ASSERT_TRUE(r.add("GET", "/v1/{b}", 2));
  // The literal in the first segment outranks the literal in the second.
  EXPECT_EQ(r.match("GET", "/v1/x")->target, 2u);
  EXPECT_EQ(r.match("GET", "/v2/x")->target, 1u);
}

TEST(RouterTest, ExactMethodBeatsWildcard) {
  Router r;
  ASSERT_TRUE(r.add("*", "/things/{id}", 1));
  ASSERT_TRUE(r.add("DELETE", "/things/{id}", 2));
  EXPECT_EQ(r.match("DELETE", "/things/1")->target, 2u);
  EXPECT_EQ(r.match("GET", "/things/1")->target, 1u);
  EXPECT_EQ(r.match("PATCH", "/things/1")->target, 1u);
}

TEST(RouterTest, PathSpecificityBeatsMethod) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/a/{x}", 1));
  ASSERT_TRUE(r.add("*", "/a/b", 2));
  EXPECT_EQ(r.match("GET", "/a/b")->target, 2u);
  EXPECT_EQ(r.match("GET", "/a/c")->target, 1u);
}

TEST(RouterTest, RestNeedsAtLeastOneSegmentAndKeepsSlashes) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/static/{path...}", 1));
  EXPECT_FALSE(r.match("GET", "/static"));
  EXPECT_FALSE(r.match("GET", "/static/"));
  auto m = r.match("GET", "/static/css/site.css");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->param("path"), "css/site.css");
  m = r.match("GET", "/static/a");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->param("path"), "a");
}

TEST(RouterTest, QueryStringIsIgnored) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/search/{q}", 1));
  auto m = r.match("GET", "/search/cats?page=2&sort=asc");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->param("q"), "cats");
  ASSERT_TRUE(r.add("GET", "/files/{p...}", 2));
  EXPECT_EQ(r.match("GET", "/files/a/b?x=1")->param("p"), "a/b");
}

TEST(RouterTest, ParamsAreRawViews) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/hello/{name}", 1));
  ASSERT_TRUE(r.add("GET", "/exact", 2));
  auto m = r.match("GET", "/hello/J%C3%BCrgen%2Fx");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->param("name"), "J%C3%BCrgen%2Fx");
  EXPECT_EQ(percentDecode(*m->param("name")), "J\xC3\xBCrgen/x");
  // Literals are compared with the raw bytes.
  EXPECT_FALSE(r.match("GET", "/%65xact"));
}

TEST(RouterTest, UnsafePathsNeverMatch) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/a/{x}", 1));
  ASSERT_TRUE(r.add("GET", "/files/{p...}", 2));
  for (const char* path : {"a/b", "//a/b", "/a//", "/a/b/", "/a/.", "/a/..", "/a/%2e", "/a/%2E%2e",
                           "/files/../etc/passwd", "/files/a/./b", "/files/a//b", "/files/.%2e/x",
                           "http://host/a/b"}) {
    EXPECT_FALSE(r.match("GET", path)) << path;
  }
  // Dots inside a segment are ordinary.
  EXPECT_EQ(r.match("GET", "/a/...")->param("x"), "...");
  EXPECT_EQ(r.match("GET", "/a/.env")->param("x"), ".env");
}

TEST(RouterTest, RejectsMalformedPatterns) {
  Router r;
  for (const char* p :
       {"", "a/b", "/a//b", "/a/", "/{}", "/{...}", "/{a", "/a{b}", "/{a}x", "/{a}/{a}",
        "/{rest...}/x", "/{a-b}", "/a/./b", "/a/../b", "/caf%C3%A9", "/a b", "/a?b"}) {
    Status s = r.add("GET", p, 1);
    EXPECT_EQ(s.code(), StatusCode::kInvalid) << p << " -> " << s.toString();
  }
  EXPECT_EQ(r.add("", "/x", 1).code(), StatusCode::kInvalid);
  EXPECT_EQ(r.add("G T", "/x", 1).code(), StatusCode::kInvalid);
  EXPECT_TRUE(r.add("GET", "/ok/{a_1}/{B2...}", 1));
}

TEST(RouterTest, RejectsEquivalentPatterns) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/a/{x}/c", 1));
  EXPECT_EQ(r.add("GET", "/a/{y}/c", 2).code(), StatusCode::kConflict);
  EXPECT_EQ(r.add("GET", "/a/{x}/c", 2).code(), StatusCode::kConflict);
  EXPECT_TRUE(r.add("POST", "/a/{x}/c", 3));
  EXPECT_TRUE(r.add("*", "/a/{x}/c", 4));
  EXPECT_EQ(r.add("*", "/a/{z}/c", 5).code(), StatusCode::kConflict);
  EXPECT_TRUE(r.add("GET", "/a/b/c", 6));
  EXPECT_TRUE(r.add("GET", "/a/{x...}", 7));
  EXPECT_EQ(r.add("GET", "/a/{tail...}", 8).code(), StatusCode::kConflict);
}

TEST(RouterTest, MatchesOtherMethod) {
  Router r;
  ASSERT_TRUE(r.add("POST", "/items", 1));
  ASSERT_TRUE(r.add("GET", "/items/{id}", 2));
  EXPECT_TRUE(r.matchesOtherMethod("GET", "/items"));
  EXPECT_FALSE(r.matchesOtherMethod("POST", "/items"));
  EXPECT_TRUE(r.matchesOtherMethod("DELETE", "/items/3"));
  EXPECT_FALSE(r.matchesOtherMethod("GET", "/nothing"));
  EXPECT_FALSE(r.matchesOtherMethod("GET", "/items/../items"));
}

// RFC 9110 §9.3.2: HEAD is served wherever GET is; a route for HEAD itself still wins.
TEST(RouterTest, HeadFallsBackToGet) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/items/{id}", 1));
  ASSERT_TRUE(r.add("*", "/any", 2));
  ASSERT_TRUE(r.add("GET", "/both", 3));
  ASSERT_TRUE(r.add("HEAD", "/both", 4));
  ASSERT_TRUE(r.add("*", "/mixed/{x}", 5));
  ASSERT_TRUE(r.add("GET", "/mixed/{x}", 6));
  EXPECT_EQ(r.match("HEAD", "/items/7")->target, 1u);
  EXPECT_EQ(r.match("HEAD", "/any")->target, 2u);
  EXPECT_EQ(r.match("HEAD", "/both")->target, 4u);
  EXPECT_EQ(r.match("GET", "/both")->target, 3u);
  EXPECT_EQ(r.match("HEAD", "/mixed/a")->target, 6u);  // GET fits HEAD better than "*"
  EXPECT_FALSE(r.match("POST", "/items/7"));
  EXPECT_FALSE(r.match("HEAD", "/nothing"));
}

// Routes a caller may not see (a plugin its tenant did not enable) neither match nor turn a
// miss into a 405; a less specific visible route serves instead.
TEST(RouterTest, HiddenRoutesAreAsIfAbsent) {
  Router r;
  ASSERT_TRUE(r.add("GET", "/files/special", 1));
  ASSERT_TRUE(r.add("GET", "/files/{rest...}", 2));
  ASSERT_TRUE(r.add("POST", "/hidden", 3));
  auto not_one_or_three = [](size_t target) { return target != 1 && target != 3; };
  EXPECT_EQ(r.match("GET", "/files/special")->target, 1u);
  EXPECT_EQ(r.match("GET", "/files/special", not_one_or_three)->target, 2u);
  EXPECT_FALSE(r.match("POST", "/hidden", not_one_or_three));
  EXPECT_TRUE(r.matchesOtherMethod("GET", "/hidden"));
  EXPECT_FALSE(r.matchesOtherMethod("GET", "/hidden", not_one_or_three));
  EXPECT_TRUE(r.matchesOtherMethod("POST", "/files/x", not_one_or_three));
}

TEST(PercentDecodeTest, DecodesAndRejectsMalformed) {
  EXPECT_EQ(percentDecode("a%20b%2Fc%2f"), "a b/c/");
  EXPECT_EQ(percentDecode("a+b"), "a+b");
  EXPECT_EQ(percentDecode("a+b", true), "a b");
  EXPECT_EQ(percentDecode(""), "");
  EXPECT_EQ(percentDecode("%e2%82%AC"), "\xE2\x82\xAC");
  EXPECT_FALSE(percentDecode("%"));
  EXPECT_FALSE(percentDecode("abc%2"));
  EXPECT_FALSE(percentDecode("%zz"));
  EXPECT_FALSE(percentDecode("%g0"));
  EXPECT_FALSE(percentDecode("a%00b"));
  EXPECT_FALSE(percentDecode(std::string_view("a\0b", 3)));
}

TEST(QueryParamTest, FindsDecodedValues) {
  EXPECT_EQ(queryParam("a=1&b=2", "a"), "1");
  EXPECT_EQ(queryParam("a=1&b=2", "b"), "2");
  EXPECT_EQ(queryParam("?a=1", "a"), "1");
  EXPECT_FALSE(queryParam("a=1&b=2", "c"));
  EXPECT_FALSE(queryParam("", "a"));
  EXPECT_EQ(queryParam("a&b=2", "a"), "");
  EXPECT_EQ(queryParam("a=&b=2", "a"), "");
  EXPECT_EQ(queryParam("a=1&a=2", "a"), "1");
  EXPECT_EQ(queryParam("q=hello+world%21", "q"), "hello world!");
  EXPECT_EQ(queryParam("first+name=Ann", "first name"), "Ann");
  EXPECT_EQ(queryParam("x%5B%5D=1", "x[]"), "1");
  EXPECT_EQ(queryParam("&&a=1&", "a"), "1");
  EXPECT_EQ(queryParam("ab=1&a=2", "a"), "2");
  EXPECT_EQ(queryParam("a=1=2", "a"), "1=2");
  // A value that does not decode is skipped.
  EXPECT_EQ(queryParam("a=%zz&a=ok", "a"), "ok");
  EXPECT_FALSE(queryParam("a=%00", "a"));
}

}  // namespace
}  // namespace trellis::kernel::http
