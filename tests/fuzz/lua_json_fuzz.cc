// The JSON codec Lua policies and plugins use (kernel/src/lua/json_codec.cc), run in the real
// sandbox. Properties, checked by a script: text that decodes also encodes (unless it holds a
// number beyond double range, or a null in an array, which leaves a hole); what encode writes
// decodes again; when the text is valid UTF-8 the round trip keeps the value (invalid UTF-8
// is replaced when encoding); and a second round trip changes nothing.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_check.h"
#include "trellis/kernel/lua/sandbox.h"

namespace lua = trellis::kernel::lua;

namespace {

constexpr const char* kScript = R"lua(
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end  -- a decoded 1.0 comes back as 1: equal
  for k, v in next, a do
    if not same(v, rawget(b, k)) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

function check(text)
  local ok, value = pcall(json.decode, text)
  if not ok then return "refused" end
  local encoded_ok, encoded = pcall(json.encode, value)
  if not encoded_ok then
    if encoded:find("NaN or infinity", 1, true) then return "infinite" end
    -- null becomes nil, so [null, 1] decodes to a table with a hole, which is not a sequence
    if encoded:find("keys must be strings", 1, true) and text:find("null", 1, true) then
      return "hole"
    end
    error("decoded but does not encode: " .. encoded)
  end
  local back = json.decode(encoded)
  if utf8.len(text) and not same(value, back) then error("round trip changed the value") end
  local again = json.decode(json.encode(back))
  if not same(back, again) then error("second round trip changed the value") end
  return "ok"
end
)lua";

const luaL_Reg kJson[] = {
    {"encode", lua::jsonEncode}, {"decode", lua::jsonDecode}, {nullptr, nullptr}};

std::unique_ptr<lua::Sandbox> makeSandbox() {
  // Generous budgets: a run over them would be a finding of its own, not noise.
  auto sb = lua::Sandbox::create(lua::Budget{.instructions = 50'000'000,
                                             .memory_bytes = 256u << 20,
                                             .wall_time = std::chrono::seconds(20)});
  FUZZ_CHECK(sb, "sandbox: " + sb.status().message());
  FUZZ_CHECK((*sb)->addLibrary("json", kJson, nullptr), "addLibrary failed");
  auto loaded = (*sb)->load(kScript, "lua_json_fuzz.lua");
  FUZZ_CHECK(loaded.ok(), "script: " + loaded.error);
  return std::move(*sb);
}

struct Input {
  const uint8_t* data;
  size_t size;
};

int pushInput(lua_State* L, void* p) {
  auto* in = static_cast<Input*>(p);
  lua_pushlstring(L, reinterpret_cast<const char*>(in->data), in->size);
  return 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<lua::Sandbox> sandbox = makeSandbox();
  Input in{data, size};
  lua::CallResult r = sandbox->call("check", pushInput, nullptr, &in);
  FUZZ_CHECK(r.ok(), std::string(lua::outcomeName(r.outcome)) + ": " + r.error);
  return 0;
}
