-- Tasks: coroutines on the event loop. spawn, join, cancel, sleep, now, timeout, current
-- come from C; all is built on them here.
local core = require("stagehost.core.task")
local errors = require("stagehost.errors")

local task = {}
for name, fn in pairs(core) do task[name] = fn end

-- Failures in key order: array indices by number, then map keys by name.
local function by_key(a, b)
  local ta, tb = type(a.key) == "number", type(b.key) == "number"
  if ta ~= tb then return ta end
  if ta then return a.key < b.key end
  return tostring(a.key) < tostring(b.key)
end

-- "task.all: 2 of 4 functions failed: lint: <its first line>; tests: <its first line>", then the
-- full messages, one per failure, for the log. The first line is what a retry warning shows.
local function failure_message(failures, total)
  table.sort(failures, by_key)
  local short, full = {}, {}
  for i, f in ipairs(failures) do
    local msg = tostring(f.err)
    short[i] = ("%s: %s"):format(tostring(f.key), msg:match("^[^\n]*"))
    full[i] = ("%s: %s"):format(tostring(f.key), (msg:gsub("\n", "\n    ")))
  end
  return ("task.all: %d of %d function%s failed: %s\n  %s"):format(#failures, total,
    total == 1 and "" or "s", table.concat(short, "; "), table.concat(full, "\n  "))
end

-- task.all(fns) runs every function of an array or a map concurrently and returns their first
-- results in the same shape once all have ended. If any raised, it raises after all ended,
-- naming each failure and its message on the first line. Cancelling the caller cancels the
-- functions still running and re-raises the caller's cancellation as it is.
function task.all(fns)
  errors.check_table(fns, 1, "task.all")
  local tasks = {}
  for key, fn in pairs(fns) do
    if type(fn) ~= "function" then
      errors.argument(1, "task.all", "function expected at key %s, got %s", tostring(key), type(fn))
    end
  end
  local total = 0
  for key, fn in pairs(fns) do
    tasks[key] = core.spawn(fn)
    total = total + 1
  end
  local results, failures = {}, {}
  local ok, err = pcall(function()
    for key, t in pairs(tasks) do
      local done, value, _ = t:join()
      if done then
        results[key] = value
      else
        failures[#failures + 1] = { key = key, err = value }
      end
    end
  end)
  if not ok then
    for _, t in pairs(tasks) do t:cancel("task.all was cancelled") end
    error(err, 0)
  end
  if #failures > 0 then error(failure_message(failures, total), 2) end
  return results
end

return task
