-- Integration tests against the deployed build: four suites at once. Any failure fails the
-- stage, which sends the failure notification (no automatic rollback).
local task = require("stagehost.task")
local proc = require("stagehost.proc")

local SUITES = { "tasks", "processes", "files", "crypto" }
local FILES = { tasks = "test_task.lua", processes = "test_proc.lua", files = "test_fs.lua", crypto = "test_crypto.lua" }

return function(ctx)
  local root = ctx.pipeline.dir .. "/.."
  local binary = ctx.outputs["deploy-infrastructure"].binary
  local fns = {}
  for i, suite in ipairs(SUITES) do
    fns[i] = function()
      local r = proc.run{ binary, "tests/lua/" .. FILES[suite], cwd = root, name = suite, timeout = 600,
        env = { STAGEHOST_BIN = binary } }
      return { name = suite, classname = "integration", status = r.ok and "passed" or "failed",
        time = r.duration, message = not r.ok and (r.stdout:match("not ok[^\n]*") or ("exit " .. r.code)) or nil }
    end
  end
  local tests = task.all(fns)
  local failed = 0
  for _, t in ipairs(tests) do if t.status == "failed" then failed = failed + 1 end end
  ctx:artifact("test-report.json", tests)
  if failed > 0 then error(("%d of %d suites failed"):format(failed, #tests), 0) end
  return { tests = tests, failed = failed, passed = #tests }
end
