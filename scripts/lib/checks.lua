-- The pre-deployment checks of the app, each a function returning what it found as data:
-- {name, label, status = "passed"|"failed"|"skipped", summary, details = {lines}}. A check that
-- cannot run (a tool missing, the registry out of reach) is "skipped" with the reason; a check
-- is "failed" only for what it found in the code.
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local proc = require("stagehost.proc")
local App = require("lib.app")
local junit = require("lib.junit")

local checks = {}

local MAX_DETAILS = 8

local function result(name, label, status, summary, details)
  return { name = name, label = label, status = status, summary = summary, details = details or {} }
end

local function plural(n, word) return ("%d %s%s"):format(n, word, n == 1 and "" or "s") end

-- ESLint with its JSON formatter; PLANT_LINT_ERROR (--var plant_lint_error=1) lints the file with
-- the planted mistake too.
function checks.lint(a, vars)
  local report = a.dir .. "/reports/eslint.json"
  fs.mkdir(a.dir .. "/reports")
  local r = App.npx(a, { "eslint", ".", "--format", "json", "--output-file", report }, { name = "eslint",
    env = { PLANT_LINT_ERROR = vars.plant_lint_error and "1" or false } })
  local files = json.decode(fs.read(report) or "")
  if type(files) ~= "table" then
    return result("lint", "ESLint", "failed", ("eslint did not run (exit %s)"):format(r.code),
      { (r.stderr or ""):match("[^\n]+") })
  end
  local errors_, warnings, details = 0, 0, {}
  for _, f in ipairs(files) do
    errors_, warnings = errors_ + (f.errorCount or 0), warnings + (f.warningCount or 0)
    for _, m in ipairs(f.messages or {}) do
      if #details < MAX_DETAILS and m.severity == 2 then
        details[#details + 1] = ("%s:%s:%s %s (%s)"):format(f.filePath:sub(#a.dir + 2), m.line or "?", m.column or "?",
          m.message, m.ruleId or "parse")
      end
    end
  end
  return result("lint", "ESLint", errors_ == 0 and "passed" or "failed",
    ("%s, %s in %s"):format(plural(errors_, "error"), plural(warnings, "warning"), plural(#files, "file")), details)
end

-- tsc --noEmit; its diagnostics are "file(line,col): error TSnnnn: message".
function checks.typecheck(a)
  local r = App.npx(a, { "tsc", "--noEmit", "--pretty", "false" }, { name = "tsc" })
  local details, n = {}, 0
  for line in (r.stdout .. "\n" .. r.stderr):gmatch("[^\n]+") do
    local file, l, code, msg = line:match("^(.-)%((%d+),%d+%): error (TS%d+): (.*)$")
    if file then
      n = n + 1
      if #details < MAX_DETAILS then details[#details + 1] = ("%s:%s %s %s"):format(file, l, code, msg) end
    end
  end
  if r.ok then return result("typecheck", "TypeScript", "passed", "no type errors") end
  return result("typecheck", "TypeScript", "failed", n > 0 and plural(n, "type error") or ("tsc exited %s"):format(r.code), details)
end

-- The unit tests (npm test), read from their JUnit report.
function checks.unit_tests(a)
  local path = a.dir .. "/reports/unit.xml"
  fs.remove(path)
  local r = proc.run{ "npm", "test", "--silent", cwd = a.dir, name = "unit tests", timeout = 900 }
  local report, why = junit.read(path)
  if not report then
    return result("unit-tests", "Unit tests", "failed", ("no test report (npm test exited %s)"):format(r.code), { why })
  end
  local details = {}
  for _, c in ipairs(report.cases) do
    if c.status == "failed" and #details < MAX_DETAILS then
      details[#details + 1] = ("%s › %s: %s"):format(c.suite or "?", c.name, c.message or "failed")
    end
  end
  local ok = r.ok and report.failed == 0 and report.tests > 0
  return result("unit-tests", "Unit tests", ok and "passed" or "failed",
    ("%d of %d passed%s"):format(report.passed, report.tests, report.skipped > 0 and (", " .. report.skipped .. " skipped") or ""),
    details)
end

-- An npm error that says the registry could not be reached (no network, a proxy, DNS).
local OFFLINE = { "ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "ECONNRESET", "network" }

local function offline(text)
  for _, code in ipairs(OFFLINE) do if text:find(code, 1, true) then return code end end
  return nil
end

-- Security: secrets in the sources (secretlint) and known vulnerabilities of the dependencies
-- (npm audit); the audit is skipped, saying why, when the registry cannot be reached.
function checks.security(a)
  local details, failed = {}, false
  local scan = App.npx(a, { "secretlint", "--format", "json", "**/*" }, { name = "secretlint" })
  local found = json.decode(scan.stdout ~= "" and scan.stdout or "[]")
  local secrets = 0
  if type(found) == "table" then
    for _, f in ipairs(found) do
      for _, m in ipairs(f.messages or {}) do
        secrets = secrets + 1
        if #details < MAX_DETAILS then
          details[#details + 1] = ("%s:%s %s"):format((f.filePath or "?"):sub(#a.dir + 2), m.loc and m.loc.start and m.loc.start.line or "?", m.message)
        end
      end
    end
  elseif not scan.ok then
    secrets = 1
    details[#details + 1] = "secretlint failed: " .. ((scan.stderr or ""):match("[^\n]+") or ("exit " .. scan.code))
  end
  failed = secrets > 0
  local audit = proc.run{ "npm", "audit", "--json", "--omit", "dev", cwd = a.dir, name = "npm audit", timeout = 120, quiet = true }
  local data = json.decode(audit.stdout ~= "" and audit.stdout or "null")
  local audit_text
  local unreachable = offline(audit.stdout .. audit.stderr)
  if type(data) == "table" and data.metadata and data.metadata.vulnerabilities then
    local v = data.metadata.vulnerabilities
    local serious = (v.high or 0) + (v.critical or 0)
    audit_text = ("npm audit: %d critical, %d high, %d moderate"):format(v.critical or 0, v.high or 0, v.moderate or 0)
    if serious > 0 then failed = true end
  elseif unreachable then
    audit_text = ("npm audit skipped: the registry cannot be reached (%s)"):format(unreachable)
  else
    audit_text = ("npm audit skipped: %s"):format(((data and data.error and data.error.summary) or audit.stderr or "no answer"):match("[^\n]*"))
  end
  return result("security", "Security scan", failed and "failed" or "passed",
    ("%s; %s"):format(secrets == 0 and "no secrets in the sources" or plural(secrets, "secret") .. " found", audit_text), details)
end

checks.BY_NAME = { lint = checks.lint, typecheck = checks.typecheck, ["unit-tests"] = checks.unit_tests,
  security = checks.security }

local ICON = { passed = "✅", failed = "❌", skipped = "⏭️" }

-- The checklist the approver sees: Markdown and the same as data.
function checks.checklist(ctx, results, a)
  local passed = 0
  for _, r in ipairs(results) do if r.status == "passed" then passed = passed + 1 end end
  local lines = {
    ("## Deployment checklist: %s to %s"):format(ctx.run.tag or ("run " .. ctx.run.id), a.env), "",
    ("%d of %d checks passed · commit %s · requested by %s"):format(passed, #results,
      ctx.run.commit and ctx.run.commit:sub(1, 12) or "(no git)", ctx.run.actor or "?"), "",
  }
  for _, r in ipairs(results) do
    lines[#lines + 1] = ("- [%s] %s **%s**: %s"):format(r.status == "passed" and "x" or " ", ICON[r.status] or "",
      r.label, r.summary)
    for _, d in ipairs(r.details) do lines[#lines + 1] = "  - `" .. d:gsub("`", "'") .. "`" end
  end
  local data = { target = a.env, tag = ctx.run.tag, commit = ctx.run.commit, passed = passed, total = #results,
    checks = results }
  return table.concat(lines, "\n") .. "\n", data, passed
end

return checks
