-- HTTP client benchmark, stagehost side: COUNT GETs of URL, WIDTH in flight, every response
-- checked (status 200, body of SIZE bytes).
-- usage: stagehost http_client.lua URL [COUNT=5000] [WIDTH=32] [SIZE=1024]
-- prints "ok COUNT SECONDS" (SECONDS: first request to last response, inside the process);
-- exits 1 on any bad response or transport failure.
local http = require("stagehost.http")
local pool = require("pool")

local url = arg[1] or error("usage: stagehost http_client.lua URL [COUNT] [WIDTH] [SIZE]")
local count = math.tointeger(tonumber(arg[2])) or 5000
local width = math.tointeger(tonumber(arg[3])) or 32
local size = math.tointeger(tonumber(arg[4])) or 1024

local seconds = pool.run("http_client.lua", count, width, function()
  local ok, r = pcall(http.request, { url = url })
  if ok and r.status == 200 and #r.body == size then return nil end
  return ok and ("status %s, %d body bytes"):format(r.status, #r.body) or tostring(r)
end)
print(("ok %d %.6f"):format(count, seconds))
