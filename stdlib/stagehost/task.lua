-- Tasks: coroutines on the event loop. spawn, join, cancel, sleep, now, timeout, current
-- come from C; all is built on them here.
local core = require "stagehost.core.task"

local task = {}
for name, fn in pairs(core) do task[name] = fn end

-- task.all(fns) runs every function of an array or a map concurrently and returns their first
-- results in the same shape once all have ended. If any raised, it raises after all ended,
-- naming each failure. Cancelling the caller cancels the functions still running.
function task.all(fns)
  if type(fns) ~= "table" then
    error(("bad argument #1 to 'task.all' (table expected, got %s)"):format(type(fns)), 2)
  end
  local tasks = {}
  for key, fn in pairs(fns) do
    if type(fn) ~= "function" then
      error(("bad argument #1 to 'task.all' (function expected at key %s, got %s)"):format(
        tostring(key), type(fn)), 2)
    end
  end
  for key, fn in pairs(fns) do tasks[key] = core.spawn(fn) end
  local results, failures = {}, {}
  local ok, err = pcall(function()
    for key, t in pairs(tasks) do
      local done, value, _ = t:join()
      if done then
        results[key] = value
      else
        failures[#failures + 1] = ("%s: %s"):format(tostring(key), tostring(value))
      end
    end
  end)
  if not ok then
    for _, t in pairs(tasks) do t:cancel("task.all was cancelled") end
    error(err, 0)
  end
  if #failures > 0 then
    table.sort(failures)
    error(("task.all: %d of the functions failed:\n  %s"):format(#failures,
      table.concat(failures, "\n  ")), 2)
  end
  return results
end

return task
