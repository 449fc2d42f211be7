#include "services/script/script_abi.h"

#include <spdlog/spdlog.h>

#include <cstddef>

#include "runtime/plugin_instance.h"
#include "services/core/host_call.h"
#include "services/script/script.h"

namespace trellis::kernel::services {
namespace {

// Owned by (plugin, tenant). The table hands out shared references, so a close while a
// call runs destroys the state only after that call.
struct ScriptHandle final : HandleObject {
  explicit ScriptHandle(std::unique_ptr<script::Script> s) : script(std::move(s)) {}
  std::unique_ptr<script::Script> script;
};

// The options' fields the plugin's struct_size covers; the rest stay 0 (defaults).
template <typename T>
bool covers(const trellis_script_options* o, const T& field) {
  const auto end =
      reinterpret_cast<const char*>(&field) - reinterpret_cast<const char*>(o) + sizeof(field);
  return o->struct_size >= static_cast<size_t>(end);
}

}  // namespace

trellis_status scriptLoad(const trellis_ctx* c, trellis_str source,
                          const trellis_script_options* options, trellis_handle* out) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = enter(c, "script", "script_load", Tenant::kOptional, &refused);
  if (!ctx) return refused;
  HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return fail(ctx, Status::unavailable("this host holds no handles"));
  if (!out) return fail(ctx, Status::invalid("script_load needs somewhere to put the handle"));
  *out = TRELLIS_HANDLE_NONE;
  if (source.len > 0 && !source.ptr)
    return fail(ctx, Status::invalid("script_load: source is NULL"));
  std::string_view name;
  script::Request asked;
  if (options) {
    if (options->struct_size < offsetof(trellis_script_options, name) + sizeof(trellis_str)) {
      return fail(ctx, Status::invalid("script options: struct_size is too small"));
    }
    if (options->name.len > 0 && !options->name.ptr) {
      return fail(ctx, Status::invalid("script options: name is NULL"));
    }
    name = view(options->name);
    if (covers(options, options->max_instructions)) asked.instructions = options->max_instructions;
    if (covers(options, options->max_memory_bytes)) asked.memory_bytes = options->max_memory_bytes;
    if (covers(options, options->max_wall_ms)) asked.wall_ms = options->max_wall_ms;
  }
  const lua::Budget budget = script::scriptBudget(asked, ctx->plugin->script_ceiling);
  const std::string tenant = ctx->tenant ? ctx->tenant->id : "_system";
  auto loaded = script::Script::load(
      view(source), name, budget,
      "script " + ctx->plugin->id() + " tenant " + tenant + " (" +
          std::string(name.empty() ? "script" : name.substr(0, script::kMaxNameBytes)) + ")");
  if (!loaded) return fail(ctx, loaded.status());
  auto h = handles->open(ownerOf(ctx), HandleKind::kScript,
                         std::make_shared<ScriptHandle>(std::move(*loaded)));
  if (!h) return fail(ctx, h.status());
  *out = *h;
  return TRELLIS_OK;
}

trellis_status scriptCall(const trellis_ctx* c, trellis_handle handle, trellis_str function,
                          trellis_str input_json, trellis_buf* output_json) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = enter(c, "script", "script_call", Tenant::kOptional, &refused);
  if (!ctx) return refused;
  if (!output_json) return fail(ctx, Status::invalid("script_call needs output_json"));
  *output_json = trellis_buf{nullptr, 0};
  if ((function.len > 0 && !function.ptr) || (input_json.len > 0 && !input_json.ptr)) {
    return fail(ctx, Status::invalid("script_call: function or input is NULL"));
  }
  HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return fail(ctx, Status::unavailable("this host holds no handles"));
  auto h = handles->get<ScriptHandle>(ownerOf(ctx), HandleKind::kScript, handle);
  if (!h) return fail(ctx, h.status());
  auto result = (*h)->script->call(view(function), view(input_json));
  if (!result) {
    if (result.status().code() == StatusCode::kQuotaExceeded ||
        result.status().code() == StatusCode::kTimeout) {
      spdlog::warn("plugin={} tenant={} script {} stopped: {}", ctx->plugin->id(),
                   ctx->tenant ? ctx->tenant->id : "-", (*h)->script->name(),
                   result.status().message());
    }
    return fail(ctx, result.status());
  }
  fillBuf(output_json, *result);
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
