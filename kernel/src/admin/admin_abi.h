// Host-table entry points for system plugins' admin surface: audit_emit (any plugin adds
// a record to the audit stream), admin_route_add (a system plugin serves a route on the
// admin port under /v1/x/<namespace>/<name>/) and act_for_tenant (a system plugin works
// for one named tenant through a tenant ctx the kernel issues and audits).
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::admin {

trellis_status auditEmit(const trellis_ctx* ctx, trellis_str action, trellis_str resource,
                         trellis_str details_json);
trellis_status adminRouteAdd(const trellis_ctx* ctx, trellis_str method, trellis_str pattern,
                             trellis_str role, trellis_handler_fn handler, void* user);
trellis_status actForTenant(const trellis_ctx* ctx, trellis_str tenant, trellis_str reason,
                            trellis_tenant_fn fn, void* user);

}  // namespace trellis::kernel::admin
