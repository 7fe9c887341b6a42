-- bench/shapes `api` load: a new connection per request (as many API clients open them),
-- three GETs of the collection for every POST that creates a server.
local n = 0
local body = '{"server": {"name": "vm"}}'

request = function()
  n = n + 1
  if n % 4 == 0 then
    return wrk.format("POST", "/v2/servers",
      { ["Content-Type"] = "application/json", ["Connection"] = "close" }, body)
  end
  return wrk.format("GET", "/v2/servers", { ["Connection"] = "close" })
end
