-- Fan-out benchmark, stagehost side: COUNT children of `sh -c 'echo hi'`, WIDTH in flight,
-- every stdout captured and checked.
-- usage: stagehost fanout.lua [COUNT=400] [WIDTH=16]; prints "ok COUNT", exits 1 on any bad child.
local task = require("stagehost.task")
local proc = require("stagehost.proc")

local count = math.tointeger(tonumber(arg[1])) or 400
local width = math.tointeger(tonumber(arg[2])) or 16

local started, good, bad, first_bad = 0, 0, 0, nil

-- Workers pull from one shared counter instead of owning fixed slices, so a slow child only
-- delays its own worker, the way xargs -P and the node pool behave. Tasks are coroutines on
-- one thread, so the check-and-increment below cannot race.
local function worker()
  while started < count do
    started = started + 1
    local r = proc.run{"sh", "-c", "echo hi"}
    if r.ok and r.stdout == "hi\n" then
      good = good + 1
    else
      bad = bad + 1
      first_bad = first_bad or ("code=%s stdout=%q stderr=%q"):format(
        tostring(r.code), tostring(r.stdout), tostring(r.stderr))
    end
  end
end

local workers = {}
for i = 1, width do workers[i] = task.spawn(worker) end
for i = 1, width do
  local ok, err = workers[i]:join()
  if not ok then
    io.stderr:write("fanout.lua: worker ", i, " failed: ", tostring(err), "\n")
    os.exit(1)
  end
end

if good ~= count then
  io.stderr:write(("fanout.lua: %d of %d children good, %d bad; first bad: %s\n"):format(
    good, count, bad, tostring(first_bad)))
  os.exit(1)
end
print("ok " .. good)
