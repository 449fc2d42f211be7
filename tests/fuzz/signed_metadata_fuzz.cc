// The registry's signed metadata readers (marketplace/client/src/index.cc): root.json,
// timestamp.json and index.json come from a registry or a mirror the client does not trust.
// The input is one file. It goes through the envelope reader and the signature check
// (Root::loadTrusted, the path a pinned root takes), and its "signed" part (or the input
// itself) through each of the three readers. Property of every reader: what it accepts
// writes back (toJson) to metadata it accepts again, with the same canonical bytes, so what
// the registry signs is what clients read.
#include <Poco/JSON/Object.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/index.h"

namespace m = trellis::marketplace;
using Poco::JSON::Object;

namespace {

std::string canonical(const Object::Ptr& o) {
  auto bytes = m::canonicalJson(o);
  FUZZ_CHECK(bytes, "a reader's output is not canonical JSON: " + bytes.status().message());
  return *bytes;
}

template <typename Metadata>
void checkRoundTrip(const Object::Ptr& signed_part, const char* kind) {
  auto first = Metadata::fromJson(signed_part);
  if (!first) return;
  Object::Ptr written = first->toJson();
  auto second = Metadata::fromJson(written);
  FUZZ_CHECK(second, std::string(kind) + " written back is refused: " + second.status().message());
  FUZZ_CHECK(canonical(second->toJson()) == canonical(written),
             std::string(kind) + " changes when read back: " + canonical(written));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)m::Root::loadTrusted(bytes);

  auto value = m::parseJsonStrict(bytes);
  if (!value || value->type() != typeid(Object::Ptr)) return 0;
  std::vector<Object::Ptr> parts{value->extract<Object::Ptr>()};
  if (parts[0]->isObject("signed")) parts.push_back(parts[0]->getObject("signed"));
  for (const Object::Ptr& part : parts) {
    checkRoundTrip<m::Root>(part, "root.json");
    checkRoundTrip<m::Timestamp>(part, "timestamp.json");
    checkRoundTrip<m::Index>(part, "index.json");
  }
  return 0;
}
