// The admin API for system scope (runtime/system_grants.h):
//   GET    /v1/system-grants                 {"grants":[{"plugin","source","active"}]}
//   PUT    /v1/plugins/{ns}/{name}/system    grant: persisted; takes effect when the plugin
//                                            next activates (POST …/activate)
//   DELETE /v1/plugins/{ns}/{name}/system    revoke: the plugin loses system powers at
//                                            once and is refused at its next activation
// A grant in trellis.yaml cannot be revoked here (409 naming the file).
#pragma once

#include <optional>
#include <string_view>

#include "runtime/system_grants.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"

namespace trellis::kernel::runtime {

class PluginManager;

class SystemAdmin {
 public:
  SystemAdmin(SystemGrants& grants, const PluginManager& plugins);
  // nullopt for a path that is not ours. Runs on the admin thread.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);

 private:
  SystemGrants& grants_;
  const PluginManager& plugins_;
  http::Router router_;
};

}  // namespace trellis::kernel::runtime
