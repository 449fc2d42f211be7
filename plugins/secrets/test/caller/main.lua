-- test/secrets-caller: POST /secrets-caller/{method} with a JSON body calls secrets.v1's
-- method for the calling tenant; the answer comes back as is, a failure as 502 "<code>: <message>".
local function call(ctx, req)
  local answer, err, code = trellis.service.call("secrets.v1", req.params.method, req.body)
  if answer == nil then
    return 502, tostring(code) .. ": " .. tostring(err), {["Content-Type"] = "text/plain"}
  end
  return 200, answer, {["Content-Type"] = "application/json"}
end

function init(t)
  t.route("POST", "/secrets-caller/{method}", call)
end
