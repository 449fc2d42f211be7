#include "services/script/script.h"

#include <algorithm>
#include <cstdint>
#include <new>

namespace trellis::kernel::services::script {
namespace {

// What the marshal functions share with call(). They run inside Lua's protected call, so
// they keep only trivially destructible objects in their frames (see sandbox.h).
struct CallIo {
  std::string_view input;
  std::string output;
  bool has_output = false;
  bool decoding = false;  // set while json_decode reads the input: its error is the input's
  bool too_large = false;
  bool out_of_memory = false;
};

int pushInput(lua_State* L, void* data) {
  auto* io = static_cast<CallIo*>(data);
  lua_pushcfunction(L, lua::jsonDecode);
  lua_pushlstring(L, io->input.data(), io->input.size());
  io->decoding = true;
  lua_call(L, 1, 1);
  io->decoding = false;
  return 1;
}

bool copyOut(CallIo* io, const char* p, size_t n) noexcept {
  try {
    io->output.assign(p, n);
    return true;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

int readOutput(lua_State* L, void* data) {
  auto* io = static_cast<CallIo*>(data);
  lua_pushcfunction(L, lua::jsonEncode);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);  // an unencodable result is the script's error
  size_t n = 0;
  const char* p = lua_tolstring(L, -1, &n);
  if (n > kMaxJsonBytes) {
    io->too_large = true;
    return luaL_error(L, "the result is %d bytes of JSON; at most %d are allowed",
                      static_cast<int>(std::min<size_t>(n, INT32_MAX)),
                      static_cast<int>(kMaxJsonBytes));
  }
  if (!copyOut(io, p, n)) {
    io->out_of_memory = true;
    return luaL_error(L, "the host could not hold the result");
  }
  io->has_output = true;
  return 0;
}

const luaL_Reg kJson[] = {{"encode", lua::jsonEncode},
                          {"decode", lua::jsonDecode},
                          {"array", lua::jsonArray},
                          {nullptr, nullptr}};

bool isChunkName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return c >= 0x20 && c != 0x7f; });
}

}  // namespace

lua::Budget scriptBudget(const Request& asked, const lua::Budget& ceiling) {
  lua::Budget b = kDefaultBudget;
  if (asked.instructions) b.instructions = asked.instructions;
  if (asked.memory_bytes) b.memory_bytes = asked.memory_bytes;
  if (asked.wall_ms) b.wall_time = std::chrono::milliseconds(asked.wall_ms);
  b.instructions = std::min(b.instructions, ceiling.instructions);
  b.memory_bytes = std::max<size_t>(std::min(b.memory_bytes, ceiling.memory_bytes), 64 * 1024);
  b.wall_time = std::min(b.wall_time, ceiling.wall_time);
  return b;
}

Status statusOf(const lua::CallResult& r, std::string_view what) {
  switch (r.outcome) {
    case lua::Outcome::kOk: return Status::ok();
    case lua::Outcome::kError: return Status::invalid(r.error);
    case lua::Outcome::kInstructionLimit:
    case lua::Outcome::kMemoryLimit:
      return {StatusCode::kQuotaExceeded, std::string(what) + ": " + r.error};
    case lua::Outcome::kWallTimeLimit:
      return {StatusCode::kTimeout, std::string(what) + ": " + r.error};
  }
  return Status::internal(std::string(what) + ": " + r.error);
}

bool isFunctionName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!alpha(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alpha(c) || (c >= '0' && c <= '9'); });
}

Result<std::unique_ptr<Script>> Script::load(std::string_view source, std::string_view name,
                                             const lua::Budget& budget, std::string label) {
  const std::string chunk = name.empty() ? "script" : std::string(name);
  if (!isChunkName(chunk)) {
    return Status::invalid("a script's name must be 1 to 128 printable bytes");
  }
  if (source.empty()) return Status::invalid(chunk + ": the source is empty");
  if (source.size() > kMaxSourceBytes) {
    return Status::invalid(chunk + ": the source is " + std::to_string(source.size()) +
                           " bytes; at most " + std::to_string(kMaxSourceBytes) + " are allowed");
  }
  if (source.front() == '\x1b') return Status::invalid(chunk + ": binary chunks are refused");
  auto sb = lua::Sandbox::create(budget);
  if (!sb) return sb.status();
  if (Status s = (*sb)->addLibrary("json", kJson, nullptr); !s) return s;
  (*sb)->setLabel(std::move(label));
  lua::CallResult r = (*sb)->load(source, chunk);
  if (!r.ok()) return statusOf(r, chunk);
  return std::unique_ptr<Script>(new Script(std::move(*sb), chunk));
}

Result<std::string> Script::call(std::string_view function, std::string_view input_json) {
  if (!isFunctionName(function)) {
    return Status::invalid(
        "a function name must be 1 to 128 bytes of [A-Za-z0-9_], not "
        "starting with a digit");
  }
  if (input_json.size() > kMaxJsonBytes) {
    return Status::invalid("the input is " + std::to_string(input_json.size()) +
                           " bytes; at most " + std::to_string(kMaxJsonBytes) + " are allowed");
  }
  const std::string fn(function);
  std::lock_guard lock(mu_);
  if (!sb_->hasFunction(fn.c_str())) {
    return Status::notFound(name_ + " defines no function " + fn);
  }
  CallIo io;
  io.input = input_json.empty() ? std::string_view("null") : input_json;
  lua::CallResult r = sb_->call(fn.c_str(), pushInput, readOutput, &io);
  last_ = r.usage;
  if (!r.ok()) {
    if (r.outcome == lua::Outcome::kError && io.decoding) {
      return Status::invalid("the input is not JSON: " + r.error);
    }
    if (io.out_of_memory) return Status::internal(name_ + ": " + r.error);
    return statusOf(r, name_);
  }
  if (!io.has_output) return std::string("null");
  return std::move(io.output);
}

lua::Usage Script::lastUsage() const {
  std::lock_guard lock(mu_);
  return last_;
}

}  // namespace trellis::kernel::services::script
