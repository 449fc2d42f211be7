// services/seal/seal_key.h without a server: what a sealed value is bound to, and what a
// damaged one answers. (tests/integration/seal_service_test.cc drives it through the ABI.)
#include "services/seal/seal_key.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace trellis::kernel::services::seal {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<SealKey> key(char fill) {
  auto k = SealKey::fromBytes(std::string(32, fill));
  EXPECT_TRUE(k) << k.status().message();
  return std::move(*k);
}

TEST(SealKeyTest, OpensOnlyForTheBindingItWasSealedFor) {
  auto k = key('a');
  const Binding b{"acme/audit", "", "key/ed25519"};
  auto sealed = k->wrap(b, "seed");
  ASSERT_TRUE(sealed);
  EXPECT_EQ(sealed->rfind("tseal:v1:" + k->id() + ":", 0), 0u);
  EXPECT_EQ(*k->unwrap(b, *sealed), "seed");
  for (const Binding& other :
       {Binding{"acme/other", "", "key/ed25519"}, Binding{"acme/audit", "t1", "key/ed25519"},
        Binding{"acme/audit", "", "key/hmac-own"}}) {
    auto opened = k->unwrap(other, *sealed);
    ASSERT_FALSE(opened);
    EXPECT_EQ(opened.status().code(), StatusCode::kInvalid);
    EXPECT_THAT(opened.status().message(), HasSubstr("does not open for plugin"));
  }
}

TEST(SealKeyTest, FieldBoundariesAreBoundNotJustTheirConcatenation) {
  auto k = key('b');
  auto sealed = k->wrap({"ab", "c", "l"}, "x");
  ASSERT_TRUE(sealed);
  EXPECT_FALSE(k->unwrap({"a", "bc", "l"}, *sealed));
  EXPECT_FALSE(k->unwrap({"ab", "", "cl"}, *sealed));
}

TEST(SealKeyTest, AnotherRootKeyIsNamedNotTried) {
  auto a = key('a');
  auto b = key('b');
  EXPECT_NE(a->id(), b->id());
  EXPECT_EQ(a->id(), key('a')->id());  // a hash of the key: the same on every host
  auto sealed = a->wrap({"p", "", "l"}, "x");
  auto opened = b->unwrap({"p", "", "l"}, *sealed);
  ASSERT_FALSE(opened);
  EXPECT_THAT(opened.status().message(), HasSubstr("sealed under seal key " + a->id() +
                                                   ", but this host's seal key is " + b->id()));
}

TEST(SealKeyTest, DamagedValuesSayWhatIsWrong) {
  auto k = key('c');
  const Binding b{"p", "", "l"};
  auto sealed = *k->wrap(b, "secret");
  EXPECT_THAT(k->unwrap(b, "tseal:v1:" + k->id() + ":").status().message(),
              HasSubstr("its body is not base64url"));
  EXPECT_THAT(k->unwrap(b, "tseal:v1:xyz:AAAA").status().message(), HasSubstr("no seal key id"));
  EXPECT_THAT(k->unwrap(b, "tseal:v1:" + k->id() + ":AAAA").status().message(),
              HasSubstr("its body is not base64url"));  // shorter than nonce and tag
  EXPECT_THAT(k->unwrap(b, sealed + "!").status().message(), HasSubstr("not base64url"));
  EXPECT_THAT(k->unwrap(b, std::string(200 * 1024, 'x')).status().message(),
              HasSubstr("a sealed value is at most"));
}

}  // namespace
}  // namespace trellis::kernel::services::seal
