-- Read a JUnit XML report (node --test's junit reporter, vitest, jest-junit all write one):
-- every test case with its suite, status and failure message, and the totals.
local fs = require("stagehost.fs")
local xml = require("stagehost.xml")

local junit = {}

local function walk(node, suite, out)
  for _, child in ipairs(node) do
    if child.name == "testsuite" or child.name == "testsuites" then
      walk(child, child.attrs.name or suite, out)
    elseif child.name == "testcase" then
      local case = { name = child.attrs.name, suite = child.attrs.classname or suite,
        time = tonumber(child.attrs.time) or 0, status = "passed" }
      for _, detail in ipairs(child) do
        if detail.name == "failure" or detail.name == "error" then
          case.status = "failed"
          case.message = detail.attrs.message or (detail.text or ""):match("[^\n]+")
        elseif detail.name == "skipped" then
          case.status = "skipped"
        end
      end
      out[#out + 1] = case
    end
  end
end

-- junit.read(path) -> {cases = {{name, suite, time, status, message}}, tests, failed, skipped,
-- passed}, or nil and why (missing or malformed file).
function junit.read(path)
  local text, err = fs.read(path)
  if not text then return nil, err end
  local root, why = xml.decode(text)
  if not root then return nil, ("%s: %s"):format(path, why) end
  local cases = {}
  walk({ root }, nil, cases)
  local r = { cases = cases, tests = #cases, failed = 0, skipped = 0, passed = 0 }
  for _, c in ipairs(cases) do r[c.status] = r[c.status] + 1 end
  return r
end

return junit
