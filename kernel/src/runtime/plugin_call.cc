#include "runtime/plugin_call.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "trellis/kernel/lua/sandbox.h"

namespace trellis::kernel::runtime {

PluginCall::PluginCall(Site site, Post post, std::vector<std::shared_ptr<const void>> keep_alive)
    : site_(std::move(site)), post_(std::move(post)), keep_alive_(std::move(keep_alive)) {
  ctx_.plugin = site_.target->plugin;
  ctx_.tenant = site_.tenant;
  ctx_.principal = site_.principal;
  ctx_.request_id = site_.request_id;
  ctx_.trace = &site_.trace;
  ctx_.phase = Phase::kRequest;
  ctx_.max_host_calls = site_.tenant->quotas.max_host_calls.value_or(UINT64_MAX);
  ctx_.suspendable = post_ ? this : nullptr;
  request_.http = site_.req;
  request_.match = &site_.match;
  request_.path = site_.path;
  request_.query = site_.query;
  response_.http.version(site_.req->version());
  response_.http.result(boost::beast::http::status::ok);
}

PluginCall::~PluginCall() {
  if (pending_)
    runLate(*std::exchange(pending_, std::nullopt),
            {TRELLIS_UNAVAILABLE, 0, "the server stopped before the write was answered"});
}

void PluginCall::run(Conclude conclude) {
  conclude_ = std::move(conclude);
  trellis_status status = TRELLIS_INTERNAL;
  const uint64_t lua_before = lua::Sandbox::threadInstructions();
  try {
    CallScope scope(&ctx_);
    status = site_.target->handler(site_.target->user, &ctx_, &request_, &response_);
  } catch (...) {  // a plugin broke the ABI rule; contain it anyway
    ctx_.error = "exception escaped the plugin handler";
    status = TRELLIS_INTERNAL;
  }
  lua_instructions_ = lua::Sandbox::threadInstructions() - lua_before;
  settle(status);
}

Status PluginCall::canSuspend() const {
  if (pending_) {
    return Status::invalid("another asynchronous call of this request is still pending");
  }
  if (!conclude_) return Status::invalid("the request has been answered already");
  return Status::ok();
}

std::function<void(PluginCall::Outcome)> PluginCall::suspend(trellis_kv_put_done_fn done,
                                                             void* user) {
  pending_ = Completion{done, user};
  // Posted even when storage answers at once, so a completion never runs inside the
  // handler that started it.
  return [self = shared_from_this()](Outcome outcome) {
    const Post& post = self->post_;
    post([self = std::move(self), outcome = std::move(outcome)] { self->resume(outcome); });
  };
}

std::function<void(trellis_status)> PluginCall::suspendOffLoop() {
  pending_ = Completion{};
  // Moves its reference into the posted resumption: the thread that finished the handler
  // keeps none, so the call (and what it keeps alive) ends on the event loop.
  return [self = shared_from_this()](trellis_status status) mutable {
    const Post& post = self->post_;
    post([self = std::move(self), status] { self->resume(Outcome{status, 0, {}, nullptr, 0}); });
  };
}

void PluginCall::resume(const Outcome& outcome) {
  if (!pending_) return;
  Completion completion = *std::exchange(pending_, std::nullopt);
  if (!completion.done) {  // suspendOffLoop: the handler's own status is the answer
    if (conclude_) settle(outcome.status);
    return;
  }
  if (!conclude_) return runLate(completion, outcome);
  ctx_.error = outcome.error;
  if (outcome.refused_quota) {
    ctx_.refused_quota = outcome.refused_quota;
    ctx_.refused_limit = outcome.refused_limit;
  }
  trellis_status status = TRELLIS_INTERNAL;
  try {
    CallScope scope(&ctx_);
    status = completion.done(completion.user, &ctx_, &request_, &response_, outcome.status,
                             outcome.version);
  } catch (...) {
    ctx_.error = "exception escaped the plugin's kv_put_async completion";
    status = TRELLIS_INTERNAL;
  }
  settle(status);
}

void PluginCall::settle(trellis_status status) {
  if (pending_ && status == TRELLIS_OK) return;  // resumes when the call is answered
  // A failure while a call is pending answers now; that call's completion runs late.
  Conclude conclude = std::move(conclude_);
  conclude_ = nullptr;
  conclude(*this, status);
}

void PluginCall::runLate(Completion completion, const Outcome& outcome) {
  if (!completion.done) return;
  static const http::Request kNoRequest;
  static const http::RouteMatch kNoMatch;
  trellis_ctx ctx;
  ctx.plugin = ctx_.plugin;
  ctx.tenant = ctx_.tenant;
  ctx.principal = ctx_.principal;
  ctx.request_id = ctx_.request_id;
  ctx.trace = ctx_.trace;
  ctx.phase = Phase::kRequest;
  ctx.error = outcome.error;
  trellis_request request;
  request.http = &kNoRequest;
  request.match = &kNoMatch;
  trellis_response unseen;
  try {
    CallScope scope(&ctx);
    (void)completion.done(completion.user, &ctx, &request, &unseen, outcome.status,
                          outcome.version);
  } catch (...) {
    spdlog::error("plugin={} request={}: exception escaped a kv_put_async completion",
                  ctx.plugin->id(), ctx.request_id);
  }
}

services::usage::Counters PluginCall::counters() const {
  services::usage::Counters c = ctx_.usage;
  c.host_calls = ctx_.host_calls;
  c.lua_instructions = lua_instructions_;
  return c;
}

}  // namespace trellis::kernel::runtime
