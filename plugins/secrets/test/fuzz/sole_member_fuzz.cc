// The transit routes' fast path for one-member bodies (http/sole_member.h), against Poco's
// parser, which the routes fall back to. Property: whatever the fast path accepts, Poco
// parses as an object with exactly that one member holding exactly that string; so the
// answer never depends on which path read the body.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/sole_member.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (std::string_view name : {"plaintext", "ciphertext"}) {
    auto fast = trellis::secrets::http::soleStringMember(body, name);
    if (!fast) continue;
    Poco::JSON::Object::Ptr object;
    try {
      object = Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
    } catch (const std::exception& e) {
      FUZZ_CHECK(false, "the fast path accepted what Poco refuses: " + std::string(e.what()));
    }
    FUZZ_CHECK(object->size() == 1, "the fast path accepted more than one member");
    FUZZ_CHECK(object->has(std::string(name)), "the fast path read another member's name");
    const auto value = object->get(std::string(name));
    FUZZ_CHECK(value.isString(), "the fast path read a value Poco does not see as a string");
    FUZZ_CHECK(value.extract<std::string>() == *fast,
               "the fast path read " + std::string(*fast) + ", Poco " + value.toString());
  }
  return 0;
}
