-- Fan-out benchmark, stagehost side: COUNT children of `sh -c 'echo hi'`, WIDTH in flight,
-- every stdout captured and checked.
-- usage: stagehost fanout.lua [COUNT=400] [WIDTH=16]; prints "ok COUNT", exits 1 on any bad child.
local proc = require("stagehost.proc")
local pool = require("pool")

local count = math.tointeger(tonumber(arg[1])) or 400
local width = math.tointeger(tonumber(arg[2])) or 16

pool.run("fanout.lua", count, width, function()
  local r = proc.run{"sh", "-c", "echo hi"}
  if r.ok and r.stdout == "hi\n" then return nil end
  return ("code=%s stdout=%q stderr=%q"):format(tostring(r.code), tostring(r.stdout), tostring(r.stderr))
end)
print("ok " .. count)
