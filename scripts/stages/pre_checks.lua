-- Pre-deployment checks: four at once, then the checklist the approver sees. A failed check
-- does not stop the flow (the seed goes on to the approval even if checks failed): it is
-- reported in the checklist for the approver to weigh.
local task = require("stagehost.task")
local proc = require("stagehost.proc")

local CHECKS = {
  { name = "lint", label = "Lua sources parse",
    shell = "find stdlib scripts tests -name '*.lua' -print0 | xargs -0 -n1 luac5.4 -p" },
  { name = "typecheck", label = "C sources compile cleanly",
    shell = "cc -fsyntax-only -std=gnu11 -Wall -Wextra -Werror $(pkg-config --cflags lua5.4 libuv libcjson libcurl libcrypto sqlite3) -DSTAGEHOST_VERSION='\"0\"' host/*.c bindings/*.c" },
  { name = "unit-tests", label = "unit tests pass", argv = { "tests/lua/test_json.lua", "tests/lua/test_task.lua" } },
  { name = "security", label = "no credentials in the sources",
    shell = "! grep -rnE 'AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|-----BEGIN [A-Z ]*PRIVATE KEY' --include='*.lua' --include='*.c' --include='*.h' --include='*.md' --exclude-dir=node_modules --exclude-dir=.git ." },
}

local function run_check(root, check)
  if check.argv then -- each test file with this very stagehost
    for _, file in ipairs(check.argv) do
      local r = proc.run{ proc.executable(), file, cwd = root, name = check.name, timeout = 300,
        env = { STAGEHOST_BIN = proc.executable() } }
      if not r.ok then return r end
    end
    return { ok = true, code = 0 }
  end
  return proc.run{ shell = check.shell, cwd = root, name = check.name, timeout = 300 }
end

return function(ctx)
  local root = ctx.pipeline.dir .. "/.."
  local fns = {}
  for i, check in ipairs(CHECKS) do fns[i] = function() return run_check(root, check) end end
  local results = task.all(fns)

  local lines, failed, summary = { "## Deployment checklist", "" }, 0, {}
  for i, check in ipairs(CHECKS) do
    local ok = results[i].ok
    if not ok then failed = failed + 1 end
    summary[check.name] = ok and "passed" or "failed"
    lines[#lines + 1] = ("- [%s] %s (%s)%s"):format(ok and "x" or " ", check.label, check.name,
      ok and "" or (" — FAILED, exit " .. results[i].code))
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = ("%d of %d checks passed; tag %s, requested by %s"):format(#CHECKS - failed, #CHECKS,
    ctx.run.tag or "(none)", ctx.run.actor or "?")
  local checklist = table.concat(lines, "\n") .. "\n"
  ctx:artifact("checklist.md", checklist)
  ctx:artifact("check-results.json", summary)
  ctx.log.info(("%d of %d checks passed"):format(#CHECKS - failed, #CHECKS))
  return { checks = summary, failed = failed, checklist = checklist }
end
