-- acme/greeter-lua: the Lua plugin of docs/plugin-guide.md, section 7.
local greeting = "Hello"

local function greet(ctx, req)
  local name = req.params.name
  local count = tonumber(trellis.kv.get("seen/" .. name) or 0) -- not_found: 0
  local ok, err = trellis.kv.put("seen/" .. name, tostring(count + 1))
  if not ok then return nil, err end -- logged; the client gets a 500
  return 200, { greeting = greeting .. ", " .. name, seen = count + 1, tenant = ctx.tenant }
end

function init(t)
  greeting = trellis.config("greeting") or greeting
  t.route("GET", "/greeter-lua/{name}", greet)
end
