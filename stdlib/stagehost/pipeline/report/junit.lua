-- JUnit XML from the stages' outputs.tests: one <testsuite> per stage that reported test cases,
-- in the shape CI systems (GitHub, GitLab, Jenkins) read.
local text = require("stagehost.pipeline.report.text")
local view = require("stagehost.pipeline.report.view")

local junit = {}

local esc = text.esc

local function num(n) return ("%.3f"):format(type(n) == "number" and n or 0) end

-- One <testcase>, with <failure>, <error> or <skipped> when it did not pass.
local function testcase(case, stage, s)
  local k = view.case_kind(case)
  local head = ('    <testcase name="%s" classname="%s" time="%s"'):format(esc(case.name or "(unnamed)"),
    esc(case.classname or stage), num(case.time))
  if k == "passed" then
    s[#s + 1] = head .. "/>"
    return
  end
  local msg = case.message and esc(case.message)
  s[#s + 1] = head .. ">"
  if msg then
    s[#s + 1] = ('      <%s message="%s">%s</%s>'):format(k, msg:match("^[^\n]*"), msg, k)
  else
    s[#s + 1] = ("      <%s/>"):format(k)
  end
  s[#s + 1] = "    </testcase>"
end

-- junit.xml(run) -> string, or nil when no stage reported outputs.tests.
function junit.xml(run)
  local suites, all = {}, { tests = 0, failure = 0, error = 0, skipped = 0, time = 0 }
  for _, n in ipairs(view.stage_names(run, nil)) do
    local rec = view.record(run, n)
    local cases = view.tests_of(rec)
    if cases then
      local c = view.count_cases(cases)
      local time = type(rec.duration) == "number" and rec.duration or c.time
      for _, k in ipairs({ "tests", "failure", "error", "skipped" }) do all[k] = all[k] + c[k] end
      all.time = all.time + time
      local s = { ('  <testsuite name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%s"%s>'):format(
        esc(n), c.tests, c.failure, c.error, c.skipped, num(time),
        rec.started_at and (' timestamp="%s"'):format(esc(tostring(rec.started_at):gsub("Z$", ""))) or "") }
      for _, case in ipairs(cases) do testcase(case, n, s) end
      s[#s + 1] = "  </testsuite>"
      suites[#suites + 1] = table.concat(s, "\n")
    end
  end
  if #suites == 0 then return nil end
  return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="%s" tests="%d" failures="%d" errors="%d" '
    .. 'skipped="%d" time="%s">\n%s\n</testsuites>\n'):format(esc((run.pipeline or "pipeline") .. " " .. (run.id or "")),
    all.tests, all.failure, all.error, all.skipped, num(all.time), table.concat(suites, "\n"))
end

return junit
