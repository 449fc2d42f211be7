#include "auth/internal/strict_json.h"

#include <Poco/Exception.h>
#include <Poco/JSON/ParseHandler.h>
#include <Poco/JSON/Parser.h>

#include <set>
#include <string>
#include <vector>

namespace trellis::kernel::auth::internal {
namespace {

constexpr int kMaxDepth = 16;

class StrictHandler : public Poco::JSON::ParseHandler {
 public:
  void reset() override {
    ParseHandler::reset();
    keys_.clear();
    duplicate_.clear();
  }
  void startObject() override {
    ParseHandler::startObject();
    keys_.emplace_back();
  }
  void endObject() override {
    ParseHandler::endObject();
    keys_.pop_back();
  }
  void key(const std::string& k) override {
    ParseHandler::key(k);
    if (!keys_.empty() && !keys_.back().insert(k).second && duplicate_.empty()) {
      duplicate_ = k.empty() ? std::string("\"\"") : k;
    }
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> keys_;
  std::string duplicate_;
};

}  // namespace

Result<Poco::JSON::Object::Ptr> parseJsonObject(std::string_view text, std::string_view what) {
  const std::string name(what);
  Poco::SharedPtr<StrictHandler> handler = new StrictHandler;
  Poco::Dynamic::Var root;
  try {
    Poco::JSON::Parser parser(handler);
    parser.setDepth(kMaxDepth);
    root = parser.parse(std::string(text));
  } catch (const Poco::Exception&) {
    // Poco's message may quote the input; the input may be a secret.
    return Status::invalid(name + " is not valid JSON");
  } catch (const std::exception&) {
    return Status::invalid(name + " is not valid JSON");
  }
  if (!handler->duplicate().empty()) {
    return Status::invalid(name + " has a duplicate member");
  }
  if (root.type() != typeid(Poco::JSON::Object::Ptr)) {
    return Status::invalid(name + " is not a JSON object");
  }
  auto obj = root.extract<Poco::JSON::Object::Ptr>();
  if (obj.isNull()) return Status::invalid(name + " is not a JSON object");
  return obj;
}

}  // namespace trellis::kernel::auth::internal
