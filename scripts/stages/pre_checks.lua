-- Pre-deployment checks: ESLint, TypeScript, unit tests and the security scan at once, their
-- output live, then the checklist built from what they found. A failed check does not stop
-- the flow: it goes into the checklist, which the approver weighs (the seed goes on to the
-- approval even if checks failed).
local task = require("stagehost.task")
local notify = require("stagehost.notify")
local App = require("lib.app")
local checks = require("lib.checks")

return function(ctx)
  local app = App.of(ctx)
  local installed = App.install(app)
  if not installed.ok then error(("npm ci failed in %s (exit %s)"):format(app.dir, installed.code), 0) end

  local names = app.policy.checks
  local fns = {}
  for i, name in ipairs(names) do
    fns[i] = function() return checks.BY_NAME[name](app, ctx.vars) end
  end
  local results = task.all(fns)

  local markdown, data, passed = checks.checklist(ctx, results, app)
  ctx:artifact("checklist.md", markdown)
  ctx:summary(markdown) -- the job summary under GitHub Actions shows it below the stages
  ctx:artifact("checklist.json", data)
  ctx:artifact("check-results.json", results)
  local unit = require("stagehost.fs").read(app.dir .. "/reports/unit.xml")
  if unit then ctx:artifact("unit-tests.xml", unit) end

  local failed = #results - passed
  notify.send{ event = "checks.completed", status = failed == 0 and "success" or "failure",
    title = ("Checks for %s: %d of %d passed"):format(ctx.run.tag or ctx.run.id, passed, #results), text = markdown }
  ctx.log.info(("%d of %d checks passed%s"):format(passed, #results, failed > 0 and " (the approver sees which failed)" or ""))
  local summary = {}
  for _, r in ipairs(results) do summary[r.name] = r.status end
  return { checks = summary, failed = failed, checklist = markdown }
end
