-- Leveled, timestamped log lines on stderr, with secrets masked (log.mask, and environment
-- variables whose names contain TOKEN, SECRET, PASSWORD or KEY).
local core = require("stagehost.core.log")
local errors = require("stagehost.errors")

local log = {}
for name, fn in pairs(core) do log[name] = fn end

local in_actions = os.getenv("GITHUB_ACTIONS") == "true"

-- log.group(name, fn, ...) -> fn's results: a folded section under GitHub Actions, a
-- header and a footer with the duration elsewhere. Errors pass through after the footer.
function log.group(name, fn, ...)
  if type(name) ~= "string" then
    errors.argument(1, "log.group", "string expected, got %s", type(name))
  end
  if type(fn) ~= "function" then
    errors.argument(2, "log.group", "function expected, got %s", type(fn))
  end
  local now = require("stagehost.core.task").now
  local started = now()
  if in_actions then
    io.stdout:write("::group::", core.masked(name), "\n")
  else
    core.info("▶ " .. name)
  end
  local result = table.pack(pcall(fn, ...))
  if in_actions then
    io.stdout:write("::endgroup::\n")
  end
  local took = ("%.1fs"):format(now() - started)
  if not result[1] then
    core.error(("✗ %s failed after %s"):format(name, took))
    error(result[2], 0)
  end
  if not in_actions then core.info(("✓ %s (%s)"):format(name, took)) end
  return table.unpack(result, 2, result.n)
end

return log
