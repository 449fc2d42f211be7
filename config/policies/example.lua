-- Example admin policy for Trellis (docs/policies.md). Apply it with
--   trellis policy apply config/policies/example.lua
-- and dry-run it first with
--   trellis policy test config/policies/example.lua --input config/policies/example-request.json
--
-- Globals are kept between calls on the same serving thread, so tables built here at the
-- top level (which runs once per thread) are cheap to use in the hooks.

-- Callers from these networks may use the admin-ish routes.
local office = {"10.0.0.0/8", "192.168.0.0/16", "127.0.0.0/8", "::1/128"}

-- Who may call what: block a route for tenants on the free plan, require a client header,
-- and tag every request with the tenant's team.
function on_request(ctx, req)
  if ctx.plan == "free" and req.path:find("^/echo") then
    return policy.deny(403, "the echo API needs a paid plan")
  end
  if req.path:find("^/hello/admin") and not policy.cidr_match(req.remote_addr, office) then
    return policy.deny(403, "admin greetings only from the office network")
  end
  if req.headers["x-debug"] then
    policy.log("debug header from " .. ctx.principal)
    policy.metric("debug_requests")
  end
  local team = ctx.labels.team
  if team then
    return policy.modify({["X-Trellis-Team"] = team, ["X-Debug"] = false})
  end
  return policy.allow()
end

-- Headers only: responses say which policy version decided.
function on_response(ctx, res)
  return policy.modify({["X-Policy-Version"] = tostring(ctx.policy_version)})
end

-- What a tenant sees when a quota refuses it.
function on_quota_exceeded(ctx, q)
  if q.quota == "requests_per_second" then
    return {
      message = "slow down, " .. ctx.tenant .. ": your plan allows " .. q.limit ..
                " requests at once; upgrade at https://example.com/plans",
      headers = {["X-Upgrade-Url"] = "https://example.com/plans"},
    }
  end
end

-- Which plugins may be installed: nothing that asks for egress without review.
function on_plugin_install(ctx, manifest)
  for _, capability in ipairs(manifest.capabilities) do
    if capability == "egress" then
      return policy.deny(403, manifest.id .. " asks for egress: needs a security review")
    end
  end
  return policy.allow()
end
