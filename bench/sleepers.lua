-- Many-tasks benchmark, stagehost side: N tasks each sleeping S seconds, all joined.
-- usage: stagehost sleepers.lua [N=10000] [S=0.2]; prints "ok N", exits 1 on a wrong result.
local task = require("stagehost.task")

local n = math.tointeger(tonumber(arg[1])) or 10000
local seconds = tonumber(arg[2]) or 0.2

local tasks = {}
for i = 1, n do
  -- Each task returns its index so the join loop proves every one ran to the end.
  tasks[i] = task.spawn(function()
    task.sleep(seconds)
    return i
  end)
end

local sum = 0
for i = 1, n do
  local ok, v = tasks[i]:join()
  if not ok or v ~= i then
    io.stderr:write(("sleepers.lua: task %d ended with %s, %s\n"):format(i, tostring(ok), tostring(v)))
    os.exit(1)
  end
  sum = sum + v
end
if sum ~= n * (n + 1) // 2 then
  io.stderr:write("sleepers.lua: wrong checksum ", sum, "\n")
  os.exit(1)
end
print("ok " .. n)
