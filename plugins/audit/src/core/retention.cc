#include "core/retention.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <charconv>

#include "core/canonical_json.h"

namespace trellis::audit {
namespace {

struct Unit {
  char suffix;
  int64_t seconds;
};
constexpr Unit kUnits[] = {{'d', kDaySeconds}, {'h', 3600}, {'m', 60}, {'s', 1}};

Poco::JSON::Object::Ptr parseObject(std::string_view json, std::string_view what) {
  auto v = Poco::JSON::Parser().parse(std::string(json));
  if (v.type() != typeid(Poco::JSON::Object::Ptr)) {
    throw Poco::DataFormatException(std::string(what) + " is a JSON object");
  }
  return v.extract<Poco::JSON::Object::Ptr>();
}

}  // namespace

Result<int64_t> parseDuration(std::string_view text) {
  const auto bad = [&] {
    return Status::invalid("\"" + std::string(text.substr(0, 64)) +
                           "\" is not a duration (a number and s, m, h or d: \"365d\")");
  };
  if (text.size() < 2) return bad();
  const char suffix = text.back();
  int64_t n = 0;
  auto digits = text.substr(0, text.size() - 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size() || n < 0) return bad();
  for (const Unit& u : kUnits) {
    if (u.suffix != suffix) continue;
    if (n > kMaxKeepSeconds / u.seconds + 1) {
      return Status::invalid("\"" + std::string(text) + "\" is longer than 7 years");
    }
    return n * u.seconds;
  }
  return bad();
}

std::string formatDuration(int64_t seconds) {
  for (const Unit& u : kUnits) {
    if (seconds > 0 && seconds % u.seconds == 0) {
      return std::to_string(seconds / u.seconds) + u.suffix;
    }
  }
  return std::to_string(seconds) + "s";
}

std::string RetentionPolicy::toJson() const {
  std::string out = "{\"hold\":" + std::string(hold ? "true" : "false") + ",\"hold_reason\":";
  appendJsonString(out, hold_reason);
  out += ",\"hold_since_ms\":" + std::to_string(hold_since_ms) + ",\"keep\":\"" +
         formatDuration(keep_s) + "\",\"keep_s\":" + std::to_string(keep_s) + "}";
  return out;
}

Result<RetentionPolicy> RetentionPolicy::fromJson(std::string_view json) {
  try {
    auto o = parseObject(json, "a retention policy");
    RetentionPolicy p;
    p.keep_s = o->getValue<int64_t>("keep_s");
    p.hold = o->optValue<bool>("hold", false);
    p.hold_reason = o->optValue<std::string>("hold_reason", "");
    p.hold_since_ms = o->optValue<int64_t>("hold_since_ms", 0);
    if (p.keep_s <= 0 || p.keep_s > kMaxKeepSeconds) {
      return Status::invalid("retention keep_s " + std::to_string(p.keep_s) + " is out of range");
    }
    return p;
  } catch (const Poco::Exception& e) {
    return Status::invalid("not a retention policy: " + e.displayText());
  }
}

std::string PurgedPrefix::baseJson() const {
  return "{\"chain\":\"" + toHex(chain) + "\",\"recorded_as\":" + std::to_string(recorded_as) +
         ",\"through\":" + std::to_string(through) + "}";
}

std::string PurgedPrefix::toJson() const {
  std::string out = "{\"chain\":\"" + toHex(chain) + "\",\"leaves\":[";
  for (size_t i = 0; i < leaves.size(); ++i) out += (i ? ",\"" : "\"") + toHex(leaves[i]) + "\"";
  return out + "],\"through\":" + std::to_string(through) + "}";
}

Result<PurgedPrefix> PurgedPrefix::fromJson(std::string_view json, bool with_leaves) {
  try {
    auto o = parseObject(json, "a purged prefix");
    PurgedPrefix p;
    p.through = o->getValue<uint64_t>("through");
    p.recorded_as = o->optValue<uint64_t>("recorded_as", 0);
    auto chain = hashFromHex(o->getValue<std::string>("chain"));
    if (!chain) return Status::invalid("purged prefix: chain is not 64 hex digits");
    p.chain = *chain;
    if (!with_leaves) return p;
    auto leaves = o->getArray("leaves");
    if (!leaves) return Status::invalid("purged prefix: no \"leaves\" array");
    if (leaves->size() != p.through) {
      return Status::invalid("purged prefix: " + std::to_string(leaves->size()) +
                             " leaf hashes for " + std::to_string(p.through) + " purged records");
    }
    p.leaves.reserve(leaves->size());
    for (size_t i = 0; i < leaves->size(); ++i) {
      auto h = hashFromHex(leaves->getElement<std::string>(static_cast<unsigned>(i)));
      if (!h)
        return Status::invalid("purged prefix: leaf " + std::to_string(i + 1) + " is not hex");
      p.leaves.push_back(*h);
    }
    return p;
  } catch (const Poco::Exception& e) {
    return Status::invalid("not a purged prefix: " + e.displayText());
  }
}

uint64_t purgeBoundary(const std::vector<Checkpoint>& checkpoints, uint64_t purged,
                       int64_t cutoff_ms) {
  uint64_t through = purged;
  for (const Checkpoint& cp : checkpoints) {
    if (cp.time_ms < cutoff_ms && cp.size > through) through = cp.size;
  }
  return through;
}

std::string leavesToHex(const std::vector<Hash>& leaves, size_t from, size_t to) {
  std::string out;
  out.reserve((to - from) * 64);
  for (size_t i = from; i < to; ++i) out += toHex(leaves[i]);
  return out;
}

std::optional<std::vector<Hash>> leavesFromHex(std::string_view hex) {
  if (hex.size() % 64 != 0) return std::nullopt;
  std::vector<Hash> out;
  out.reserve(hex.size() / 64);
  for (size_t i = 0; i < hex.size(); i += 64) {
    auto h = hashFromHex(hex.substr(i, 64));
    if (!h) return std::nullopt;
    out.push_back(*h);
  }
  return out;
}

}  // namespace trellis::audit
