-- Integration tests against the deployed API and site: auth flows, content creation, OAuth
-- and the AI services, each an area of the app's tests/integration, read from their JUnit
-- report. The stage fails when any test fails (the notification names the tests phase).
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")
local App = require("lib.app")
local junit = require("lib.junit")

local AREAS = { "auth", "content", "oauth", "ai" }

return function(ctx)
  local app = App.of(ctx)
  local api, site = ctx.outputs["deploy-infrastructure"].api_url, ctx.outputs["deploy-frontend"].url
  local path = app.dir .. "/reports/integration.xml"
  fs.remove(path)
  local r = proc.run{ "npm", "run", "--silent", "test:integration", cwd = app.dir, name = "integration", timeout = 900,
    env = { API_URL = api, APP_URL = site } }
  local report, why = junit.read(path)
  if not report then error(("no integration test report (exit %s): %s"):format(r.code, why), 0) end
  ctx:artifact("integration-tests.xml", assert(fs.read(path)))
  local areas, failures = {}, {}
  for _, area in ipairs(AREAS) do areas[area] = { passed = 0, failed = 0 } end
  for _, c in ipairs(report.cases) do
    local text = ((c.suite or "") .. " " .. c.name):lower()
    for _, area in ipairs(AREAS) do
      if text:find(area, 1, true) then
        local a = areas[area]
        if c.status == "failed" then a.failed = a.failed + 1 elseif c.status == "passed" then a.passed = a.passed + 1 end
        break
      end
    end
    if c.status == "failed" then failures[#failures + 1] = ("%s: %s"):format(c.name, c.message or "failed") end
  end
  local passed = r.ok and report.failed == 0 and report.tests > 0
  ctx.log.info(("integration tests: %d of %d passed against %s"):format(report.passed, report.tests, api))
  if not passed then
    error(("integration tests failed: %d of %d — %s"):format(report.failed, report.tests,
      table.concat(failures, "; "):sub(1, 500)), 0)
  end
  return { passed = true, tests = report.tests, failed = report.failed, areas = areas, api_url = api, url = site }
end
