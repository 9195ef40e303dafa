-- The bench scripts' worker pool: COUNT jobs, WIDTH in flight. Workers pull from one shared
-- counter instead of owning fixed slices, so a slow job only delays its own worker, the way
-- xargs -P and the node pools behave; tasks are coroutines on one thread, so the
-- check-and-increment cannot race.
local task = require("stagehost.task")

local pool = {}

-- pool.run(name, count, width, job) -> seconds from the first job to the last end.
-- job() -> nil when the result is good, else a description of what was wrong. Any bad job or
-- failed worker ends the process with exit 1 and one line naming the first bad one.
function pool.run(name, count, width, job)
  local started, good, bad, first_bad = 0, 0, 0, nil
  local function worker()
    while started < count do
      started = started + 1
      local wrong = job()
      if wrong == nil then
        good = good + 1
      else
        bad = bad + 1
        first_bad = first_bad or wrong
      end
    end
  end
  local t0 = task.now()
  local workers = {}
  for i = 1, width do workers[i] = task.spawn(worker) end
  for i = 1, width do
    local ok, err = workers[i]:join()
    if not ok then
      io.stderr:write(name, ": worker ", i, " failed: ", tostring(err), "\n")
      os.exit(1)
    end
  end
  if good ~= count then
    io.stderr:write(("%s: %d of %d good, %d bad; first bad: %s\n"):format(name, good, count, bad,
      tostring(first_bad)))
    os.exit(1)
  end
  return task.now() - t0
end

return pool
