// The JSON checks of hot paths (kernel/src/util/json.cc): isJsonObject decides what a
// plugin's audit_emit may store as details, without a parser. Properties:
//   - whatever it accepts, Poco's parser reads as one JSON object: it is never looser than
//     a real parser (and it checks UTF-8 itself, which Poco does not);
//   - readJsonString never reads past the end; what appendJsonString writes of valid UTF-8
//     reads back to the same bytes, and of any bytes to text that escapes and reads back
//     to itself.
#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "trellis/kernel/util/json.h"

using trellis::kernel::util::appendJsonString;
using trellis::kernel::util::isJsonObject;
using trellis::kernel::util::readJsonString;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (isJsonObject(text)) {
    bool object = false;
    try {
      Poco::JSON::Parser parser;
      object = parser.parse(std::string(text)).type() == typeid(Poco::JSON::Object::Ptr);
    } catch (const Poco::Exception& e) {
      FUZZ_CHECK(false,
                 "accepted, but Poco refuses it (" + e.displayText() + "): " + std::string(text));
    }
    FUZZ_CHECK(object, "accepted, but it is not an object: " + std::string(text));
  }

  size_t pos = 0;
  std::string out;
  if (readJsonString(text, pos, out)) FUZZ_CHECK(pos <= text.size(), "read past the end");

  std::string written;
  appendJsonString(written, text);
  FUZZ_CHECK(isJsonObject("{\"k\":" + written + "}"), "escaped text is not JSON: " + written);
  pos = 0;
  FUZZ_CHECK(readJsonString(written, pos, out) && pos == written.size(),
             "escaped text does not read back: " + written);
  // appendJsonString escapes only invalid UTF-8 as \ufffd (a valid U+FFFD goes in raw).
  if (written.find("\\ufffd") == std::string::npos) {
    FUZZ_CHECK(out == text, "valid UTF-8 read back to other bytes: " + written);
  }
  std::string again, out_again;
  appendJsonString(again, out);
  pos = 0;
  FUZZ_CHECK(readJsonString(again, pos, out_again) && out_again == out,
             "escaping what was read back is not stable: " + written + " vs " + again);
  return 0;
}
