-- HTTP client benchmark, stagehost side: COUNT GETs of URL, WIDTH in flight, every response
-- checked (status 200, body of SIZE bytes).
-- usage: stagehost http_client.lua URL [COUNT=5000] [WIDTH=32] [SIZE=1024]
-- prints "ok COUNT SECONDS" (SECONDS: first request to last response, inside the process);
-- exits 1 on any bad response or transport failure.
local task = require("stagehost.task")
local http = require("stagehost.http")

local url = arg[1] or error("usage: stagehost http_client.lua URL [COUNT] [WIDTH] [SIZE]")
local count = math.tointeger(tonumber(arg[2])) or 5000
local width = math.tointeger(tonumber(arg[3])) or 32
local size = math.tointeger(tonumber(arg[4])) or 1024

local started, good, bad, first_bad = 0, 0, 0, nil

-- Workers pull from one shared counter (as in fanout.lua): tasks are coroutines on one thread,
-- so the check-and-increment cannot race.
local function worker()
  while started < count do
    started = started + 1
    local ok, r = pcall(http.request, { url = url })
    if ok and r.status == 200 and #r.body == size then
      good = good + 1
    else
      bad = bad + 1
      first_bad = first_bad or (ok and ("status %s, %d body bytes"):format(r.status, #r.body) or tostring(r))
    end
  end
end

local t0 = task.now()
local workers = {}
for i = 1, width do workers[i] = task.spawn(worker) end
for i = 1, width do
  local ok, err = workers[i]:join()
  if not ok then
    io.stderr:write("http_client.lua: worker ", i, " failed: ", tostring(err), "\n")
    os.exit(1)
  end
end
local elapsed = task.now() - t0

if good ~= count then
  io.stderr:write(("http_client.lua: %d of %d responses good, %d bad; first bad: %s\n"):format(
    good, count, bad, tostring(first_bad)))
  os.exit(1)
end
print(("ok %d %.6f"):format(good, elapsed))
