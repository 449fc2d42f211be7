-- The on_request policy bench/run.sh --scenario policy applies: a header check and a CIDR
-- match, as an admin would write to fence an API. Both pass for wrk on loopback.
local allowed = {"127.0.0.0/8", "10.0.0.0/8"}

function on_request(ctx, req)
  if req.headers["x-blocked"] then
    return policy.deny(403, "blocked by policy")
  end
  if not policy.cidr_match(req.remote_addr, allowed) then
    return policy.deny(403, "not from an allowed network")
  end
  return policy.allow()
end
