-- trellis/hello-lua: the Lua twin of plugins/hello. GET /hello-lua/{name} greets the
-- caller and counts, per tenant, how often each name was greeted (in the tenant's KV
-- store); GET /hello-lua (no name) lists the names greeted so far.

local MAX_NAME_BYTES = 64
local MAX_CAS_ATTEMPTS = 16

-- Set by init, which runs once per serving thread (each has its own Lua state).
local greeting = "Hello"
local greeted -- the metric's name

-- Increments visits/<name> with compare-and-set, so concurrent requests on other threads
-- never lose a count. Returns the new count, or nil, message, code.
local function count_visit(name)
  local key = "visits/" .. name
  for _ = 1, MAX_CAS_ATTEMPTS do
    local value, version_or_err, code = trellis.kv.get(key)
    if value == nil and code ~= "not_found" then
      return nil, version_or_err, code
    end
    local count = value and tonumber(value) or 0
    local expected = value and version_or_err or 0 -- 0: the key must still be absent
    local ok, err, put_code = trellis.kv.put(key, tostring(count + 1), expected)
    if ok then
      return count + 1
    end
    if put_code ~= "conflict" then
      return nil, err, put_code
    end
  end
  return nil, "too much contention on " .. key, "conflict"
end

local function greet(ctx, req)
  local name = req.params.name
  if #name == 0 or #name > MAX_NAME_BYTES or name:find("[^\32-\126]") then
    return 400,
      { type = "about:blank", title = "Bad Request", status = 400,
        detail = "name must be 1-64 printable ASCII characters" },
      { ["Content-Type"] = "application/problem+json" }
  end
  local visits, err = count_visit(name)
  if not visits then
    return nil, err -- logged with plugin and tenant; the client gets a 500 (or the quota's status)
  end
  trellis.metrics.record(greeted, 1)
  -- Delivery is best-effort: a full event queue is not the caller's problem.
  trellis.events.publish("hello.greeted", trellis.json.encode({ name = name }))
  return 200, { message = greeting .. ", " .. name .. "!", visits = visits, tenant = ctx.tenant }
end

local function names(ctx, req)
  local listed, err = trellis.kv.list("visits/", "", 100)
  if not listed then
    return nil, err
  end
  local out = trellis.json.array() -- no names yet: [] rather than {}
  for _, entry in ipairs(listed) do
    out[#out + 1] = { name = entry.key:sub(#"visits/" + 1), visits = tonumber(entry.value) }
  end
  return { status = 200, body = { names = out } }
end

function init(t)
  greeting = trellis.config("greeting") or "Hello"
  greeted = t.counter("hello_lua_greetings_total", "Greetings served by trellis/hello-lua")
  t.route("GET", "/hello-lua/{name}", greet)
  t.route("GET", "/hello-lua", names)
  trellis.log.info("hello-lua ready, greeting with", greeting)
end
